import { BlockDevice, SECTOR_BYTES } from '@dmtool/devices';
import { KcopydError } from './errors';

/** A run of sectors, as offsets from the start of a job's range. */
export interface SectorRange {
  startSector: number;
  count: number;
}

/**
 * What a destination gets where the source reads as zeros:
 * `skip` nothing (a file just created, all holes already),
 * `punch` a hole (a regular file that exists),
 * `zero` zeroRange (a block device: BLKZEROOUT, NBD write-zeroes),
 * `write` the zeros written as data.
 */
export type HoleAction = 'skip' | 'punch' | 'zero' | 'write';

/** A sparse copy: the source's holes are planned around, and optionally its all-zero blocks. */
export interface SparseCopy {
  /** One per destination, in the order of the destinations. */
  holes: readonly HoleAction[];
  /** Also treat every all-zero block of ZERO_BLOCK_SECTORS in the data as a hole (cp --sparse=always). */
  detectZeroBlocks: boolean;
}

/**
 * The granularity of holes and zero detection: 4 KiB, the page size and the
 * usual file-system block, so a hole never splits a block a file system
 * could not give back anyway, and O_DIRECT alignment is kept.
 */
export const ZERO_BLOCK_SECTORS = 8;

/** One piece of a job: a hole piece is only ever zeros on the source. */
export interface PlannedPiece {
  offsetSectors: number;
  count: number;
  hole: boolean;
}

/**
 * The pieces of a job over `count` sectors: only the parts in `todo` (all
 * of it when absent), cut where data and holes meet (`data` absent: all
 * data) and into pieces of at most `subJobSectors`. Pure.
 */
export function planPieces(
  count: number,
  subJobSectors: number,
  todo?: readonly SectorRange[],
  data?: readonly SectorRange[],
): PlannedPiece[] {
  const wanted = normalize(todo ?? [{ startSector: 0, count }], count);
  const dataRuns = data === undefined ? [{ startSector: 0, count }] : normalize(data, count);
  const pieces: PlannedPiece[] = [];
  for (const w of wanted) {
    const end = w.startSector + w.count;
    for (const run of classify(w.startSector, end, dataRuns)) {
      for (let at = run.start; at < run.end; at += subJobSectors) {
        pieces.push({ offsetSectors: at, count: Math.min(subJobSectors, run.end - at), hole: run.hole });
      }
    }
  }
  return pieces;
}

/** [start, end) split into data and hole runs along the sorted, disjoint data runs. */
function classify(start: number, end: number, dataRuns: readonly SectorRange[]): { start: number; end: number; hole: boolean }[] {
  const out: { start: number; end: number; hole: boolean }[] = [];
  let at = start;
  for (const d of dataRuns) {
    const dEnd = d.startSector + d.count;
    if (dEnd <= at) continue;
    if (d.startSector >= end) break;
    if (d.startSector > at) out.push({ start: at, end: d.startSector, hole: true });
    const stop = Math.min(dEnd, end);
    out.push({ start: Math.max(at, d.startSector), end: stop, hole: false });
    at = stop;
  }
  if (at < end) out.push({ start: at, end, hole: true });
  return out;
}

/** Sorted, merged, clipped to [0, count); refuses what is not a range of whole sectors. */
export function normalize(ranges: readonly SectorRange[], count: number): SectorRange[] {
  for (const r of ranges) {
    if (!Number.isSafeInteger(r.startSector) || r.startSector < 0 || !Number.isSafeInteger(r.count) || r.count < 0)
      throw new KcopydError('bad-count', `range ${r.startSector}+${r.count} is not a range of whole sectors`);
  }
  const sorted = ranges
    .map((r) => ({ startSector: r.startSector, end: Math.min(r.startSector + r.count, count) }))
    .filter((r) => r.end > r.startSector)
    .sort((a, b) => a.startSector - b.startSector);
  const merged: SectorRange[] = [];
  for (const r of sorted) {
    const last = merged[merged.length - 1];
    if (last && r.startSector <= last.startSector + last.count) {
      last.count = Math.max(last.count, r.end - last.startSector);
    } else {
      merged.push({ startSector: r.startSector, count: r.end - r.startSector });
    }
  }
  return merged;
}

/**
 * Where the source range holds data, as ranges from its start, widened to
 * whole ZERO_BLOCK_SECTORS blocks (widening data is always safe: it is
 * copied as it is). Undefined when the source cannot tell (not a regular
 * file): then everything is data.
 */
export async function sourceDataRuns(device: BlockDevice, sector: number, count: number): Promise<SectorRange[] | undefined> {
  const sparse = device.sparseFile?.();
  if (!sparse) return undefined;
  const extents = await sparse.dataExtents(sector * SECTOR_BYTES, count * SECTOR_BYTES);
  const runs = extents.map((e) => {
    const first = Math.floor((e.byteOffset / SECTOR_BYTES - sector) / ZERO_BLOCK_SECTORS) * ZERO_BLOCK_SECTORS;
    const end = Math.ceil(((e.byteOffset + e.bytes) / SECTOR_BYTES - sector) / ZERO_BLOCK_SECTORS) * ZERO_BLOCK_SECTORS;
    return { startSector: Math.max(0, first), count: Math.min(end, count) - Math.max(0, first) };
  });
  return normalize(runs, count);
}

/**
 * The all-zero and data runs of a buffer, in ZERO_BLOCK_SECTORS blocks (the
 * last may be shorter), as [offset, length, zero] in bytes.
 */
export function zeroBlockRuns(buf: Buffer, bytes: number): { byteOffset: number; bytes: number; zero: boolean }[] {
  const blockBytes = ZERO_BLOCK_SECTORS * SECTOR_BYTES;
  const runs: { byteOffset: number; bytes: number; zero: boolean }[] = [];
  for (let at = 0; at < bytes; at += blockBytes) {
    const n = Math.min(blockBytes, bytes - at);
    const zero = isZero(buf, at, n);
    const last = runs[runs.length - 1];
    if (last && last.zero === zero) last.bytes += n;
    else runs.push({ byteOffset: at, bytes: n, zero });
  }
  return runs;
}

const ZEROS = Buffer.alloc(ZERO_BLOCK_SECTORS * SECTOR_BYTES);

function isZero(buf: Buffer, at: number, n: number): boolean {
  return buf.compare(ZEROS, 0, n, at, at + n) === 0;
}
