import { AbortError, crashPoint, CopyResult, KcopydClient, KcopydIoError, DeviceError } from '@dmtool/kcopyd';
import { setMaxListeners } from 'events';
import { MirrorSet } from './mirror-set';

export interface ResyncProgress {
  /** Regions finished (copied or given up) in this run. */
  regionsDone: number;
  /** Regions out of sync when the run started. */
  regionsTotal: number;
  sectorsDone: number;
  /** Sectors of regions recorded in sync in the log (legs flushed first): durable progress. */
  sectorsRecorded: number;
  sectorsTotal: number;
  inFlight: number;
  /** In-sync regions / all regions, as the status line counts them. */
  syncCount: number;
  regions: number;
}

export interface ResyncOptions {
  /** Regions copied at once (the kernel recovers one; default 4). */
  parallel?: number;
  /** Percent of wall time copy I/O may be outstanding (the kernel's raid1_resync_throttle). */
  throttlePercent?: number;
  /** Average copy rate cap in bytes per second. */
  rateBytesPerSecond?: number;
  /** kcopyd sub-job size in sectors (default 1024). */
  subJobSectors?: number;
  /** Use this kcopyd client instead of making one. */
  client?: KcopydClient;
  /**
   * Record recovered regions in the log (leg flush, then log write) once this
   * many are waiting (default 32), or after commitIntervalMs. Larger batches
   * mean fewer flushes; a crash only recopies the regions not yet recorded.
   */
  commitRegions?: number;
  /** Longest wait before recovered regions are recorded (default 1000 ms). */
  commitIntervalMs?: number;
  signal?: AbortSignal;
  onProgress?: (p: ResyncProgress) => void;
}

export interface ResyncResult {
  regions: number;
  /** Regions out of sync at the start. */
  regionsTotal: number;
  /** Regions out of sync at the start that the log records in sync at the end. */
  regionsSynced: number;
  /** Regions whose copy failed in this run (a leg failed, or the source could not be read). */
  regionsFailed: number[];
  /**
   * Every region the log leaves out of sync, as the next run will find it:
   * also those never tried after the source failed, and all of them after a
   * failed leg flush (the log then records every region dirty).
   */
  regionsOutOfSync: number[];
  sectorsCopied: number;
  /** Legs that failed during this run, with their status character. */
  failedLegs: { index: number; path: string; health: string; error?: string }[];
  syncCount: number;
  inSync: boolean;
  aborted: boolean;
  elapsedMs: number;
}

/** What a resync would copy now: the out-of-sync regions and their sectors. */
export interface ResyncPlan {
  regions: number[];
  sectors: number;
}

export function planResync(mirror: MirrorSet): ResyncPlan {
  const plan: ResyncPlan = { regions: [], sectors: 0 };
  for (let r = 0; r < mirror.regionCount; r++) {
    if (mirror.log.inSync(r)) continue;
    plan.sectors += mirror.rh.regionSectors(r);
    plan.regions.push(r);
  }
  return plan;
}

/**
 * Resync: every out-of-sync region is copied from the default leg to all
 * other healthy legs with one kcopyd job (N destinations), several regions
 * at once. A region is recorded clean only after the legs were flushed (the
 * log's flush callback); a crash at any point leaves it dirty, to be copied
 * again by the next run. A leg that fails is marked `S` and left out of
 * later copies; the regions it missed stay out of sync.
 */
/**
 * The kcopyd client resync makes when it is given none: one job per region,
 * buffers for `parallel` regions. Made by a caller that wants to change the
 * rate while the resync runs (KcopydClient.setRate); the caller destroys it.
 */
export function resyncClient(mirror: MirrorSet, opts: ResyncOptions = {}): KcopydClient {
  const parallel = opts.parallel ?? 4;
  const subJobSectors = opts.subJobSectors ?? 1024;
  const piecesPerRegion = Math.min(8, Math.ceil(mirror.regionSize / subJobSectors));
  return new KcopydClient({
    subJobSectors,
    subJobsPerJob: piecesPerRegion,
    reservedBuffers: Math.min(1024, parallel * piecesPerRegion),
    throttlePercent: opts.throttlePercent,
    rateBytesPerSecond: opts.rateBytesPerSecond,
  });
}

export async function resync(mirror: MirrorSet, opts: ResyncOptions = {}): Promise<ResyncResult> {
  const started = Date.now();
  const parallel = opts.parallel ?? 4;
  if (!Number.isSafeInteger(parallel) || parallel < 1 || parallel > 64) throw new RangeError(`parallel must be 1..64 (got ${parallel})`);
  const rh = mirror.rh;
  // each region in flight listens on the signal (one kcopyd job each)
  if (opts.signal) setMaxListeners(parallel + 10, opts.signal);
  const regions = mirror.regionCount;
  const client = opts.client ?? resyncClient(mirror, opts);
  const ownClient = opts.client === undefined;
  const outOfSync = regions - mirror.log.getSyncCount();
  const { regions: outOfSyncAtStart, sectors: sectorsTotal } = planResync(mirror);
  const failedBefore = new Set(mirror.legs.map((l, i) => (l.failed ? i : -1)).filter((i) => i >= 0));
  const regionsFailed: number[] = [];
  let regionsDone = 0;
  let sectorsCopied = 0;
  let inFlight = 0;
  let stop = false;
  let aborted = false;
  const commitRegions = Math.max(1, opts.commitRegions ?? 32);
  const commitIntervalMs = opts.commitIntervalMs ?? 1000;
  let uncommitted = 0;
  let lastCommit = Date.now();
  let sectorsPending = 0;
  let sectorsRecorded = 0;
  const commit = async (): Promise<void> => {
    uncommitted = 0;
    lastCommit = Date.now();
    const recording = sectorsPending;
    sectorsPending = 0;
    await rh.update();
    sectorsRecorded += recording;
    crashPoint('mirror-resync:recorded');
    report();
  };

  const report = () =>
    opts.onProgress?.({
      regionsDone,
      regionsTotal: outOfSync,
      sectorsDone: sectorsCopied,
      sectorsRecorded,
      sectorsTotal,
      inFlight,
      syncCount: mirror.log.getSyncCount(),
      regions,
    });

  const recoverOne = async (region: number): Promise<void> => {
    const source = mirror.legs[mirror.defaultLeg];
    const sector = rh.regionStart(region);
    const count = rh.regionSectors(region);
    let copied = false;
    let reachedAllLegs = false;
    crashPoint('mirror-resync:region-start');
    for (;;) {
      const dests = mirror.legs.map((l, i) => ({ leg: l, i })).filter(({ leg, i }) => i !== mirror.defaultLeg && !leg.failed);
      if (dests.length === 0 || source.failed) break;
      const result = await copySummary(
        client.copy(
          { device: source.device, sector: source.offsetSectors + sector, count },
          dests.map(({ leg }) => ({ device: leg.device, sector: leg.offsetSectors + sector })),
          { signal: opts.signal },
        ),
      );
      if (result.readErr) {
        mirror.failLeg(
          mirror.defaultLeg,
          'S',
          result.errors.find((e) => e.path === source.device.path),
        );
        stop = true;
        break;
      }
      if (result.writeErr === 0) {
        copied = true;
        reachedAllLegs = dests.length === mirror.legs.length - 1;
        break;
      }
      // Fail the legs that missed writes, then copy the region again to the others.
      dests.forEach(({ leg, i }, bit) => {
        if (result.writeErr & (1 << bit))
          mirror.failLeg(
            i,
            'S',
            result.errors.find((e: DeviceError) => e.path === leg.device.path),
          );
      });
    }
    crashPoint('mirror-resync:region-copied');
    if (copied) sectorsCopied += count;
    if (copied && reachedAllLegs) sectorsPending += count;
    // In sync only if this copy wrote every other leg (a leg that failed
    // during another region's copy still received this one).
    const allLegsHave = copied && reachedAllLegs;
    rh.recoveryEnd(region, allLegsHave);
    if (++uncommitted >= commitRegions || Date.now() - lastCommit >= commitIntervalMs) await commit();
    regionsDone++;
    if (!allLegsHave) regionsFailed.push(region);
  };

  const worker = async (): Promise<void> => {
    while (!stop) {
      if (opts.signal?.aborted) {
        aborted = true;
        return;
      }
      const region = await rh.recoveryPrepare();
      if (region === undefined) return;
      inFlight++;
      try {
        await recoverOne(region);
      } catch (e) {
        if (e instanceof AbortError) {
          aborted = true;
          stop = true;
          rh.recoveryEnd(region, false);
          await rh.update();
          return;
        }
        stop = true;
        throw e;
      } finally {
        inFlight--;
      }
      report();
    }
  };

  report();
  // Recovered regions are also recorded on a timer, not only when another
  // region finishes: writes parked on a recovered region are released by
  // the record, and a write that holds one region while parked on another
  // would otherwise wait for a worker that waits for it.
  let timerError: unknown;
  const timer = setInterval(() => {
    if (uncommitted > 0) commit().catch((e: unknown) => (timerError ??= e));
  }, commitIntervalMs);
  try {
    const outcomes = await Promise.allSettled(Array.from({ length: parallel }, worker));
    clearInterval(timer);
    const failure = outcomes.find((o): o is PromiseRejectedResult => o.status === 'rejected');
    if (failure) throw failure.reason;
    if (timerError !== undefined) throw timerError;
    await commit();
    await mirror.log.sync();
    crashPoint('mirror-resync:done');
  } finally {
    clearInterval(timer);
    if (ownClient) await client.destroy();
  }
  const failedLegs = mirror.legs
    .map((l, index) => ({ l, index }))
    .filter(({ l, index }) => l.failed && !failedBefore.has(index))
    .map(({ l, index }) => ({ index, path: l.device.path, health: l.health, error: l.errors[0]?.message }));
  const regionsOutOfSync: number[] = [];
  for (let r = 0; r < regions; r++) if (!mirror.log.inSync(r)) regionsOutOfSync.push(r);
  return {
    regions,
    regionsTotal: outOfSync,
    regionsSynced: outOfSyncAtStart.filter((r) => mirror.log.inSync(r)).length,
    regionsFailed: regionsFailed.sort((a, b) => a - b),
    regionsOutOfSync,
    sectorsCopied,
    failedLegs,
    syncCount: mirror.log.getSyncCount(),
    inSync: mirror.inSync,
    aborted,
    elapsedMs: Date.now() - started,
  };
}

/** The kernel's (readErr, writeErr) summary of a copy, whether it succeeded or met I/O errors. */
async function copySummary(copy: Promise<CopyResult>): Promise<CopyResult> {
  try {
    return await copy;
  } catch (e) {
    if (e instanceof KcopydIoError) return e.result;
    throw e;
  }
}
