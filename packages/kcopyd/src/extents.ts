import { setMaxListeners } from 'events';
import { BlockDevice, DeviceError, SECTOR_BYTES } from '@dmtool/devices';
import { scatterCopy } from './scatter';
import { BufferPool } from './buffer-pool';
import { AbortError, KcopydError } from './errors';
import { KcopydFlags } from './flags';
import { runSubJobs } from './sub-jobs';
import { copyProgress, CopyProgress, CopyResult, JobResources } from './job';

/** One copy of `count` sectors from `srcSector` (source device) to `destSector` (destination device). */
export interface Extent {
  srcSector: number;
  destSector: number;
  count: number;
}

interface Group {
  srcSector: number;
  spanSectors: number;
  sectors: number;
  pieces: { spanOffset: number; destByteOffset: number; bytes: number }[];
}

/** Reading over a gap this small is cheaper than another round trip. */
const MAX_GAP_SECTORS = 256;

function checkExtents(src: BlockDevice, dest: BlockDevice, extents: readonly Extent[]): void {
  if (extents.length === 0) throw new KcopydError('bad-count', 'at least one extent is needed');
  if (!dest.writable) throw new KcopydError('read-only', `destination ${dest.path} was opened read-only`, 'EBADF');
  for (const [i, e] of extents.entries()) {
    for (const [name, v] of [
      ['srcSector', e.srcSector],
      ['destSector', e.destSector],
    ] as const) {
      if (!Number.isSafeInteger(v) || v < 0) throw new KcopydError('bad-sector', `extent ${i}: ${name} ${v} is not a non-negative integer`);
    }
    if (!Number.isSafeInteger(e.count) || e.count <= 0)
      throw new KcopydError('bad-count', `extent ${i}: sector count must be a positive integer (got ${e.count})`);
    if (e.srcSector + e.count > src.sizeSectors) {
      throw new KcopydError(
        'out-of-range',
        `extent ${i}: source ${src.path} sectors ${e.srcSector}..${e.srcSector + e.count - 1} end beyond the device end (${src.sizeSectors} sectors)`,
        'ERANGE',
      );
    }
    if (e.destSector + e.count > dest.sizeSectors) {
      throw new KcopydError(
        'out-of-range',
        `extent ${i}: destination ${dest.path} sectors ${e.destSector}..${e.destSector + e.count - 1} end beyond the device end (${dest.sizeSectors} sectors)`,
        'ERANGE',
      );
    }
  }
  const byDest = [...extents].sort((a, b) => a.destSector - b.destSector);
  for (let i = 1; i < byDest.length; i++) {
    if (byDest[i].destSector < byDest[i - 1].destSector + byDest[i - 1].count) {
      throw new KcopydError('overlap', `extents overlap on the destination at sector ${byDest[i].destSector}`);
    }
  }
  if (src.identity === dest.identity) {
    const spans = [
      ...extents.map((e) => ({ start: e.srcSector, end: e.srcSector + e.count, src: true })),
      ...extents.map((e) => ({ start: e.destSector, end: e.destSector + e.count, src: false })),
    ].sort((a, b) => a.start - b.start);
    let srcEnd = -1;
    let destEnd = -1;
    for (const s of spans) {
      if (s.src ? s.start < destEnd : s.start < srcEnd) {
        throw new KcopydError('overlap', `an extent's destination overlaps a source range on ${dest.path} at sector ${s.start}`);
      }
      if (s.src) srcEnd = Math.max(srcEnd, s.end);
      else destEnd = Math.max(destEnd, s.end);
    }
  }
}

/** Pack extents (split to the sub-job size) into source spans of at most one sub-job. */
function groupExtents(extents: readonly Extent[], subJobSectors: number): Group[] {
  const pieces: Extent[] = [];
  for (const e of extents) {
    for (let done = 0; done < e.count; done += subJobSectors) {
      pieces.push({ srcSector: e.srcSector + done, destSector: e.destSector + done, count: Math.min(subJobSectors, e.count - done) });
    }
  }
  pieces.sort((a, b) => a.srcSector - b.srcSector || a.destSector - b.destSector);
  const groups: Group[] = [];
  let g: Group | undefined;
  for (const p of pieces) {
    const end = g ? g.srcSector + g.spanSectors : 0;
    const fits = g && p.srcSector >= end && p.srcSector - end <= MAX_GAP_SECTORS && p.srcSector + p.count - g.srcSector <= subJobSectors;
    if (!g || !fits) {
      g = { srcSector: p.srcSector, spanSectors: 0, sectors: 0, pieces: [] };
      groups.push(g);
    }
    g.pieces.push({
      spanOffset: (p.srcSector - g.srcSector) * SECTOR_BYTES,
      destByteOffset: p.destSector * SECTOR_BYTES,
      bytes: p.count * SECTOR_BYTES,
    });
    g.spanSectors = p.srcSector + p.count - g.srcSector;
    g.sectors += p.count;
  }
  return groups;
}

export interface ExtentJobSpec {
  src: BlockDevice;
  dest: BlockDevice;
  extents: readonly Extent[];
  flags: number;
  signal?: AbortSignal;
  onProgress?: (p: CopyProgress) => void;
}

/**
 * Many copies between one source and one destination device as one job:
 * extents close together on the source are read as one span and written
 * to their places with one native call, sub-jobs running concurrently as
 * in a copy job. Error reporting as copy(): readErr, writeErr bit 0.
 */
export class ExtentJob {
  private readonly groups: Group[];
  private readonly total: number;
  private next = 0;
  private aborted = false;
  /** Fired on abort; every sub-job's pacing sleep listens to it. */
  private readonly abortPacing = new AbortController();
  private broken = false;
  private readonly ignoreErrors: boolean;
  private result: CopyResult = { readErr: false, writeErr: 0, errors: [], sectorsDone: 0 };

  constructor(
    private readonly spec: ExtentJobSpec,
    private readonly res: JobResources & { pool: BufferPool },
  ) {
    checkExtents(spec.src, spec.dest, spec.extents);
    this.groups = groupExtents(spec.extents, res.subJobSectors);
    this.total = this.groups.reduce((n, g) => n + g.sectors, 0);
    this.ignoreErrors = (spec.flags & KcopydFlags.IGNORE_ERROR) !== 0;
  }

  /** Spans read (one native call each); exposed for tests and reports. */
  get spans(): number {
    return this.groups.length;
  }

  async run(): Promise<CopyResult> {
    const { signal } = this.spec;
    if (signal?.aborted) throw new AbortError(0, signal.reason);
    const onAbort = () => {
      this.aborted = true;
      this.abortPacing.abort();
    };
    setMaxListeners(this.res.subJobsPerJob + 1, this.abortPacing.signal);
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const workers = Math.min(this.res.subJobsPerJob, this.groups.length);
      await runSubJobs(
        workers,
        () => this.subJob(),
        () => (this.broken = true),
      );
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    if (this.aborted && this.result.sectorsDone < this.total) throw new AbortError(this.result.sectorsDone, signal?.reason);
    return this.result;
  }

  private get stopped(): boolean {
    return this.aborted || this.broken || ((this.result.readErr || this.result.writeErr !== 0) && !this.ignoreErrors);
  }

  private async subJob(): Promise<void> {
    while (!this.stopped && this.next < this.groups.length) {
      const g = this.groups[this.next++];
      const buf = await this.res.pool.acquire();
      try {
        const bytes = g.spanSectors * SECTOR_BYTES;
        await this.res.throttle.beforeIo(this.abortPacing.signal);
        if (this.res.rate && !this.stopped) await this.res.rate.admit(g.sectors * SECTOR_BYTES, this.abortPacing.signal);
        if (this.stopped) return;
        this.res.throttle.ioStarted();
        let r;
        try {
          r = await scatterCopy(this.spec.src, g.srcSector * SECTOR_BYTES, bytes, buf.subarray(0, bytes), this.spec.dest, g.pieces);
        } finally {
          this.res.throttle.ioFinished();
        }
        this.record(g, r.readError, r.writeError);
      } finally {
        this.res.pool.release(buf);
      }
    }
  }

  private record(g: Group, readError?: DeviceError, writeError?: DeviceError): void {
    if (readError) {
      this.result.readErr = true;
      this.result.errors.push(readError);
    }
    if (writeError) {
      this.result.writeErr |= 1;
      this.result.errors.push(writeError);
    }
    if (!readError && !writeError) {
      this.result.sectorsDone += g.sectors;
      this.spec.onProgress?.(copyProgress(this.result.sectorsDone, this.total));
    }
  }
}
