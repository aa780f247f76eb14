import { LOG_DUMP_FORMAT, LOG_DUMP_FORMAT_VERSION, LOG_PROBLEM_KINDS } from '@dmtool/dm-mirror';
import { COW_PROBLEM_KINDS } from '@dmtool/dm-snapshot';
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
    /** Destinations that did not exist, were created and are still there (a failed copy without --map removes them); on a dry run, those that would be. */
    created: z.array(z.string()),
    sparse: z.enum(['auto', 'always', 'never']),
    /** The --map file, or null. */
    map: z.string().nullable(),
    /** Sectors a resumed copy found done in its map (0 otherwise); percent counts them. */
    resumedSectors: count,
    offset: count,
    destOffset: count,
    sectors: count,
    bytes: count,
    readErr: z.boolean().optional(),
    ...jobOutcome,
  }),
  /** The words after SOCKET, and the lines the server answered (status, table, or what was done). */
  ctl: doc('ctl', { request: z.array(z.string()), lines: z.array(z.string()) }),
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
    /** For an LVM snapshot (PV...:VG/SNAP): the VG metadata after the merge. */
    lvm: z
      .object({
        vg: z.string(),
        snapshot: z.string(),
        origin: z.string(),
        /** The seqno of the metadata after the merge. */
        seqno: count,
        /** The metadata areas written with --update-metadata (that would be, on a dry run), else 0. */
        metadataAreas: count,
        /** The metadata was written to the PVs (--update-metadata, not a dry run). */
        updated: z.boolean(),
        /** The file the metadata text was written to (-o), or null. */
        output: z.string().nullable(),
        /** The metadata text, when neither written to the PVs nor to a file. */
        metadata: z.string().nullable(),
      })
      .strict()
      .optional(),
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
  'snapshot-dump': doc('snapshot-dump', {
    cow: z.string(),
    output: z.string(),
    format: z.enum(['json', 'xml']),
    chunkSectors: count,
    exceptions: count,
  }),
  'snapshot-restore': doc('snapshot-restore', {
    cow: z.string(),
    exceptions: count,
    areas: count,
    chunkSectors: count,
    valid: z.boolean(),
    /** The kernel's status line after the restore (absent on a dry run). */
    status: z.string().optional(),
  }),
  'snapshot-repair': doc('snapshot-repair', {
    cow: z.string(),
    /** The -o file, absent without it. */
    output: z.string().optional(),
    inPlace: z.boolean(),
    written: z.boolean(),
    found: count,
    kept: count,
    recovered: count,
    dropped: count,
    /** The first dropped entries (at most 1000), with why. */
    droppedEntries: z.array(z.object({ area: count, entry: count, oldChunk: count, newChunk: count, reason: z.string() }).strict()),
  }),
  'snapshot-revalidate': doc('snapshot-revalidate', {
    cow: z.string(),
    wasValid: z.boolean(),
    written: z.boolean(),
    exceptions: count,
    chunkSectors: count.optional(),
  }),
  'mirror-log-check': doc('mirror-log-check', {
    log: z.string(),
    problems: z.array(z.object({ kind: z.enum(LOG_PROBLEM_KINDS), byteOffset: count, message: z.string() }).strict()),
    summary: z.object({ version: count.optional(), regions: count.optional(), inSync: count.optional(), clean: z.boolean() }).strict(),
  }),
  'mirror-log-restore': doc('mirror-log-restore', { log: z.string(), regions: count, inSync: count, bytes: count }),
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

const startCount = z.object({ start: count, count }).strict();

/**
 * Commands whose --json document is a report with its own layout, without
 * the common fields: a check's problems as it streams them, a delta or a
 * log dump that the matching restore reads back, and lvm-ls, which prints
 * `lvs -a --reportformat json`'s document so tools that read lvm2 read it.
 */
export const REPORT_SCHEMAS = {
  'snapshot-check': z
    .object({
      cow: z.string(),
      problems: z.array(
        z
          .object({
            kind: z.enum(COW_PROBLEM_KINDS),
            area: count.optional(),
            entry: count.optional(),
            byteOffset: count,
            message: z.string(),
          })
          .strict(),
      ),
      summary: z
        .object({
          chunkSectors: count.optional(),
          valid: z.boolean().optional(),
          exceptions: count,
          areas: count,
          problems: count,
          clean: z.boolean(),
        })
        .strict(),
    })
    .strict(),
  'snapshot-delta': z.object({ chunkSectors: count, ranges: z.array(startCount) }).strict(),
  'mirror-log-dump': z
    .object({
      format: z.literal(LOG_DUMP_FORMAT),
      formatVersion: z.literal(LOG_DUMP_FORMAT_VERSION),
      version: count,
      regions: count,
      inSync: count,
      /** The header's unused bytes, in hex, only when they are not all zero. */
      unused: z
        .string()
        .regex(/^([0-9a-f]{2})+$/)
        .optional(),
      /** Out-of-sync regions as runs. */
      dirty: z.array(startCount),
    })
    .strict(),
  'lvm-ls': z
    .object({
      report: z.array(
        z
          .object({
            lv: z.array(
              z
                .object({
                  lv_name: z.string(),
                  vg_name: z.string(),
                  lv_attr: z.string(),
                  lv_size: z.string(),
                  pool_lv: z.string(),
                  origin: z.string(),
                  data_percent: z.string(),
                  metadata_percent: z.string(),
                  move_pv: z.string(),
                  mirror_log: z.string(),
                  copy_percent: z.string(),
                  convert_lv: z.string(),
                })
                .strict(),
            ),
          })
          .strict(),
      ),
    })
    .strict(),
} as const;

export type JsonCommand = keyof typeof JSON_SCHEMAS;
export type JsonDoc<C extends JsonCommand> = Omit<z.input<(typeof JSON_SCHEMAS)[C]>, 'command' | 'ok'>;

export { bytesPerSecond, percentOf } from './numbers';
