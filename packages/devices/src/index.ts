export { BlockDevice, checkIo, checkRange, DeviceResolver, NativeEndpoint, NativeIoFailure, NativeIoHook, SECTOR_BYTES } from './block-device';
export { DmtoolError, ErrorKind, ErrorPlace } from './dmtool-error';
export { DeviceError, DeviceErrorReason, DeviceOp, deviceErrorKind, errnoHint, errnoName, errnoOf } from './errors';
export { MemoryDevice, MemoryDeviceOptions } from './memory-device';
export { crashPoint, CrashPointHandler, onCrashPoint } from './crash-points';
export { FaultInjector, FaultOp, FaultPlan, faultPlanSchema, FaultRule, InjectedFault } from './fault-plan';
export { FaultyDevice } from './faulty-device';
export { CacheFlushOrder, VolatileCacheDevice, VolatileCacheOptions } from './volatile-cache-device';
export { withFaults } from './with-faults';
