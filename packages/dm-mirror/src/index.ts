/**
 * dm-mirror on the kernel's dirty log format: the log codecs and stores, the
 * region hash, the mirror set, resync and leg comparison.
 *
 * @module @dmtool/dm-mirror
 */
export { Bitmap } from './bitmap';
export { MIRROR_ERROR_KINDS, MirrorError, MirrorErrorReason } from './errors';
export {
  LOG_MAGIC,
  LOG_VERSION,
  LOG_BITMAP_BYTE,
  LOG_HEADER_BYTES,
  DiskLogImage,
  HeaderFields,
  DecodeOptions,
  decodeDiskLog,
  encodeDiskLog,
  logBufferBytes,
  readHeader,
} from './log-format';
export { DirtyLog, MemoryLog, CoreLog, SyncMode, LogHealth, FlushCallback, checkRegionGeometry } from './dirty-log';
export { DiskLog, DiskLogOptions } from './disk-log';
export { RegionHash, RegionState } from './region-hash';
export { MirrorSet, MirrorSetOptions, MirrorStatus, Leg, LegSpec, LegStatus, LegHealth, LegErrorKind, MAX_LEGS } from './mirror-set';
export { planResync, resync, resyncClient, ResyncOptions, ResyncPlan, ResyncProgress, ResyncResult } from './resync';
export { parseMirrorTable, formatMirrorTable, MirrorTable } from './table';
export { checkRegionSize, isValidRegionSize, MAX_REGION_SIZE } from './region-size';
export { checkLegs, CheckOptions, CheckResult } from './check';
export {
  openMirror,
  MirrorConfig,
  OpenMirrorOptions,
  configFromTable,
  checkDistinct,
  deriveRegionSize,
  readLogRegionCount,
  DEFAULT_REGION_SIZE,
} from './open';
export { checkLogImage, readLogBytes, LOG_PROBLEM_KINDS } from './log-check';
export type { LogCheckResult, LogProblem, LogProblemKind } from './log-check';
export {
  dirtyRanges,
  encodeLogDump,
  logDumpJson,
  logDumpText,
  parseLogDumpJson,
  parseLogDumpText,
  LOG_DUMP_FORMAT,
  LOG_DUMP_FORMAT_VERSION,
} from './log-dump';
export type { LogDump, RegionRange } from './log-dump';
