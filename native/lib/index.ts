export { Device, LockMode, OpenOptions, SECTOR_BYTES, allocBuffer } from './device';
export { DeviceError, DeviceOp, errnoName } from './errors';
export { copyOut, CopyOutResult, CopyOutTarget } from './copy-out';
export { FaultOp, FaultPlan, FaultRule, crashPoint, setFaultPlan } from './faults';
export { scatterCopy, ScatterPiece, ScatterResult } from './scatter';
