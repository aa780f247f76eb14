import { AbortError, KcopydClient } from '@dmtool/kcopyd';
import { BlockDevice, crashPoint, DeviceError, SECTOR_BYTES } from '@dmtool/devices';
import { SnapshotError } from './errors';
import { PersistentStore } from './persistent-store';
import { formatUsage } from './status';

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
  /** The COW's store, already opened (by a device serving the merge); default: opened here. */
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

interface Run {
  oldChunk: number;
  newChunk: number;
  chunks: number;
}

interface Batch {
  runs: Run[];
  chunks: number;
}

/**
 * Pick the next batch from the tail of the table. Runs are maximal stretches
 * where both old_chunk and new_chunk step by one (the kernel's rule), never
 * across a metadata area. Kernel mode: one run. Otherwise runs are taken
 * until `maxChunks`, so one origin flush and one table write cover many.
 */
function nextBatch(store: PersistentStore, kernelBatches: boolean, maxChunks: number, tableSize = store.table.size): Batch {
  const t = store.table;
  const E = store.exceptionsPerArea;
  const runs: Run[] = [];
  let j = tableSize - 1;
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
    runs.push({ oldChunk: t.oldAt(lo), newChunk: t.newAt(lo), chunks });
    taken += chunks;
    j = lo - 1;
    if (kernelBatches) break;
  }
  return { runs, chunks: taken };
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
  const store = opts.store ?? (await PersistentStore.open(cow, { originSectors: origin.sizeSectors, origin }));
  if (!store.valid) {
    throw new SnapshotError('EINVAL', 'merge-invalid', "snapshot is invalid: can't merge", { path: cow.path, sector: 0, sectors: 1 });
  }
  const cs = store.chunkSectors;
  const chunkBytes = cs * SECTOR_BYTES;
  const total = store.table.size;
  const originSectors = origin.sizeSectors;
  const batchBytes = opts.batchBytes ?? 64 << 20;
  if (!(batchBytes >= chunkBytes)) {
    throw new SnapshotError('EINVAL', 'out-of-range', `batch size ${batchBytes} bytes is smaller than one chunk (${chunkBytes} bytes)`, {
      path: cow.path,
    });
  }
  const maxChunks = Math.floor(batchBytes / chunkBytes);
  const kernelBatches = opts.kernelBatches === true;
  const runBytes = (r: Run) => Math.min(r.chunks * cs, originSectors - r.oldChunk * cs) * SECTOR_BYTES;

  const progress: MergeProgress = { mergedChunks: 0, totalChunks: total, mergedBytes: 0, copiedBytes: 0, totalBytes: 0, batches: 0 };
  for (let i = 0; i < total; i++) progress.totalBytes += Math.min(cs, originSectors - store.table.oldAt(i) * cs) * SECTOR_BYTES;
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
      status: formatUsage(dryRun ? store.emptyUsage() : store.usage()),
    };
  };

  if (opts.dryRun) {
    // Plan only: the same batches, from a tail position that moves in memory.
    for (let remaining = total; remaining > 0;) {
      const batch = nextBatch(store, kernelBatches, maxChunks, remaining);
      runCount += batch.runs.length;
      for (const r of batch.runs) progress.mergedBytes += runBytes(r);
      progress.copiedBytes = progress.mergedBytes;
      progress.batches++;
      progress.mergedChunks += batch.chunks;
      remaining -= batch.chunks;
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
    new SnapshotError('ECANCELED', 'aborted', `merge stopped with ${store.table.size} exceptions left; run it again to finish`, {
      path: cow.path,
    });
  opts.onProgress?.({ ...progress });
  try {
    while (store.table.size > 0) {
      if (opts.signal?.aborted) throw stopped();
      crashPoint('snapshot-merge:batch-start');
      const batch = nextBatch(store, kernelBatches, maxChunks);
      await opts.batchHooks?.beforeCopy(batch.runs);
      try {
        await mergeBatch(batch);
      } finally {
        opts.batchHooks?.afterBatch(batch.runs);
      }
    }
  } finally {
    if (!opts.kcopyd) await kcopyd.destroy();
  }
  return result(false);

  async function mergeBatch(batch: Batch): Promise<void> {
    // One kcopyd job per batch: runs whose COW chunks lie close together
    // are read as one span and scattered to the origin in one native call.
    let r;
    try {
      r = await kcopyd.copyExtents(
        cow,
        origin,
        batch.runs.map((run) => ({ srcSector: run.newChunk * cs, destSector: run.oldChunk * cs, count: runBytes(run) / SECTOR_BYTES })),
        {
          signal: opts.signal,
          onProgress: (p) => {
            progress.copiedBytes = progress.mergedBytes + p.doneSectors * SECTOR_BYTES;
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
    if (r.readErr || r.writeErr !== 0) throw copyFailed(runAt(batch.runs, r.errors[0], cs), r.errors[0]);
    crashPoint('snapshot-merge:copied');
    await origin.flush();
    crashPoint('snapshot-merge:origin-flushed');
    await store.retireTail(batch.chunks);
    crashPoint('snapshot-merge:retired');
    runCount += batch.runs.length;
    progress.batches++;
    progress.mergedChunks += batch.chunks;
    for (const r of batch.runs) progress.mergedBytes += runBytes(r);
    progress.copiedBytes = progress.mergedBytes;
    opts.onProgress?.({ ...progress });
  }
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
