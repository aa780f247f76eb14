export { KcopydClient, ClientOptions, CopyOptions, NotifyFn } from './client';
export { CopyProgress, CopyResult } from './job';
export { KcopydFlags, MAX_DESTINATIONS } from './flags';
export { Region, DestinationRegion } from './region';
export { Throttle, RateLimiter } from './throttle';
export { BufferPool } from './buffer-pool';
export { KcopydError, AbortError } from './errors';
export {
  Device,
  DeviceError,
  OpenOptions,
  SECTOR_BYTES,
  allocBuffer,
  copyOut,
  crashPoint,
  setFaultPlan,
  FaultPlan,
  FaultRule,
} from '@dmtool/native';
