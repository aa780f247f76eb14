export { KcopydClient, ClientOptions, CopyOptions, NotifyFn } from './client';
export { CopyProgress, CopyResult } from './job';
export { Extent } from './extents';
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
  scatterCopy,
  crashPoint,
  setFaultPlan,
  FaultPlan,
  FaultRule,
} from '@dmtool/native';
