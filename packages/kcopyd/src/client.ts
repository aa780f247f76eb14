import { BlockDevice, SECTOR_BYTES } from '@dmtool/devices';
import { BufferPool } from './buffer-pool';
import { KcopydError, KcopydIoError } from './errors';
import { KcopydFlags } from './flags';
import { Extent, ExtentJob } from './extents';
import { CopyJob, CopyProgress, CopyResult, JobResources } from './job';
import { DestinationRegion, Region, validateJob } from './region';
import { RateLimiter, Throttle } from './throttle';
import { planPieces, SectorRange, sourceDataRuns, SparseCopy } from './sparse';

export interface ClientOptions {
  /** Sub-job size in sectors (default 1024 = 512 KiB, the kernel's default). */
  subJobSectors?: number;
  /** Sub-jobs in flight per job (default 8, the kernel's SPLIT_COUNT). */
  subJobsPerJob?: number;
  /** Buffers reserved at creation, each subJobSectors long (default subJobsPerJob). */
  reservedBuffers?: number;
  /** Percent of wall time copy I/O may be outstanding (1..100, default 100 = off). */
  throttlePercent?: number;
  /** A throttle shared with other clients (instead of throttlePercent). */
  throttle?: Throttle;
  /** Average copy rate cap in bytes per second (default: none). */
  rateBytesPerSecond?: number;
}

export interface CopyOptions {
  /** KcopydFlags bits. */
  flags?: number;
  signal?: AbortSignal;
  onProgress?: (p: CopyProgress) => void;
}

/** What only copy() takes: a part of the range, holes, and per-piece completion. */
export interface RangeCopyOptions extends CopyOptions {
  /**
   * Copy only these parts of the range (sector offsets from its start), as
   * a resumed copy does with what is left; progress counts them only.
   */
  only?: readonly SectorRange[];
  /** Plan around the source's holes (and all-zero blocks on request). Not with WRITE_SEQ. */
  sparse?: SparseCopy;
  /** Called for each piece once it is written to every destination without error (in completion order). */
  onPieceDone?: (offsetSectors: number, count: number) => void;
  /** Called for each piece before its first I/O (in claim order). */
  onPieceStart?: (offsetSectors: number, count: number) => void;
}

/**
 * Kernel-style completion: (readErr, writeErr bit-mask, context). `stopped`
 * is given only when the job did not run to its end (an AbortError when its
 * signal fired, or a failure below kcopyd); readErr and writeErr are then
 * true and ~0, as the kernel reports a job it could not run.
 */
export type NotifyFn<C> = (readErr: boolean, writeErr: number, context: C, stopped?: Error) => void;

const MAX_SUB_JOB_SECTORS = 1 << 16;

function positiveInt(name: string, v: number, max: number): number {
  if (!Number.isSafeInteger(v) || v < 1 || v > max)
    throw new KcopydError('bad-option', `${name} must be an integer in 1..${max} (got ${v})`);
  return v;
}

/**
 * A kcopyd client: owns a buffer pool reserved at creation, runs copy and
 * zero jobs concurrently, and reports each job once with the kernel's
 * (readErr, writeErr bit-mask). No flush is issued: callers that need
 * durability flush the destinations themselves.
 */
export class KcopydClient {
  readonly subJobSectors: number;
  readonly subJobsPerJob: number;
  private readonly pool: BufferPool;
  private readonly throttle: Throttle;
  private rate?: RateLimiter;
  private jobs = new Set<Promise<unknown>>();
  private destroyed = false;

  constructor(opts: ClientOptions = {}) {
    this.subJobSectors = positiveInt('subJobSectors', opts.subJobSectors ?? 1024, MAX_SUB_JOB_SECTORS);
    if (this.subJobSectors % 8 !== 0)
      throw new KcopydError('bad-option', `subJobSectors must be a multiple of 8 (4 KiB) (got ${this.subJobSectors})`);
    this.subJobsPerJob = positiveInt('subJobsPerJob', opts.subJobsPerJob ?? 8, 64);
    const reserved = positiveInt('reservedBuffers', opts.reservedBuffers ?? this.subJobsPerJob, 1024);
    this.throttle = opts.throttle ?? new Throttle(opts.throttlePercent ?? 100);
    if (opts.rateBytesPerSecond !== undefined) this.rate = new RateLimiter(opts.rateBytesPerSecond);
    this.pool = new BufferPool(reserved, this.subJobSectors * SECTOR_BYTES);
  }

  /** The average copy rate cap in bytes per second, undefined for none. */
  get rateBytesPerSecond(): number | undefined {
    return this.rate?.bytesPerSecond;
  }

  /**
   * Change the rate cap while jobs run (undefined lifts it). The sub-jobs of
   * jobs under way are paced by the new rate too.
   */
  setRate(bytesPerSecond: number | undefined): void {
    if (bytesPerSecond === undefined) {
      // Jobs under way hold this limiter: let their next sub-jobs through at once.
      if (this.rate) this.rate.bytesPerSecond = Number.MAX_SAFE_INTEGER;
      this.rate = undefined;
    } else if (this.rate) this.rate.bytesPerSecond = bytesPerSecond;
    else this.rate = new RateLimiter(bytesPerSecond);
  }

  /** Bytes reserved for buffers by this client. */
  get reservedBytes(): number {
    return this.pool.count * this.pool.bufferBytes;
  }

  get activeJobs(): number {
    return this.jobs.size;
  }

  /**
   * Copy `from` to every destination (1..8). Resolves once the whole range
   * is written; rejects with a KcopydIoError (readErr, writeErr,
   * sectorsDone, the failing ranges) on an I/O error, or, with
   * IGNORE_ERROR, resolves with the error summary after doing all it could.
   */
  copy(from: Region, to: readonly DestinationRegion[], opts: RangeCopyOptions = {}): Promise<CopyResult> {
    if (opts.only === undefined && opts.sparse === undefined) {
      return this.start(from, to, from?.count, opts).then((r) => checked(r, opts.flags ?? 0));
    }
    return this.copyPlanned(from, to, opts).then((r) => checked(r, opts.flags ?? 0));
  }

  /**
   * Many copies from one device to another as one job (e.g. a snapshot
   * merge's chunks): extents near each other on the source are read once
   * and written to their places in one native call per sub-job.
   */
  copyExtents(src: BlockDevice, dest: BlockDevice, extents: readonly Extent[], opts: CopyOptions = {}): Promise<CopyResult> {
    let job: ExtentJob;
    try {
      this.checkUsable();
      job = new ExtentJob(
        { src, dest, extents, flags: opts.flags ?? 0, signal: opts.signal, onProgress: opts.onProgress },
        this.resources(),
      );
    } catch (e) {
      return Promise.reject(e);
    }
    return this.track(job.run());
  }

  /** Zero every destination region; errors as copy() reports them. */
  zero(to: readonly Region[], opts: CopyOptions = {}): Promise<CopyResult> {
    const count = to[0]?.count;
    return this.start(undefined, to, count, opts).then((r) => checked(r, opts.flags ?? 0));
  }

  /**
   * The kernel's callback form of copy (or zero, with `from` undefined):
   * notify gets (readErr, writeErr bit-mask, context) once the job ends,
   * errors or not, as dm_kcopyd_copy's callback does. A request kcopyd
   * refuses (a bad region or count, a destroyed client) throws a
   * KcopydError at once, before any I/O, and notify is never called.
   * `opts` takes a signal and a progress callback, as copy() does.
   */
  copyNotify<C>(
    from: Region | undefined,
    to: readonly DestinationRegion[],
    flags: number,
    notify: NotifyFn<C>,
    context: C,
    opts: Omit<CopyOptions, 'flags'> = {},
  ): void {
    const count = from ? from.count : (to[0]?.count ?? 0);
    const job = this.prepare(from, to, count, { ...opts, flags });
    this.track(job.run()).then(
      (r) => notify(r.readErr, r.writeErr, context),
      // An abort, or a failure below kcopyd: I/O errors are in the result, never here.
      (e: unknown) => notify(true, ~0, context, e instanceof Error ? e : new Error(String(e))),
    );
  }

  /**
   * A callback-only job (dm_kcopyd_prepare_callback): reserve it now, hand it
   * the (readErr, writeErr) pair later; the notify runs asynchronously.
   */
  prepareCallback<C>(notify: NotifyFn<C>, context: C): (readErr: boolean, writeErr: number) => void {
    this.checkUsable();
    let finish!: () => void;
    const done = new Promise<void>((resolve) => (finish = resolve));
    this.track(done);
    return (readErr, writeErr) => {
      queueMicrotask(() => {
        try {
          notify(readErr, writeErr, context);
        } finally {
          finish();
        }
      });
    };
  }

  /** Refuse new jobs, wait for the running ones. */
  async destroy(): Promise<void> {
    this.destroyed = true;
    while (this.jobs.size > 0) await Promise.allSettled([...this.jobs]);
  }

  /** A copy of part of the range, or around the source's holes: the pieces are planned first. */
  private async copyPlanned(from: Region, to: readonly DestinationRegion[], opts: RangeCopyOptions): Promise<CopyResult> {
    const job = this.prepare(from, to, from?.count, opts);
    const flags = opts.flags ?? 0;
    const sparse = opts.sparse;
    if (sparse) {
      if (flags & KcopydFlags.WRITE_SEQ) throw new KcopydError('bad-option', 'a sparse copy cannot be WRITE_SEQ');
      if (sparse.holes.length !== to.length)
        throw new KcopydError('bad-option', `sparse: ${sparse.holes.length} hole actions for ${to.length} destinations`);
    }
    const data = sparse ? await sourceDataRuns(from.device, from.sector, from.count) : undefined;
    job.plan(planPieces(from.count, this.resources().subJobSectors, opts.only, data), sparse);
    return this.track(job.run());
  }

  private start(
    from: Region | undefined,
    to: readonly DestinationRegion[],
    count: number | undefined,
    opts: RangeCopyOptions,
  ): Promise<CopyResult> {
    let job: CopyJob;
    try {
      job = this.prepare(from, to, count, opts);
    } catch (e) {
      return Promise.reject(e);
    }
    return this.track(job.run());
  }

  /** A job on checked arguments: a bad request throws a KcopydError here, before any I/O. */
  private prepare(from: Region | undefined, to: readonly DestinationRegion[], count: number | undefined, opts: RangeCopyOptions): CopyJob {
    this.checkUsable();
    if (!Array.isArray(to)) throw new KcopydError('no-destination', 'destinations must be an array of regions');
    validateJob(from, to, count ?? 0);
    if (!from) {
      to.forEach((d, i) => {
        if (d.count !== count)
          throw new KcopydError('bad-count', `zero: region ${i} count ${d.count} differs from region 0 count ${count}`);
      });
    }
    return new CopyJob(
      {
        from,
        to,
        count: count as number,
        flags: opts.flags ?? 0,
        signal: opts.signal,
        onProgress: opts.onProgress,
        onPieceDone: opts.onPieceDone,
        onPieceStart: opts.onPieceStart,
      },
      this.resources(),
    );
  }

  private resources(): JobResources {
    return {
      pool: this.pool,
      subJobSectors: this.rate ? this.rate.pieceSectors(this.subJobSectors) : this.subJobSectors,
      subJobsPerJob: this.subJobsPerJob,
      throttle: this.throttle,
      rate: this.rate,
    };
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.jobs.add(p);
    const forget = () => this.jobs.delete(p);
    p.then(forget, forget);
    return p;
  }

  private checkUsable(): void {
    if (this.destroyed) throw new KcopydError('destroyed', 'kcopyd client has been destroyed', 'ESHUTDOWN');
  }
}

/** The promise form's rule: an I/O error rejects, unless IGNORE_ERROR asked for the summary. */
function checked(r: CopyResult, flags: number): CopyResult {
  if ((r.readErr || r.writeErr !== 0) && (flags & KcopydFlags.IGNORE_ERROR) === 0) throw new KcopydIoError(r);
  return r;
}
