/**
 * Linux dm-kcopyd's copy engine: clients with a buffer pool, copy and zero
 * jobs split into sub-jobs, per-destination error masks, throttling. Also
 * re-exports the device types, so most users import only this package.
 *
 * @module @dmtool/kcopyd
 */
export { KcopydClient, ClientOptions, CopyOptions, NotifyFn, RangeCopyOptions } from './client';
export {
  HoleAction,
  normalize as normalizeRanges,
  planPieces,
  PlannedPiece,
  SectorRange,
  sourceDataRuns,
  SparseCopy,
  ZERO_BLOCK_SECTORS,
  zeroBlockRuns,
} from './sparse';
export { CopyProgress, CopyResult } from './job';
export { Extent } from './extents';
export { KcopydFlags, MAX_DESTINATIONS } from './flags';
export { Region, DestinationRegion } from './region';
export { Throttle, RateLimiter } from './throttle';
export { BufferPool } from './buffer-pool';
export { KcopydError, KcopydErrorReason, KcopydIoError, FailedRange, AbortError } from './errors';
export { copyOut, CopyOutResult, CopyOutTarget, copyPathCounters } from './copy-out';
export { scatterCopy, ScatterPiece, ScatterResult } from './scatter';
export { BlockDevice, DeviceError, MemoryDevice, SECTOR_BYTES, UnflushedWritesLost, crashPoint } from '@dmtool/devices';
export { allocBuffer, FileDevice, OpenOptions } from '@dmtool/native';
