import { ExceptionTable } from './table';

/** A run of origin chunks: `start`, `start + 1`, …, `start + count - 1`. */
export interface ChunkRange {
  start: number;
  count: number;
}

/** Ascending chunk numbers as ranges, neighbours coalesced (repeats allowed). Pure. */
export function* coalesceChunks(sortedChunks: ArrayLike<number>): Generator<ChunkRange> {
  let start = -1;
  let count = 0;
  for (let i = 0; i < sortedChunks.length; i++) {
    const c = sortedChunks[i];
    if (count > 0 && c < start + count) continue;
    if (count > 0 && c === start + count) {
      count++;
      continue;
    }
    if (count > 0) yield { start, count };
    start = c;
    count = 1;
  }
  if (count > 0) yield { start, count };
}

/**
 * The origin chunks in which the snapshot differs from the origin (or may:
 * every exception's old chunk, whether the origin was written after the
 * copy or the snapshot itself was written), sorted and coalesced. Holds a
 * sorted copy of the old chunks (8 bytes per exception).
 */
export function deltaRanges(table: ExceptionTable): Generator<ChunkRange> {
  const olds = new Float64Array(table.size);
  for (let i = 0; i < table.size; i++) olds[i] = table.oldAt(i);
  olds.sort();
  return coalesceChunks(olds);
}
