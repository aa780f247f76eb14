import { BlockDevice } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { SnapshotError } from './errors';
import { checkChunkSectors, CowGeometry, ENTRY_BYTES } from './geometry';
import { SNAP_MAGIC } from './header';
import { RestorePlan } from './restore';
import { ExceptionTable } from './table';

export type DropReason =
  | 'entry-past-cow-end'
  | 'entry-in-metadata'
  | 'entry-past-origin-end'
  | 'duplicate-old-chunk'
  | 'duplicate-new-chunk'
  | 'stale-after-terminator';

export interface DroppedEntry {
  area: number;
  entry: number;
  oldChunk: number;
  newChunk: number;
  reason: DropReason;
}

export interface RepairPlan extends RestorePlan {
  /** Entries found in the areas read (holes not counted). */
  found: number;
  /** Entries recovered after a premature terminator (in the kernel's allocation order for their place). */
  recovered: number;
  dropped: number;
}

export interface RepairOptions {
  originSectors?: number;
  /** The chunk size to use when the header's is unusable. */
  chunkSectors?: number;
  /** Called for each entry left out of the rebuilt table. */
  onDrop?(d: DroppedEntry): void;
}

const TWO32 = 4294967296;

/**
 * Rebuild a COW's table (docs/snapshot-check.md#repair): read the areas as
 * the kernel would, drop every entry the loader would refuse (past the COW
 * or origin end, in a metadata chunk, a second use of an origin or COW
 * chunk: the first use is kept), skip holes (zeroed entries), and go on
 * past a premature terminator taking entries that sit where the kernel's
 * allocation order puts them, up to the first all-zero area. Every area is
 * read to the COW end, so that stale ones can be zeroed. Reads only; the
 * plan is written by restoreCow.
 */
export async function planRepair(cow: BlockDevice, opts: RepairOptions = {}): Promise<RepairPlan> {
  const head = allocBuffer(Math.max(512, cow.ioAlignmentBytes));
  if (cow.sizeBytes < head.length) throw new SnapshotError('ENOSPC', 'cow-too-small', 'COW is smaller than one sector', { path: cow.path });
  await cow.read(head, 0, head.length, 0);
  const headerChunk = head.readUInt32LE(12);
  const chunkSectors = opts.chunkSectors ?? headerChunk;
  checkChunkSectors(chunkSectors, [cow]);
  const magic = head.readUInt32LE(0);
  if (magic !== SNAP_MAGIC && opts.chunkSectors === undefined) {
    throw new SnapshotError('EINVAL', 'bad-magic', 'the COW has no SnAp header: give the chunk size to repair it as a COW', {
      path: cow.path,
      sector: 0,
      sectors: 1,
    });
  }
  const g = new CowGeometry(chunkSectors, cow.sizeSectors);
  if (g.cowChunks < 2)
    throw new SnapshotError('ENOSPC', 'cow-too-small', `COW of ${cow.sizeSectors} sectors cannot hold a header and an area`, {
      path: cow.path,
    });
  const E = g.exceptionsPerArea;
  const table = new ExceptionTable();
  const usedNew = new Uint8Array(Math.ceil(g.cowChunks / 8));
  const buf = allocBuffer(g.chunkBytes);
  let found = 0;
  let recovered = 0;
  let dropped = 0;
  let ended = false;
  let lastNonZeroArea = -1;
  const drop = (d: DroppedEntry) => {
    dropped++;
    opts.onDrop?.(d);
  };
  // Past the terminator, entries are taken only up to the first all-zero area: the kernel zeroes an area before
  // it uses it, so whatever lies beyond one is older than the table (an earlier table on the same device).
  let recovering = true;
  for (let area = 0; g.areaChunk(area) + 1 <= g.cowChunks; area++) {
    await cow.read(buf, 0, g.chunkBytes, g.chunkToByte(g.areaChunk(area)));
    let nonZero = false;
    for (let slot = 0; slot < E; slot++) {
      const at = slot * ENTRY_BYTES;
      const oldChunk = buf.readUInt32LE(at + 4) * TWO32 + buf.readUInt32LE(at);
      const newChunk = buf.readUInt32LE(at + 12) * TWO32 + buf.readUInt32LE(at + 8);
      if (oldChunk !== 0 || newChunk !== 0) nonZero = true;
      if (newChunk === 0) {
        ended = true;
        continue;
      }
      found++;
      const d = { area, entry: slot, oldChunk, newChunk };
      if (ended && (!recovering || newChunk !== g.dataChunkOfIndex(area * E + slot))) {
        drop({ ...d, reason: 'stale-after-terminator' });
        continue;
      }
      const reason = refuse(g, usedNew, table, oldChunk, newChunk, opts.originSectors);
      if (reason) {
        drop({ ...d, reason });
        continue;
      }
      usedNew[newChunk >>> 3] |= 1 << (newChunk & 7);
      table.append(oldChunk, newChunk);
      if (ended) recovered++;
    }
    if (nonZero) lastNonZeroArea = area;
    if (ended && !nonZero) recovering = false;
  }
  const areas = Math.floor(table.size / E) + 1;
  if (g.areaChunk(areas - 1) + 1 > g.cowChunks) {
    // Only possible when every area was full: the last entry cannot stay, its area is needed for the terminator.
    const oldChunk = table.oldAt(table.size - 1);
    const newChunk = table.newAt(table.size - 1);
    table.pop();
    drop({ area: areas - 2, entry: E - 1, oldChunk, newChunk, reason: 'entry-past-cow-end' });
  }
  return {
    header: { cowSectors: cow.sizeSectors, valid: magic !== SNAP_MAGIC || head.readUInt32LE(4) !== 0, chunkSectors },
    table,
    areas: Math.floor(table.size / E) + 1,
    zeroAreasTo: lastNonZeroArea + 1,
    found,
    recovered,
    dropped,
  };
}

function refuse(
  g: CowGeometry,
  usedNew: Uint8Array,
  table: ExceptionTable,
  oldChunk: number,
  newChunk: number,
  originSectors?: number,
): DropReason | undefined {
  if (!Number.isSafeInteger(newChunk) || newChunk + 1 > g.cowChunks) return 'entry-past-cow-end';
  if (g.isMetadataChunk(newChunk)) return 'entry-in-metadata';
  if (!Number.isSafeInteger(oldChunk) || (originSectors !== undefined && oldChunk * g.chunkSectors >= originSectors))
    return 'entry-past-origin-end';
  if (usedNew[newChunk >>> 3] & (1 << (newChunk & 7))) return 'duplicate-new-chunk';
  if (table.has(oldChunk)) return 'duplicate-old-chunk';
  return undefined;
}
