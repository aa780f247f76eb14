/**
 * dm-snapshot on the kernel's persistent COW format: the codecs, the
 * exception stores, the origin and snapshot targets, and the crash-safe
 * offline merge.
 *
 * @module @dmtool/dm-snapshot
 */
export { SNAPSHOT_ERROR_KINDS, SnapshotError } from './errors';
export type { SnapshotErrorReason, SnapshotErrorDetail } from './errors';
export { CowGeometry, checkChunkSectors, cowSectorsForOrigin, ENTRY_BYTES, MAX_CHUNK_SECTORS } from './geometry';
export { decodeHeader, encodeHeader, SNAP_MAGIC, DISK_VERSION } from './header';
export type { CowHeader, HeaderState } from './header';
export { decodeArea, encodeEntry, clearEntry } from './area';
export type { AreaEntries, DecodedArea } from './area';
export { ExceptionTable } from './table';
export type { ExceptionPlan, ExceptionStore, StoreUsage } from './store';
export { PersistentStore, probeHeader, readCowHeader } from './persistent-store';
export { readCowSummary } from './cow-summary';
export type { CowSummary } from './cow-summary';
export { forEachArea, scanTable } from './table-scan';
export type { ScanOptions, TableShape } from './table-scan';
export type { OpenStoreOptions, FormatOptions } from './persistent-store';
export { TransientStore } from './transient-store';
export { Origin, Snapshot, snapshotBuffer } from './snapshot';
export { ChunkTracker } from './chunk-tracker';
export { formatUsage, persistentUsage, storeStatus } from './status';
export type { OriginOptions, CreateSnapshotOptions, OpenSnapshotOptions, WritePlan } from './snapshot';
export { mergeClient, mergeSnapshot, planMerge } from './merge';
export type { MergeBatchHooks, MergeOptions, MergeProgress, MergeResult } from './merge';
export { checkCow, COW_PROBLEM_KINDS } from './check';
export type { CowCheckOptions, CowCheckSummary, CowProblem, CowProblemKind } from './check';
export { DUMP_FORMAT, DUMP_FORMAT_VERSION, dumpEntry, dumpEpilogue, dumpPrologue, validateDumpHeader } from './dump-format';
export type { DumpHeader, DumpSyntax } from './dump-format';
export { readDump } from './dump-parse';
export type { ByteSource, DumpEvent } from './dump-parse';
export { dumpCow } from './dump';
export type { DumpSink } from './dump';
export { planRestore, restoreCow } from './restore';
export type { RestorePlan } from './restore';
export { coalesceChunks, deltaRanges } from './delta';
export type { ChunkRange } from './delta';
export { planRepair } from './repair';
export type { DropReason, DroppedEntry, RepairOptions, RepairPlan } from './repair';
export { revalidateCow } from './revalidate';
export type { RevalidateResult } from './revalidate';
export { readChangedChunks, changedRanges } from './changed-chunks';
export type { ChangedChunks } from './changed-chunks';
export {
  EXPORT_MAGIC,
  EXPORT_TRAILER_MAGIC,
  EXPORT_VERSION,
  EXPORT_HEADER_BYTES,
  EXPORT_TRAILER_BYTES,
  RECORD_HEAD_BYTES,
  RECORD_DIGEST_BYTES,
  RECORD_DATA_LIMIT_BYTES,
  decodeExportHeader,
  encodeExportHeader,
  decodeRecordHead,
  encodeRecordHead,
  decodeTrailer,
  encodeTrailer,
  recordChunksFor,
  streamBytesFor,
  chunkDataBytes,
} from './export-format';
export type { ExportData, ExportHeader, ExportTrailer, RecordHead } from './export-format';
export { planExport, writeExport } from './export';
export type { ExportOptions, ExportPlan, ExportResult } from './export';
export { AppliedChunks, applyStream, checkTargetSize, ExportStreamReader, verifyStream } from './apply';
export type { ApplyOptions, ByteReader, StreamRecord, StreamSummary } from './apply';
