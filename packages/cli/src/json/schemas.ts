import { z } from 'zod';
import { errorJsonSchema } from './error-json';

/**
 * The --json document of every command, one zod schema each, documented in
 * docs/json.md. Every document starts with `command`, `ok` and `dryRun`;
 * timing is `seconds`, an interruption `interrupted`, errors objects.
 * Fields marked optional are absent on dry runs (or, for snapshot-write,
 * present only on the run they describe).
 */
const count = z.number().int().nonnegative();
const percent = z.number().min(0).max(100);
const seconds = z.number().nonnegative();

function doc<C extends string, S extends z.ZodRawShape>(command: C, shape: S) {
  return z.object({ command: z.literal(command), ok: z.boolean(), dryRun: z.boolean(), ...shape }).strict();
}

/** The document of a command that failed (any command, with --json). */
export const failureSchema = z
  .object({ command: z.string().nullable(), ok: z.literal(false), dryRun: z.boolean(), error: errorJsonSchema })
  .strict();

const jobOutcome = {
  sectorsDone: count.optional(),
  bytesDone: count.optional(),
  /** sectorsDone of sectors, in percent. */
  percent: percent.optional(),
  seconds: seconds.optional(),
  bytesPerSecond: count.optional(),
  writeErr: count.optional(),
  interrupted: z.boolean().optional(),
  errors: z.array(errorJsonSchema).optional(),
};

const snapshotStatus = {
  /** The kernel's status: `<allocated>/<total> <metadata>`, or `Invalid`. */
  status: z.string(),
  valid: z.boolean(),
  chunkSectors: count,
  exceptions: count,
  allocatedSectors: count,
  totalSectors: count,
  metadataSectors: count,
  /** allocatedSectors of totalSectors, as lvs shows Data% for a snapshot. */
  dataPercent: percent,
  currentArea: count,
  exceptionsPerArea: count,
};

/** What a snapshot-export stream holds (docs/snapshot-export.md). */
const exportStream = {
  data: z.enum(['origin', 'snapshot']),
  chunkSectors: count,
  originSectors: count,
  /** Coalesced ranges of changed chunks. */
  ranges: count,
  chunks: count,
  records: count,
  /** Data bytes the records carry. */
  bytes: count,
  /** The whole stream, header and trailer included. */
  streamBytes: count,
  /** sha256 of the header and the record digests, as the trailer holds it (hex). */
  digest: z.string().regex(/^[0-9a-f]{64}$/),
};

const regionRanges = z.array(z.tuple([count, count]));

const mirrorStatus = z
  .object({
    lengthSectors: count,
    regionSize: count,
    regions: count,
    inSyncRegions: count,
    outOfSyncRegions: count,
    /** inSyncRegions of regions, as lvs shows Cpy%Sync. */
    syncPercent: percent,
    /** The out-of-sync regions as [first, last] runs. */
    outOfSyncRanges: regionRanges,
    inSync: z.boolean(),
    defaultLeg: count,
    legs: z.array(
      z.object({ index: count, path: z.string(), offsetSectors: count, health: z.string(), errors: z.array(z.string()) }).strict(),
    ),
    log: z.object({ type: z.enum(['core', 'disk']), path: z.string().nullable(), health: z.string(), syncMode: z.string() }).strict(),
    handleErrors: z.boolean(),
    keepLog: z.boolean(),
    info: z.string(),
    table: z.string(),
  })
  .strict();

export const JSON_SCHEMAS = {
  demo: doc('demo', {
    dir: z.string(),
    kept: z.boolean(),
    steps: z.array(
      z.object({ step: z.string(), detail: z.string(), bytes: count.optional(), seconds: seconds.optional(), ok: z.boolean() }).strict(),
    ),
  }),
  copy: doc('copy', {
    source: z.string(),
    destinations: z.array(z.string()),
    offset: count,
    destOffset: count,
    sectors: count,
    bytes: count,
    readErr: z.boolean().optional(),
    ...jobOutcome,
  }),
  zero: doc('zero', { devices: z.array(z.string()), offset: count, sectors: count, bytes: count, ...jobOutcome }),
  'snapshot-create': doc('snapshot-create', {
    origin: z.string(),
    cow: z.string(),
    chunkSectors: count,
    status: z.string(),
    /** The table line; null on a dry run. */
    table: z.string().nullable(),
  }),
  'snapshot-status': doc('snapshot-status', { cow: z.string(), ...snapshotStatus }),
  'snapshot-list': doc('snapshot-list', {
    cow: z.string(),
    ...snapshotStatus,
    /** The exception table in table order: the columns of the text output. */
    table: z.array(z.object({ index: count, oldChunk: count, newChunk: count, originSector: count, cowSector: count }).strict()),
  }),
  'snapshot-read': doc('snapshot-read', {
    origin: z.string(),
    cow: z.string(),
    offset: count,
    sectors: count,
    bytes: count,
    output: z.string(),
    seconds,
    bytesPerSecond: count,
  }),
  'snapshot-write': doc('snapshot-write', {
    target: z.enum(['origin', 'snapshot']),
    offset: count,
    sectors: count,
    /** The status after the write (before it, on a dry run). */
    status: z.string(),
    exceptions: count,
    newExceptions: count.optional(),
    fits: z.boolean().optional(),
    statusAfter: z.string().optional(),
    invalidated: z.boolean().optional(),
    seconds: seconds.optional(),
  }),
  'snapshot-merge': doc('snapshot-merge', {
    origin: z.string(),
    cow: z.string(),
    chunkSectors: count,
    exceptions: count,
    mergedChunks: count,
    mergedBytes: count,
    /** mergedChunks of exceptions. */
    percent,
    batches: count,
    runs: count,
    seconds,
    bytesPerSecond: count,
    status: z.string(),
  }),
  'snapshot-export': doc('snapshot-export', {
    origin: z.string(),
    cow: z.string(),
    output: z.string(),
    ...exportStream,
    seconds,
    bytesPerSecond: count,
  }),
  'snapshot-apply': doc('snapshot-apply', {
    input: z.string(),
    target: z.string(),
    ...exportStream,
    /** The whole stream was checked before the first write. */
    verifiedFirst: z.boolean(),
    /** A piped stream was spooled to a file to be checked first. */
    spooled: z.boolean(),
    seconds: seconds.optional(),
    bytesPerSecond: count.optional(),
  }),
  'mirror-create': doc('mirror-create', {
    logBytes: count,
    /** The dm-mirror log written over (with --force), or null. */
    replaces: z.object({ regions: count }).strict().nullable(),
    mirror: mirrorStatus,
  }),
  'mirror-status': doc('mirror-status', { mirror: mirrorStatus }),
  'mirror-resync': doc('mirror-resync', {
    /** Regions out of sync at the start. */
    regionsToSync: count,
    regionsSynced: count.optional(),
    regionsFailed: count.optional(),
    /** The regions whose copy failed, as [first, last] runs. */
    failedRanges: regionRanges.optional(),
    /** regionsSynced of regionsToSync. */
    percent: percent.optional(),
    bytesToCopy: count,
    bytesCopied: count.optional(),
    seconds: seconds.optional(),
    bytesPerSecond: count.optional(),
    failedLegs: z
      .array(z.object({ index: count, path: z.string(), health: z.string(), message: z.string().nullable() }).strict())
      .optional(),
    interrupted: z.boolean().optional(),
    mirror: mirrorStatus,
  }),
  'mirror-check': doc('mirror-check', {
    legs: z.array(z.string()),
    regionSize: count,
    regions: count,
    lengthSectors: count,
    identical: z.boolean(),
    differingRegions: z.array(count),
    /** For each differing region (the key), the legs that differ from leg 0. */
    differingLegs: z.record(z.string().regex(/^\d+$/), z.array(count)),
    seconds,
    bytesPerSecond: count,
  }),
} as const;

export type JsonCommand = keyof typeof JSON_SCHEMAS;
export type JsonDoc<C extends JsonCommand> = Omit<z.input<(typeof JSON_SCHEMAS)[C]>, 'command' | 'ok'>;

/** A percent with two decimals, as lvs prints it. */
export function percentOf(part: number, whole: number): number {
  return whole > 0 ? Math.floor((10000 * part) / whole) / 100 : 100;
}

export function bytesPerSecond(bytes: number, secs: number): number {
  return secs > 0 ? Math.round(bytes / secs) : 0;
}
