/**
 * The block-device seam: the `BlockDevice` interface every layer above
 * holds, an in-memory device, and decorators that inject faults or model a
 * volatile write cache.
 *
 * @module @dmtool/devices
 */
export {
  BlockDevice,
  ByteExtent,
  checkIo,
  checkRange,
  DataMap,
  dataMapOf,
  DeviceResolver,
  NativeEndpoint,
  NativeIoFailure,
  NativeIoHook,
  SECTOR_BYTES,
  SparseFile,
  WriteOptions,
} from './block-device';
export { DmtoolError, ErrorKind, ErrorPlace } from './dmtool-error';
export { DeviceError, DeviceErrorReason, DeviceOp, deviceErrorKind, errnoHint, errnoName, errnoOf, UnflushedWritesLost } from './errors';
export { DeviceDecorator } from './device-decorator';
export { MemoryDevice, MemoryDeviceOptions } from './memory-device';
export { crashPoint, CrashPointHandler, onCrashPoint } from './crash-points';
export { FaultInjector, FaultOp, FaultPlan, faultPlanSchema, FaultRule, faultRuleSchema, InjectedFault } from './fault-plan';
export { FaultyDevice } from './faulty-device';
export { CacheFlushOrder, VolatileCacheDevice, VolatileCacheOptions } from './volatile-cache-device';
export { withFaults } from './with-faults';
