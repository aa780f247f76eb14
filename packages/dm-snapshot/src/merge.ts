import { AbortError, KcopydClient } from '@dmtool/kcopyd';
import { BlockDevice, crashPoint, DeviceError, SECTOR_BYTES } from '@dmtool/devices';
import { SnapshotError } from './errors';
import { PersistentStore, readCowHeader } from './persistent-store';
import { MergeTail } from './merge-tail';
import { formatUsage, persistentUsage } from './status';
import { FIRST_FREE_CHUNK, scanTable } from './table-scan';

export interface MergeOptions {
  /** kcopyd client for the copies (default: one made for this merge, with `rateBytesPerSecond`). */
  kcopyd?: KcopydClient;
  /** Upper bound on the data copied per batch before one origin flush and one table update (default 64 MiB). */
  batchBytes?: number;
  /** Do exactly what the kernel does: one run of consecutive chunks per batch. */
  kernelBatches?: boolean;
  /** Average copy rate cap, bytes per second (for the client made here; ignored with `kcopyd`). */
  rateBytesPerSecond?: number;
  onProgress?: (p: MergeProgress) => void;
  signal?: AbortSignal;
  /** Validate and plan only; nothing is written. */
  dryRun?: boolean;
  /**
   * The COW's store, opened by a device serving the merge: each retired
   * batch is forgotten from its table in memory too, so its reads and
   * writes go to the origin from then on.
   */
  store?: PersistentStore;
  /**
   * Called with each batch's origin chunks before they are copied (a device
   * serving the merge holds writes to them and waits for those in flight),
   * and again once they are retired or the batch failed (it lets them go).
   */
  batchHooks?: MergeBatchHooks;
}

/** The origin chunks of one batch: `chunks` chunks from `oldChunk` on, for each run. */
export interface MergeBatchHooks {
  beforeCopy(runs: readonly { oldChunk: number; chunks: number }[]): Promise<void>;
  afterBatch(runs: readonly { oldChunk: number; chunks: number }[]): void;
}

/**
 * Reported once before the first batch (nothing merged yet), as copies
 * complete, and after each batch is retired.
 */
export interface MergeProgress {
  mergedChunks: number;
  totalChunks: number;
  /** Bytes whose exceptions are retired (durable in the origin, cleared from the table). */
  mergedBytes: number;
  /** Bytes written to the origin so far, retired or not: runs ahead of mergedBytes within a batch. */
  copiedBytes: number;
  totalBytes: number;
  batches: number;
}

export interface MergeResult {
  chunkSectors: number;
  /** Exceptions found in the table when the merge started. */
  exceptions: number;
  mergedChunks: number;
  /** Bytes copied into the origin. */
  mergedBytes: number;
  /** Batches (origin flush + table update each). */
  batches: number;
  /** Copy jobs (runs of consecutive chunks). */
  runs: number;
  seconds: number;
  dryRun: boolean;
  /** Status after the merge, in the kernel's snapshot-merge form (e.g. `16/32768 16`). */
  status: string;
}

/** Data copied per origin flush and table update unless the caller says otherwise. */
const DEFAULT_BATCH_BYTES = 64 << 20;
/** Runs per kcopyd job within a batch: bounds the live bookkeeping (a few hundred bytes per run), and with it the heap V8 grows. */
const RUNS_PER_COPY_JOB = 1024;

interface Run {
  oldChunk: number;
  newChunk: number;
  chunks: number;
}

/** A batch as table positions only (no object per run): run i is entries [starts[i], starts[i] + lengths[i]). */
interface Batch {
  starts: number[];
  lengths: number[];
  chunks: number;
}

/** Runs first..first+count of a batch, as objects (a slice at a time). */
function runsOf(t: MergeTail, b: Batch, first: number, count: number): Run[] {
  const runs: Run[] = [];
  for (let i = first; i < Math.min(b.starts.length, first + count); i++) {
    runs.push({ oldChunk: t.oldAt(b.starts[i]), newChunk: t.newAt(b.starts[i]), chunks: b.lengths[i] });
  }
  return runs;
}

/**
 * Pick the next batch from the tail of the table. Runs are maximal stretches
 * where both old_chunk and new_chunk step by one (the kernel's rule), never
 * across a metadata area. Kernel mode: one run. Otherwise runs are taken
 * until `maxChunks`, so one origin flush and one table write cover many.
 */
function nextBatch(t: MergeTail, kernelBatches: boolean, maxChunks: number): Batch {
  const E = t.geometry.exceptionsPerArea;
  const starts: number[] = [];
  const lengths: number[] = [];
  let j = t.size - 1;
  let taken = 0;
  while (j >= 0 && taken < maxChunks) {
    const areaStart = Math.floor(j / E) * E;
    let lo = j;
    while (
      lo > areaStart &&
      taken + (j - lo + 1) < maxChunks &&
      t.oldAt(lo - 1) === t.oldAt(lo) - 1 &&
      t.newAt(lo - 1) === t.newAt(lo) - 1
    ) {
      lo--;
    }
    const chunks = j - lo + 1;
    starts.push(lo);
    lengths.push(chunks);
    taken += chunks;
    j = lo - 1;
    if (kernelBatches) break;
  }
  return { starts, lengths, chunks: taken };
}

/**
 * The kcopyd client a merge makes when given none; made by a caller that
 * changes the rate while the merge runs (KcopydClient.setRate) and destroys it.
 */
export function mergeClient(rateBytesPerSecond?: number): KcopydClient {
  return new KcopydClient({ rateBytesPerSecond, subJobsPerJob: 16 });
}

/**
 * Merge a persistent COW back into its origin, offline (docs/snapshot-format.md#merge). Tail first, as
 * the kernel: each batch copies its runs COW → origin, flushes the origin,
 * and only then clears those entries from the tail of the on-disk table
 * (area writes + COW flush). An entry is never cleared before its data is
 * durable in the origin, so a crash at any instant leaves a valid table of
 * the entries not yet merged; running the merge again (here or in the
 * kernel) finishes it. At the end the COW holds its header and zeroed
 * areas, byte for byte what the kernel leaves.
 */
export async function mergeSnapshot(origin: BlockDevice, cow: BlockDevice, opts: MergeOptions = {}): Promise<MergeResult> {
  const started = Date.now();
  if (origin.identity === cow.identity) {
    throw new SnapshotError('EINVAL', 'same-device', 'the COW device and the origin are the same device', { path: cow.path });
  }
  const { valid, geometry } = await readCowHeader(cow, { originSectors: origin.sizeSectors, origin });
  if (!valid) {
    throw new SnapshotError('EINVAL', 'merge-invalid', "snapshot is invalid: can't merge", { path: cow.path, sector: 0, sectors: 1 });
  }
  const cs = geometry.chunkSectors;
  const chunkBytes = cs * SECTOR_BYTES;
  const originSectors = origin.sizeSectors;
  const batchBytes = opts.batchBytes ?? DEFAULT_BATCH_BYTES;
  if (!(batchBytes >= chunkBytes)) {
    throw new SnapshotError('EINVAL', 'out-of-range', `batch size ${batchBytes} bytes is smaller than one chunk (${chunkBytes} bytes)`, {
      path: cow.path,
    });
  }
  // The whole table is validated before anything is written, without holding it (docs/snapshot-format.md#memory).
  let totalBytes = 0;
  const shape = await scanTable(cow, geometry, {
    originSectors,
    onEntry: (_index, oldChunk) => (totalBytes += Math.min(cs, originSectors - oldChunk * cs) * SECTOR_BYTES),
  });
  const total = shape.exceptions;
  const tail = new MergeTail(cow, geometry, total);
  const maxChunks = Math.floor(batchBytes / chunkBytes);
  const kernelBatches = opts.kernelBatches === true;
  const runBytes = (r: Run) => Math.min(r.chunks * cs, originSectors - r.oldChunk * cs) * SECTOR_BYTES;
  const batchBytesOf = (b: Batch) => {
    let bytes = 0;
    for (let i = 0; i < b.starts.length; i++)
      bytes += Math.min(b.lengths[i] * cs, originSectors - tail.oldAt(b.starts[i]) * cs) * SECTOR_BYTES;
    return bytes;
  };

  const progress: MergeProgress = { mergedChunks: 0, totalChunks: total, mergedBytes: 0, copiedBytes: 0, totalBytes, batches: 0 };
  let runCount = 0;

  const result = (dryRun: boolean): MergeResult => {
    return {
      chunkSectors: cs,
      exceptions: total,
      mergedChunks: progress.mergedChunks,
      mergedBytes: progress.mergedBytes,
      batches: progress.batches,
      runs: runCount,
      seconds: (Date.now() - started) / 1000,
      dryRun,
      // An empty table: what a fresh COW shows, and the kernel's persistent_commit_merge leaves after the last batch.
      status: formatUsage(persistentUsage(geometry, cow.sizeSectors, FIRST_FREE_CHUNK, 0)),
    };
  };

  if (opts.dryRun) {
    // Plan only: the same batches, from a tail position that moves in memory.
    while (tail.size > 0) {
      await tail.load(maxChunks);
      const batch = nextBatch(tail, kernelBatches, maxChunks);
      runCount += batch.starts.length;
      progress.mergedBytes += batchBytesOf(batch);
      progress.copiedBytes = progress.mergedBytes;
      progress.batches++;
      progress.mergedChunks += batch.chunks;
      tail.drop(batch.chunks);
    }
    return result(true);
  }

  const copyFailed = (run: Run, e?: Error) =>
    new SnapshotError(
      'EIO',
      'copy-failed',
      `merge copy of origin chunks ${run.oldChunk}..${run.oldChunk + run.chunks - 1} failed (nothing retired): ${e?.message ?? 'copy failed'}`,
      { path: origin.path, sector: run.oldChunk * cs, sectors: runBytes(run) / SECTOR_BYTES },
    );
  const kcopyd = opts.kcopyd ?? mergeClient(opts.rateBytesPerSecond);
  const stopped = () =>
    new SnapshotError('ECANCELED', 'aborted', `merge stopped with ${tail.size} exceptions left; run it again to finish`, {
      path: cow.path,
    });
  opts.onProgress?.({ ...progress });
  try {
    while (tail.size > 0) {
      if (opts.signal?.aborted) throw stopped();
      crashPoint('snapshot-merge:batch-start');
      await tail.load(maxChunks);
      const batch = nextBatch(tail, kernelBatches, maxChunks);
      const thisBatchBytes = batchBytesOf(batch);
      const hooked = opts.batchHooks ? runsOf(tail, batch, 0, batch.starts.length) : [];
      await opts.batchHooks?.beforeCopy(hooked);
      try {
        // One kcopyd job per batch: runs whose COW chunks lie close together
        // are read as one span and scattered to the origin in one native call.
        // Handed to kcopyd a slice at a time, so the job's per-extent
        // bookkeeping stays small however large the batch; the origin flush
        // and the table update still come once, after every slice.
        let copiedSectors = 0;
        for (let first = 0; first < batch.starts.length; first += RUNS_PER_COPY_JOB) {
          const runs = runsOf(tail, batch, first, RUNS_PER_COPY_JOB);
          let r;
          try {
            r = await kcopyd.copyExtents(
              cow,
              origin,
              runs.map((run) => ({ srcSector: run.newChunk * cs, destSector: run.oldChunk * cs, count: runBytes(run) / SECTOR_BYTES })),
              {
                signal: opts.signal,
                onProgress: (p) => {
                  progress.copiedBytes = progress.mergedBytes + (copiedSectors + p.doneSectors) * SECTOR_BYTES;
                  opts.onProgress?.({ ...progress });
                },
              },
            );
          } catch (e) {
            if (!(e instanceof AbortError)) throw e;
            // Part of the batch reached the origin; nothing was retired, so a rerun copies it again.
            await origin.flush();
            throw stopped();
          }
          if (r.readErr || r.writeErr !== 0) throw copyFailed(runAt(runs, r.errors[0], cs), r.errors[0]);
          copiedSectors += r.sectorsDone;
        }
        crashPoint('snapshot-merge:copied');
        await origin.flush();
        crashPoint('snapshot-merge:origin-flushed');
        await tail.retire(batch.chunks);
        opts.store?.forgetTail(batch.chunks);
        crashPoint('snapshot-merge:retired');
        runCount += batch.starts.length;
        progress.batches++;
        progress.mergedChunks += batch.chunks;
        progress.mergedBytes += thisBatchBytes;
        progress.copiedBytes = progress.mergedBytes;
        opts.onProgress?.({ ...progress });
      } finally {
        opts.batchHooks?.afterBatch(hooked);
      }
    }
  } finally {
    if (!opts.kcopyd) await kcopyd.destroy();
  }
  return result(false);
}

/** The run whose COW or origin range holds the failed I/O (for the error message). */
function runAt(runs: Run[], e: DeviceError | undefined, cs: number): Run {
  const sector = e ? e.byteOffset / SECTOR_BYTES : -1;
  const inside = (start: number, chunks: number) => sector >= start * cs && sector < (start + chunks) * cs;
  return runs.find((r) => (e?.op === 'read' ? inside(r.newChunk, r.chunks) : inside(r.oldChunk, r.chunks))) ?? runs[0];
}

/** What a merge would do, without writing anything. */
export function planMerge(origin: BlockDevice, cow: BlockDevice, opts: Omit<MergeOptions, 'dryRun'> = {}): Promise<MergeResult> {
  return mergeSnapshot(origin, cow, { ...opts, dryRun: true });
}
