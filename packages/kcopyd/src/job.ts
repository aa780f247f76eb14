import { setMaxListeners } from 'events';
import { BlockDevice, DeviceError, SECTOR_BYTES } from '@dmtool/devices';
import { copyOut } from './copy-out';
import { BufferPool } from './buffer-pool';
import { AbortError } from './errors';
import { KcopydFlags } from './flags';
import { runSubJobs } from './sub-jobs';
import { DestinationRegion, Region } from './region';
import { RateLimiter, Throttle } from './throttle';
import { HoleAction, PlannedPiece, SparseCopy, zeroBlockRuns } from './sparse';

export interface CopyProgress {
  /** Sectors whose writes to every destination have completed. */
  doneSectors: number;
  totalSectors: number;
  /** The same in bytes. */
  doneBytes: number;
  totalBytes: number;
}

/** A progress report for `doneSectors` of `totalSectors`. */
export function copyProgress(doneSectors: number, totalSectors: number): CopyProgress {
  return { doneSectors, totalSectors, doneBytes: doneSectors * SECTOR_BYTES, totalBytes: totalSectors * SECTOR_BYTES };
}

export interface CopyResult {
  /** The source could not be read (somewhere in the range). */
  readErr: boolean;
  /** Bit i set: destination i failed. */
  writeErr: number;
  /** The errors behind those bits, in the order they happened. */
  errors: DeviceError[];
  /** Sectors written to every destination without error. */
  sectorsDone: number;
}

export interface JobResources {
  pool: BufferPool;
  subJobSectors: number;
  subJobsPerJob: number;
  throttle: Throttle;
  rate?: RateLimiter;
}

export interface JobSpec {
  from?: Region;
  to: readonly DestinationRegion[];
  count: number;
  flags: number;
  signal?: AbortSignal;
  onProgress?: (p: CopyProgress) => void;
  /** The planned pieces (a part of the range, cut at holes); absent: the whole range as data. */
  pieces?: readonly PlannedPiece[];
  sparse?: SparseCopy;
  /** A piece written to every destination without error. */
  onPieceDone?: (offsetSectors: number, count: number) => void;
  /** A piece claimed, before its first I/O. */
  onPieceStart?: (offsetSectors: number, count: number) => void;
}

type Piece = PlannedPiece;

/**
 * One kcopyd job: the range is cut into pieces of at most subJobSectors,
 * claimed in ascending order by up to subJobsPerJob sub-jobs that run
 * concurrently and may complete out of order. Without IGNORE_ERROR the first
 * error stops further claims; pieces in flight finish, and the destination
 * range is left partly written, as in the kernel.
 */
export class CopyJob {
  private cursor = 0;
  private nextPiece = 0;
  private totalSectors: number;
  private nextWriteSector = 0;
  private seqWaiters = new Map<number, () => void>();
  private readonly ignoreErrors: boolean;
  private readonly writeSeq: boolean;
  private aborted = false;
  /** Fired on abort; every sub-job's pacing sleep listens to it. */
  private readonly abortPacing = new AbortController();
  private broken = false;
  private result: CopyResult = { readErr: false, writeErr: 0, errors: [], sectorsDone: 0 };

  constructor(
    private spec: JobSpec,
    private readonly res: JobResources,
  ) {
    this.writeSeq = (spec.flags & KcopydFlags.WRITE_SEQ) !== 0;
    this.ignoreErrors = !this.writeSeq && (spec.flags & KcopydFlags.IGNORE_ERROR) !== 0;
    this.totalSectors = spec.pieces ? spec.pieces.reduce((n, p) => n + p.count, 0) : spec.count;
  }

  /** Run these pieces only (a part of the range, cut at the source's holes), before run(). */
  plan(pieces: readonly PlannedPiece[], sparse?: SparseCopy): void {
    this.spec = { ...this.spec, pieces, sparse };
    this.totalSectors = pieces.reduce((n, p) => n + p.count, 0);
  }

  async run(): Promise<CopyResult> {
    const { signal } = this.spec;
    if (signal?.aborted) throw new AbortError(0, signal.reason);
    const onAbort = () => {
      this.aborted = true;
      this.abortPacing.abort();
      this.wakeSequencedWriters();
    };
    setMaxListeners(this.res.subJobsPerJob + 1, this.abortPacing.signal);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const pieces = this.spec.pieces ? this.spec.pieces.length : Math.ceil(this.spec.count / this.res.subJobSectors);
      const workers = Math.min(this.res.subJobsPerJob, pieces);
      await runSubJobs(
        workers,
        () => this.subJob(),
        () => (this.broken = true),
      );
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    if (this.aborted && this.result.sectorsDone < this.totalSectors) throw new AbortError(this.result.sectorsDone, signal?.reason);
    return this.result;
  }

  private get stopped(): boolean {
    const failed = this.result.readErr || this.result.writeErr !== 0;
    return this.aborted || this.broken || (failed && !this.ignoreErrors);
  }

  private claim(): Piece | undefined {
    if (this.stopped) return undefined;
    if (this.spec.pieces) return this.spec.pieces[this.nextPiece++];
    if (this.cursor >= this.spec.count) return undefined;
    const count = Math.min(this.res.subJobSectors, this.spec.count - this.cursor);
    const piece = { offsetSectors: this.cursor, count, hole: false };
    this.cursor += count;
    return piece;
  }

  private async subJob(): Promise<void> {
    for (let piece = this.claim(); piece; piece = this.claim()) {
      this.spec.onPieceStart?.(piece.offsetSectors, piece.count);
      if (!this.spec.from) {
        await this.zeroPiece(piece);
        continue;
      }
      const sparse = this.spec.sparse;
      if (sparse && piece.hole) {
        await this.holePiece(piece, sparse.holes);
        continue;
      }
      const buf = await this.res.pool.acquire();
      try {
        if (this.writeSeq) await this.copyPieceInOrder(piece, buf);
        else if (sparse?.detectZeroBlocks) await this.copyPieceSkippingZeros(piece, buf, sparse.holes);
        else await this.copyPiece(piece, buf);
      } finally {
        this.res.pool.release(buf);
      }
    }
  }

  /** Wait for the throttle and the rate limit; false if the job stopped meanwhile. */
  private async admit(bytes: number): Promise<boolean> {
    await this.res.throttle.beforeIo(this.abortPacing.signal);
    if (this.res.rate && !this.stopped) await this.res.rate.admit(bytes, this.abortPacing.signal);
    return !this.stopped;
  }

  private destinations(piece: Piece) {
    return this.spec.to.map((d) => ({
      device: d.device,
      byteOffset: (d.sector + piece.offsetSectors) * SECTOR_BYTES,
    }));
  }

  private async copyPiece(piece: Piece, buf: Buffer): Promise<void> {
    const from = this.spec.from as Region;
    const bytes = piece.count * SECTOR_BYTES;
    if (!(await this.admit(bytes))) return;
    this.res.throttle.ioStarted();
    try {
      const r = await copyOut(
        from.device,
        (from.sector + piece.offsetSectors) * SECTOR_BYTES,
        bytes,
        buf.subarray(0, bytes),
        this.destinations(piece),
        this.ignoreErrors,
      );
      this.record(piece, r.readError, r.writeErrors);
    } finally {
      this.res.throttle.ioFinished();
    }
  }

  // WRITE_SEQ: reads run ahead freely; a piece's writes wait until every
  // piece before it has been written.
  private async copyPieceInOrder(piece: Piece, buf: Buffer): Promise<void> {
    const from = this.spec.from as Region;
    const bytes = piece.count * SECTOR_BYTES;
    const data = buf.subarray(0, bytes);
    if (!(await this.admit(bytes))) {
      this.wakeSequencedWriters();
      return;
    }
    let readError: DeviceError | undefined;
    this.res.throttle.ioStarted();
    try {
      await from.device.read(data, 0, bytes, (from.sector + piece.offsetSectors) * SECTOR_BYTES);
    } catch (e) {
      readError = asDeviceError(e);
    } finally {
      this.res.throttle.ioFinished();
    }
    if (readError) {
      this.record(piece, readError, []);
      this.wakeSequencedWriters();
      return;
    }
    await this.waitForTurn(piece.offsetSectors);
    if (this.stopped) return;
    const writeErrors = await this.writeAll(piece, (dest) => dest.device.write(data, 0, bytes, dest.byteOffset));
    this.record(piece, undefined, writeErrors);
    this.nextWriteSector = piece.offsetSectors + piece.count;
    const next = this.seqWaiters.get(this.nextWriteSector);
    this.seqWaiters.delete(this.nextWriteSector);
    if (next) next();
    if (this.stopped) this.wakeSequencedWriters();
  }

  private waitForTurn(offsetSectors: number): Promise<void> {
    if (this.nextWriteSector === offsetSectors || this.stopped) return Promise.resolve();
    return new Promise((resolve) => this.seqWaiters.set(offsetSectors, resolve));
  }

  private wakeSequencedWriters(): void {
    const waiting = [...this.seqWaiters.values()];
    this.seqWaiters.clear();
    waiting.forEach((w) => w());
  }

  /** A piece the source holds no data in: each destination does its hole action. */
  private async holePiece(piece: Piece, holes: readonly HoleAction[]): Promise<void> {
    const bytes = piece.count * SECTOR_BYTES;
    if (holes.some((a) => a !== 'skip') && !(await this.admit(bytes))) return;
    if (this.stopped) return;
    let zeros: Buffer | undefined;
    if (holes.includes('write')) zeros = (await this.res.pool.acquire()).fill(0, 0, bytes);
    try {
      const writeErrors = await this.writeAll(piece, (dest, i) => applyHole(holes[i], dest.device, dest.byteOffset, bytes, zeros));
      this.record(piece, undefined, writeErrors);
    } finally {
      if (zeros) this.res.pool.release(zeros);
    }
  }

  // cp --sparse=always: the piece is read, and its all-zero blocks get each
  // destination's hole action instead of a write.
  private async copyPieceSkippingZeros(piece: Piece, buf: Buffer, holes: readonly HoleAction[]): Promise<void> {
    const from = this.spec.from as Region;
    const bytes = piece.count * SECTOR_BYTES;
    if (!(await this.admit(bytes))) return;
    let readError: DeviceError | undefined;
    this.res.throttle.ioStarted();
    try {
      await from.device.read(buf, 0, bytes, (from.sector + piece.offsetSectors) * SECTOR_BYTES);
    } catch (e) {
      readError = asDeviceError(e);
    } finally {
      this.res.throttle.ioFinished();
    }
    if (readError && !this.ignoreErrors) {
      this.record(piece, readError, []);
      return;
    }
    const runs = readError ? [{ byteOffset: 0, bytes, zero: false }] : zeroBlockRuns(buf, bytes);
    const writeErrors = await this.writeAll(piece, async (dest, i) => {
      if (holes[i] === 'write') return dest.device.write(buf, 0, bytes, dest.byteOffset);
      for (const run of runs) {
        const at = dest.byteOffset + run.byteOffset;
        if (run.zero) await applyHole(holes[i], dest.device, at, run.bytes, buf.subarray(run.byteOffset));
        else await dest.device.write(buf, run.byteOffset, run.bytes, at);
      }
    });
    this.record(piece, readError, writeErrors);
  }

  private async zeroPiece(piece: Piece): Promise<void> {
    const bytes = piece.count * SECTOR_BYTES;
    if (!(await this.admit(bytes))) return;
    const writeErrors = await this.writeAll(piece, (dest) => dest.device.zeroRange(dest.byteOffset, bytes));
    this.record(piece, undefined, writeErrors);
  }

  private async writeAll(
    piece: Piece,
    op: (dest: { device: BlockDevice; byteOffset: number }, index: number) => Promise<void>,
  ): Promise<(DeviceError | undefined)[]> {
    this.res.throttle.ioStarted();
    try {
      return await Promise.all(this.destinations(piece).map((dest, i) => op(dest, i).then(() => undefined, asDeviceError)));
    } finally {
      this.res.throttle.ioFinished();
    }
  }

  private record(piece: Piece, readError: DeviceError | undefined, writeErrors: (DeviceError | undefined)[]): void {
    if (readError) {
      this.result.readErr = true;
      this.result.errors.push(readError);
    }
    writeErrors.forEach((e, i) => {
      if (!e) return;
      this.result.writeErr |= 1 << i;
      this.result.errors.push(e);
    });
    if (!readError && writeErrors.every((e) => !e)) {
      this.result.sectorsDone += piece.count;
      this.spec.onPieceDone?.(piece.offsetSectors, piece.count);
      this.spec.onProgress?.(copyProgress(this.result.sectorsDone, this.totalSectors));
    }
  }
}

/** One destination's hole action over a range that reads as zeros; `zeros` holds at least `bytes` zero bytes for `write`. */
async function applyHole(action: HoleAction, device: BlockDevice, byteOffset: number, bytes: number, zeros?: Buffer): Promise<void> {
  if (action === 'skip') return;
  if (action === 'write') return device.write(zeros as Buffer, 0, bytes, byteOffset);
  const sparse = action === 'punch' ? device.sparseFile?.() : undefined;
  if (sparse) return sparse.punchHole(byteOffset, bytes);
  return device.zeroRange(byteOffset, bytes);
}

function asDeviceError(e: unknown): DeviceError {
  if (e instanceof DeviceError) return e;
  throw e;
}
