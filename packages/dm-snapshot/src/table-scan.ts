import { BlockDevice, SECTOR_BYTES } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { AreaEntries, decodeAreaInto } from './area';
import { SnapshotError } from './errors';
import { CowGeometry } from './geometry';

/**
 * The exception table read without holding it: areas are read forward, a
 * few in flight, and each is handed over and dropped. Memory is bounded by
 * the areas in flight and, for the duplicate checks, one bitmap window,
 * whatever the table's size (docs/snapshot-format.md#memory).
 */

/** The store's state as reading the table leaves it (docs/snapshot-format.md#validity). */
export interface TableShape {
  exceptions: number;
  currentArea: number;
  currentCommitted: number;
  /** Kernel next_free: one past the largest new_chunk (at least 2), past a metadata chunk. */
  nextFree: number;
}

/** The first chunk an empty COW allocates: chunk 0 is the header, chunk 1 metadata area 0. */
export const FIRST_FREE_CHUNK = 2;

/** Bytes of area buffers read ahead while scanning. */
const READ_AHEAD_BYTES = 4 << 20;
const MAX_AREAS_IN_FLIGHT = 16;
/** Bits of one duplicate-check bitmap window (8 MiB): the range of chunk numbers checked per pass. */
const WINDOW_BITS = 1 << 26;

/** The sector holding entry `slot` of area `area`, for error messages. */
function entrySector(g: CowGeometry, area: number, slot: number): number {
  return g.chunkToSector(g.areaChunk(area)) + Math.floor((slot * 16) / SECTOR_BYTES);
}

/** Refuse an entry that breaks a rule of one entry alone (docs/snapshot-format.md#validity). */
export function checkEntry(
  g: CowGeometry,
  path: string,
  area: number,
  slot: number,
  oldChunk: number,
  newChunk: number,
  originSectors?: number,
): void {
  // Built only for a refusal: this runs once per entry of tables of millions.
  const where = () => ({ path, sector: entrySector(g, area, slot), sectors: 1 });
  const entry = () => `area ${area} entry ${slot} (old ${oldChunk} → new ${newChunk})`;
  if (g.isMetadataChunk(newChunk)) {
    throw new SnapshotError('EINVAL', 'entry-in-metadata', `${entry()} points into a metadata chunk`, where());
  }
  if (newChunk + 1 > g.cowChunks) {
    throw new SnapshotError('EINVAL', 'entry-past-cow-end', `${entry()} points past the COW end (${g.cowChunks} chunks)`, where());
  }
  if (originSectors !== undefined && oldChunk * g.chunkSectors >= originSectors) {
    throw new SnapshotError(
      'EINVAL',
      'entry-past-origin-end',
      `${entry()} names an origin chunk beyond the origin end (${originSectors} sectors)`,
      where(),
    );
  }
}

export function duplicateOldChunkError(g: CowGeometry, path: string, index: number, oldChunk: number, newChunk: number): SnapshotError {
  const E = g.exceptionsPerArea;
  const area = Math.floor(index / E);
  const slot = index % E;
  return new SnapshotError(
    'EINVAL',
    'duplicate-old-chunk',
    `area ${area} entry ${slot} (old ${oldChunk} → new ${newChunk}) repeats origin chunk ${oldChunk}`,
    {
      path,
      sector: entrySector(g, area, slot),
      sectors: 1,
    },
  );
}

export function duplicateNewChunkError(g: CowGeometry, path: string, newChunk: number): SnapshotError {
  return new SnapshotError('EINVAL', 'duplicate-new-chunk', `two exceptions share COW chunk ${newChunk}`, {
    path,
    sector: g.chunkToSector(newChunk),
    sectors: g.chunkSectors,
  });
}

/**
 * Read areas from area 0 up to the first that is not full, in order, handing
 * each decoded area to `onArea`. Reads run ahead of decoding; an area that
 * would lie past the COW end is refused when the walk reaches it.
 */
export async function forEachArea(
  cow: BlockDevice,
  g: CowGeometry,
  onArea: (area: number, entries: AreaEntries) => void | Promise<void>,
): Promise<void> {
  // One set of arrays for every area: onArea must copy what it keeps.
  const entries: AreaEntries = {
    olds: new Float64Array(g.exceptionsPerArea),
    news: new Float64Array(g.exceptionsPerArea),
    count: 0,
    full: false,
  };
  const depth = Math.max(1, Math.min(MAX_AREAS_IN_FLIGHT, Math.floor(READ_AHEAD_BYTES / g.chunkBytes)));
  const inCow = (area: number) => g.areaChunk(area) + 1 <= g.cowChunks;
  // One buffer per read in flight, reused: area k is read into buffer k mod depth once area k - depth is decoded.
  const buffers = Array.from({ length: depth }, () => allocBuffer(g.chunkBytes));
  const reads = new Map<number, Promise<Buffer>>();
  let nextRead = 0;
  const readAhead = () => {
    while (reads.size < depth && inCow(nextRead)) {
      const buf = buffers[nextRead % depth];
      reads.set(
        nextRead,
        cow.read(buf, 0, g.chunkBytes, g.chunkToByte(g.areaChunk(nextRead))).then(() => buf),
      );
      nextRead++;
    }
  };
  try {
    for (let area = 0; ; area++) {
      if (!inCow(area)) {
        const chunk = g.areaChunk(area);
        throw new SnapshotError(
          'EINVAL',
          'area-past-cow-end',
          `metadata area ${area} at chunk ${chunk} lies beyond the COW end (${g.cowChunks} chunks): the table has no terminator`,
          { path: cow.path, sector: g.chunkToSector(chunk), sectors: g.chunkSectors },
        );
      }
      readAhead();
      const pending = reads.get(area);
      if (!pending) throw new Error(`area ${area} was not read`);
      const buf = await pending;
      reads.delete(area);
      decodeAreaInto(buf, g.exceptionsPerArea, area, entries, cow.path);
      await onArea(area, entries);
      if (!entries.full) return;
    }
  } finally {
    // Reads still in flight past the terminator: let them settle, their errors do not matter.
    await Promise.allSettled(reads.values());
  }
}

export interface ScanOptions {
  /** Origin size: entries whose old_chunk lies beyond it are refused. */
  originSectors?: number;
  /** Called for every entry in table order, after its own checks. */
  onEntry?: (index: number, oldChunk: number, newChunk: number) => void;
}

/**
 * Validate the whole table as PersistentStore.open does, and return its
 * shape, without holding it: one pass checks each entry and learns the
 * count, order and largest chunk numbers; duplicate old_chunks (and, for a
 * table not in allocation order, duplicate new_chunks) are found by further
 * passes, each over one window of chunk numbers marked in a bitmap.
 */
export async function scanTable(cow: BlockDevice, g: CowGeometry, opts: ScanOptions = {}): Promise<TableShape> {
  const E = g.exceptionsPerArea;
  let exceptions = 0;
  let monotonic = true;
  let lastNew = 0;
  let maxOld = -1;
  let nextFree = FIRST_FREE_CHUNK;
  let currentArea = 0;
  let currentCommitted = 0;
  await forEachArea(cow, g, (area, d) => {
    for (let i = 0; i < d.count; i++) {
      const oldChunk = d.olds[i];
      const newChunk = d.news[i];
      checkEntry(g, cow.path, area, i, oldChunk, newChunk, opts.originSectors);
      opts.onEntry?.(area * E + i, oldChunk, newChunk);
      if (newChunk <= lastNew) monotonic = false;
      lastNew = newChunk;
      if (oldChunk > maxOld) maxOld = oldChunk;
      if (nextFree <= newChunk) nextFree = newChunk + 1;
    }
    exceptions += d.count;
    if (!d.full) {
      currentArea = area;
      currentCommitted = d.count;
    }
  });
  await checkDistinctOldChunks(cow, g, maxOld);
  if (!monotonic) await checkDistinctNewChunks(cow, g);
  return { exceptions, currentArea, currentCommitted, nextFree: g.skipMetadata(nextFree) };
}

/** The first entry, in table order, whose old_chunk an earlier entry already names. */
async function checkDistinctOldChunks(cow: BlockDevice, g: CowGeometry, maxOld: number): Promise<void> {
  const E = g.exceptionsPerArea;
  let first: { index: number; oldChunk: number; newChunk: number } | undefined;
  const bits = new Uint8Array(Math.min(WINDOW_BITS, maxOld + 1 + 7) >>> 3);
  for (let base = 0; base <= maxOld; base += WINDOW_BITS) {
    bits.fill(0);
    await forEachArea(cow, g, (area, d) => {
      for (let i = 0; i < d.count; i++) {
        const k = d.olds[i] - base;
        if (k < 0 || k >= WINDOW_BITS) continue;
        const byte = k >>> 3;
        const bit = 1 << (k & 7);
        if (bits[byte] & bit) {
          const index = area * E + i;
          if (!first || index < first.index) first = { index, oldChunk: d.olds[i], newChunk: d.news[i] };
        }
        bits[byte] |= bit;
      }
    });
  }
  if (first) throw duplicateOldChunkError(g, cow.path, first.index, first.oldChunk, first.newChunk);
}

/** The smallest new_chunk two entries share (every new_chunk is below the COW's chunk count, checked before). */
async function checkDistinctNewChunks(cow: BlockDevice, g: CowGeometry): Promise<void> {
  const bits = new Uint8Array(Math.min(WINDOW_BITS, g.cowChunks + 7) >>> 3);
  for (let base = 0; base < g.cowChunks; base += WINDOW_BITS) {
    bits.fill(0);
    let smallest = Infinity;
    await forEachArea(cow, g, (_area, d) => {
      for (let i = 0; i < d.count; i++) {
        const newChunk = d.news[i];
        const k = newChunk - base;
        if (k < 0 || k >= WINDOW_BITS) continue;
        const byte = k >>> 3;
        const bit = 1 << (k & 7);
        if (bits[byte] & bit && newChunk < smallest) smallest = newChunk;
        bits[byte] |= bit;
      }
    });
    if (smallest !== Infinity) throw duplicateNewChunkError(g, cow.path, smallest);
  }
}
