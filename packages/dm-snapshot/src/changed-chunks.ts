import { BlockDevice, SECTOR_BYTES } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { decodeArea } from './area';
import { coalesceChunks, ChunkRange } from './delta';
import { SnapshotError } from './errors';
import { CowGeometry } from './geometry';
import { CowHeader } from './header';
import { readCowHeader } from './persistent-store';

/**
 * A COW's exceptions sorted by origin chunk: `olds[i]` is saved in COW
 * chunk `news[i]`. 16 bytes per exception once built.
 */
export interface ChangedChunks {
  header: CowHeader;
  geometry: CowGeometry;
  olds: Float64Array;
  news: Float64Array;
}

/**
 * Read a COW's table area by area and keep only the chunk pairs, sorted by
 * origin chunk: what an export needs, without the loader's hash table.
 * Applies the loader's rules (docs/snapshot-format.md#validity), with the
 * origin's size; an invalidated snapshot is refused, as its table stopped
 * recording changes.
 */
export async function readChangedChunks(cow: BlockDevice, origin: BlockDevice): Promise<ChangedChunks> {
  const { header, geometry: g } = await readCowHeader(cow, { origin });
  if (!header.valid) {
    throw new SnapshotError('EINVAL', 'snapshot-invalid', 'snapshot is invalid: its table no longer lists every changed chunk', {
      path: cow.path,
    });
  }
  let olds = new Float64Array(1024);
  let news = new Float64Array(1024);
  let n = 0;
  const buf = allocBuffer(g.chunkBytes);
  for (let area = 0; ; area++) {
    const chunk = g.areaChunk(area);
    const where = { path: cow.path, sector: g.chunkToSector(chunk), sectors: g.chunkSectors };
    if (chunk + 1 > g.cowChunks) {
      throw new SnapshotError(
        'EINVAL',
        'area-past-cow-end',
        `metadata area ${area} at chunk ${chunk} lies beyond the COW end (${g.cowChunks} chunks): the table has no terminator`,
        where,
      );
    }
    await cow.read(buf, 0, g.chunkBytes, g.chunkToByte(chunk));
    const decoded = decodeArea(buf, g.exceptionsPerArea, area, cow.path);
    for (let i = 0; i < decoded.olds.length; i++) {
      const oldChunk = decoded.olds[i];
      const newChunk = decoded.news[i];
      const entry = `area ${area} entry ${i} (old ${oldChunk} → new ${newChunk})`;
      const at = { path: cow.path, sector: where.sector + Math.floor((i * 16) / SECTOR_BYTES), sectors: 1 };
      if (g.isMetadataChunk(newChunk)) throw new SnapshotError('EINVAL', 'entry-in-metadata', `${entry} points into a metadata chunk`, at);
      if (newChunk + 1 > g.cowChunks)
        throw new SnapshotError('EINVAL', 'entry-past-cow-end', `${entry} points past the COW end (${g.cowChunks} chunks)`, at);
      if (oldChunk * g.chunkSectors >= origin.sizeSectors) {
        throw new SnapshotError(
          'EINVAL',
          'entry-past-origin-end',
          `${entry} names an origin chunk beyond the origin end (${origin.sizeSectors} sectors)`,
          at,
        );
      }
      if (n === olds.length) {
        olds = grow(olds);
        news = grow(news);
      }
      olds[n] = oldChunk;
      news[n] = newChunk;
      n++;
    }
    if (!decoded.full) break;
  }
  const sorted = sortByOld(olds.subarray(0, n), news.subarray(0, n));
  refuseRepeats(sorted.olds, 'duplicate-old-chunk', (c) => `two exceptions name origin chunk ${c}`, cow.path, g);
  const newsSorted = Float64Array.from(sorted.news).sort();
  refuseRepeats(newsSorted, 'duplicate-new-chunk', (c) => `two exceptions share COW chunk ${c}`, cow.path, g);
  return { header, geometry: g, olds: sorted.olds, news: sorted.news };
}

function grow(a: Float64Array): Float64Array<ArrayBuffer> {
  const b = new Float64Array(a.length * 2);
  b.set(a);
  return b;
}

/** The pairs ordered by old chunk (a table written in origin order, the usual case, is kept as it is). */
function sortByOld(olds: Float64Array, news: Float64Array): { olds: Float64Array; news: Float64Array } {
  let ascending = true;
  for (let i = 1; i < olds.length && ascending; i++) ascending = olds[i - 1] < olds[i];
  if (ascending) return { olds: olds.slice(), news: news.slice() };
  const order = new Uint32Array(olds.length);
  for (let i = 0; i < order.length; i++) order[i] = i;
  order.sort((a, b) => olds[a] - olds[b]);
  const o = new Float64Array(olds.length);
  const w = new Float64Array(olds.length);
  for (let i = 0; i < order.length; i++) {
    o[i] = olds[order[i]];
    w[i] = news[order[i]];
  }
  return { olds: o, news: w };
}

function refuseRepeats(
  sorted: Float64Array,
  reason: 'duplicate-old-chunk' | 'duplicate-new-chunk',
  message: (chunk: number) => string,
  path: string,
  g: CowGeometry,
): void {
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i] === sorted[i - 1]) {
      const sector = reason === 'duplicate-new-chunk' ? { sector: g.chunkToSector(sorted[i]), sectors: g.chunkSectors } : {};
      throw new SnapshotError('EINVAL', reason, message(sorted[i]), { path, ...sector });
    }
  }
}

/** The changed chunks as coalesced ranges. */
export function changedRanges(c: ChangedChunks): Generator<ChunkRange> {
  return coalesceChunks(c.olds);
}
