import { BlockDevice, SECTOR_BYTES } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { SnapshotError } from './errors';
import { checkChunkSectors, CowGeometry, ENTRY_BYTES } from './geometry';
import { DISK_VERSION, HEADER_BYTES, SNAP_MAGIC } from './header';
import { ExceptionTable } from './table';

/**
 * Every kind of problem `checkCow` reports (docs/snapshot-check.md). The
 * first group are the loader's own refusals; the rest are rules the kernel
 * never breaks when it writes a COW, so breaking them means damage.
 */
export const COW_PROBLEM_KINDS = [
  'cow-too-small',
  'not-formatted',
  'bad-magic',
  'bad-version',
  'bad-chunk-size',
  'no-terminator',
  'entry-in-metadata',
  'entry-past-cow-end',
  'entry-past-origin-end',
  'duplicate-old-chunk',
  'duplicate-new-chunk',
  'invalidated',
  'bad-valid-flag',
  'header-padding',
  'allocation-order',
  'stale-after-terminator',
  'stale-area',
  'header-area-mismatch',
] as const;

export type CowProblemKind = (typeof COW_PROBLEM_KINDS)[number];

export interface CowProblem {
  kind: CowProblemKind;
  /** Metadata area the problem is in (absent for the header and the device as a whole). */
  area?: number;
  /** Entry (slot) in that area. */
  entry?: number;
  /** Byte offset on the COW of the bytes at fault. */
  byteOffset: number;
  message: string;
}

export interface CowCheckOptions {
  /** Origin size: entries naming a chunk past it are reported. */
  originSectors?: number;
  /** The origin, for the chunk size / logical block size rule. */
  origin?: BlockDevice;
  /** Called for each problem as it is found, in COW order (duplicate COW chunks last). */
  onProblem(problem: CowProblem): void | Promise<void>;
}

export interface CowCheckSummary {
  /** The header's chunk size, when the header could be read. */
  chunkSectors?: number;
  /** The header's valid flag, when the header could be read. */
  valid?: boolean;
  /** Entries before the terminator (what the kernel loads). */
  exceptions: number;
  /** Metadata areas the table occupies (the last one holds the terminator). */
  areas: number;
  problems: number;
}

type Report = (p: CowProblem) => Promise<void>;

const TWO32 = 4294967296;
/** High words above this make a chunk number JS numbers cannot hold exactly (>= 2^53). */
const MAX_HI = 0x1fffff;

/**
 * Check a COW against every rule of docs/snapshot-format.md#validity and the
 * deeper ones of docs/snapshot-check.md, reporting every problem instead of
 * stopping at the first. Only reads; resolves to a summary. Throws only for
 * I/O errors (DeviceError).
 */
export async function checkCow(cow: BlockDevice, opts: CowCheckOptions): Promise<CowCheckSummary> {
  let problems = 0;
  const report = async (p: CowProblem) => {
    problems++;
    await opts.onProblem(p);
  };
  const summary = (s: Omit<CowCheckSummary, 'problems'>): CowCheckSummary => ({ ...s, problems });
  if (cow.sizeBytes < SECTOR_BYTES) {
    await report({ kind: 'cow-too-small', byteOffset: 0, message: `COW is ${cow.sizeBytes} bytes, smaller than one sector` });
    return summary({ exceptions: 0, areas: 0 });
  }
  const sector = allocBuffer(Math.max(SECTOR_BYTES, cow.ioAlignmentBytes));
  await cow.read(sector, 0, sector.length, 0);
  const magic = sector.readUInt32LE(0);
  const validWord = sector.readUInt32LE(4);
  const version = sector.readUInt32LE(8);
  const chunkSectors = sector.readUInt32LE(12);
  if (magic === 0) {
    await report({ kind: 'not-formatted', byteOffset: 0, message: 'magic is 0: the COW was never formatted (the kernel would format it)' });
    return summary({ exceptions: 0, areas: 0 });
  }
  if (magic !== SNAP_MAGIC) {
    await report({ kind: 'bad-magic', byteOffset: 0, message: `magic is ${hex32(magic)}, not ${hex32(SNAP_MAGIC)} ("SnAp")` });
  }
  if (version !== DISK_VERSION) {
    await report({ kind: 'bad-version', byteOffset: 8, message: `version is ${version}, not ${DISK_VERSION}` });
  }
  if (validWord === 0) {
    await report({
      kind: 'invalidated',
      byteOffset: 4,
      message: 'valid flag is 0: the snapshot was invalidated and the kernel will not use it',
    });
  } else if (validWord !== 1) {
    await report({ kind: 'bad-valid-flag', byteOffset: 4, message: `valid flag is ${validWord}, neither 0 nor 1 (read as valid)` });
  }
  try {
    checkChunkSectors(chunkSectors, opts.origin ? [cow, opts.origin] : [cow]);
  } catch (e) {
    if (!(e instanceof SnapshotError)) throw e;
    await report({
      kind: 'bad-chunk-size',
      byteOffset: 12,
      message: `header chunk size: ${e.message.replace(/^EINVAL: /, '').replace(/ \(.*\)$/, '')}`,
    });
    await reportOtherChunkSize(cow, chunkSectors, report);
    return summary({ valid: validWord !== 0, exceptions: 0, areas: 0 });
  }
  const g = new CowGeometry(chunkSectors, cow.sizeSectors);
  const base = { chunkSectors, valid: validWord !== 0 };
  if (g.cowChunks < 2) {
    await report({
      kind: 'cow-too-small',
      byteOffset: 0,
      message: `COW of ${cow.sizeSectors} sectors cannot hold the header and area 0 (${2 * chunkSectors} sectors)`,
    });
    return summary({ ...base, exceptions: 0, areas: 0 });
  }
  const chunk = allocBuffer(g.chunkBytes);
  await cow.read(chunk, 0, g.chunkBytes, 0);
  const padding = firstNonZero(chunk, HEADER_BYTES, g.chunkBytes);
  if (padding >= 0) {
    await report({
      kind: 'header-padding',
      byteOffset: padding,
      message: `header chunk byte ${padding} is not zero (the kernel writes zeros after byte 16)`,
    });
  }
  const table = await checkTable(cow, g, chunk, opts.originSectors, report);
  if (problems > 0) await reportOtherChunkSize(cow, chunkSectors, report);
  return summary({ ...base, ...table });
}

/** Chunk sizes tried when the table does not fit the header's: up to 1 MiB chunks (lvm2 allows up to 512 KiB). */
const GUESS_MAX_CHUNK_SECTORS = 2048;

/**
 * When the COW has problems, look for the chunk
 * size the areas were written with: one whose area 0 holds entries exactly
 * in the kernel's allocation order. A header edited or flipped to another
 * chunk size shows up here, and `snapshot-repair --chunk-size` can use it.
 */
async function reportOtherChunkSize(cow: BlockDevice, headerChunkSectors: number, report: Report): Promise<void> {
  for (let cs = 1; cs <= GUESS_MAX_CHUNK_SECTORS; cs *= 2) {
    if (cs === headerChunkSectors) continue;
    const g = new CowGeometry(cs, cow.sizeSectors);
    if (g.cowChunks < 3) break;
    const buf = allocBuffer(g.chunkBytes);
    const areaByte = g.chunkToByte(g.areaChunk(0));
    await cow.read(buf, 0, g.chunkBytes, areaByte);
    let entries = 0;
    for (; entries < g.exceptionsPerArea; entries++) {
      const newChunk = buf.readUInt32LE(entries * ENTRY_BYTES + 12) * TWO32 + buf.readUInt32LE(entries * ENTRY_BYTES + 8);
      if (newChunk === 0) break;
      if (newChunk !== g.dataChunkOfIndex(entries) || newChunk + 1 > g.cowChunks) {
        entries = -1;
        break;
      }
    }
    if (entries > 0) {
      await report({
        kind: 'header-area-mismatch',
        byteOffset: 12,
        message: `the areas fit chunk size ${cs} sectors (area 0 at byte ${areaByte} holds ${entries} entries in the kernel's allocation order), not the header's ${headerChunkSectors}`,
      });
      return;
    }
  }
}

/** Walk the areas up to the terminator, then what lies after it. */
async function checkTable(
  cow: BlockDevice,
  g: CowGeometry,
  buf: Buffer,
  originSectors: number | undefined,
  report: Report,
): Promise<{ exceptions: number; areas: number }> {
  const E = g.exceptionsPerArea;
  /** Membership of old chunks; typed arrays, so millions of entries stay small. */
  const seenOld = new ExceptionTable();
  const olds: number[] = [];
  const usedNew = new Uint8Array(Math.ceil(g.cowChunks / 8));
  const news: number[] = [];
  const duplicateNews: number[] = [];
  let j = 0;
  for (let area = 0; ; area++) {
    const areaChunk = g.areaChunk(area);
    const areaByte = g.chunkToByte(areaChunk);
    if (areaChunk + 1 > g.cowChunks) {
      await report({
        kind: 'no-terminator',
        area,
        entry: 0,
        byteOffset: areaByte,
        message: `area ${area} at chunk ${areaChunk} lies past the COW end (${g.cowChunks} chunks): the table has no terminator`,
      });
      return { exceptions: j, areas: area };
    }
    await cow.read(buf, 0, g.chunkBytes, areaByte);
    let slot = 0;
    let outOfOrder = 0;
    let firstOutOfOrder = -1;
    for (; slot < E; slot++, j++) {
      const at = slot * ENTRY_BYTES;
      const newLo = buf.readUInt32LE(at + 8);
      const newHi = buf.readUInt32LE(at + 12);
      if (newLo === 0 && newHi === 0) break;
      const oldLo = buf.readUInt32LE(at);
      const oldHi = buf.readUInt32LE(at + 4);
      const newChunk = newHi * TWO32 + newLo;
      const oldChunk = oldHi * TWO32 + oldLo;
      const byteOffset = areaByte + at;
      const where = { area, entry: slot, byteOffset };
      const entry = `area ${area} entry ${slot} (old ${oldChunk} → new ${newChunk})`;
      news.push(newChunk);
      olds.push(oldChunk);
      if (newHi > MAX_HI || newChunk + 1 > g.cowChunks) {
        await report({
          kind: 'entry-past-cow-end',
          ...where,
          byteOffset: byteOffset + 8,
          message: `${entry} points past the COW end (${g.cowChunks} chunks)`,
        });
      } else if (g.isMetadataChunk(newChunk)) {
        await report({ kind: 'entry-in-metadata', ...where, byteOffset: byteOffset + 8, message: `${entry} points into a metadata chunk` });
      } else {
        const bit = 1 << (newChunk & 7);
        if (usedNew[newChunk >>> 3] & bit) duplicateNews.push(j);
        usedNew[newChunk >>> 3] |= bit;
      }
      if (oldHi > MAX_HI || (originSectors !== undefined && oldChunk * g.chunkSectors >= originSectors)) {
        const end = originSectors === undefined ? 'any device' : `the origin end (${originSectors} sectors)`;
        await report({ kind: 'entry-past-origin-end', ...where, message: `${entry} names an origin chunk past ${end}` });
      }
      if (!seenOld.append(oldChunk, newChunk)) {
        await report({
          kind: 'duplicate-old-chunk',
          ...where,
          message: `${entry} repeats origin chunk ${oldChunk} of ${describeIndex(firstIndexOf(olds, j), E)}`,
        });
      }
      if (newChunk !== g.dataChunkOfIndex(j)) {
        if (outOfOrder++ === 0) firstOutOfOrder = slot;
      }
    }
    if (outOfOrder > 0) {
      const first = area * E + firstOutOfOrder;
      await report({
        kind: 'allocation-order',
        area,
        entry: firstOutOfOrder,
        byteOffset: areaByte + firstOutOfOrder * ENTRY_BYTES + 8,
        message: `area ${area}: ${outOfOrder} ${outOfOrder === 1 ? 'entry is' : 'entries are'} out of the kernel's allocation order, first entry ${firstOutOfOrder} (new ${news[first]}, expected ${g.dataChunkOfIndex(first)})`,
      });
    }
    if (slot < E) {
      await checkAfterTerminator(buf, g, area, slot, report);
      await checkStaleAreas(cow, g, buf, area + 1, report);
      await reportDuplicateNews(news, duplicateNews, g, report);
      return { exceptions: j, areas: area + 1 };
    }
  }
}

/** The rest of the last area, from the terminator's old_chunk on, is zero in what the kernel writes. */
async function checkAfterTerminator(buf: Buffer, g: CowGeometry, area: number, slot: number, report: Report): Promise<void> {
  const E = g.exceptionsPerArea;
  let stale = 0;
  let first = -1;
  for (let s = slot; s < E; s++) {
    if (firstNonZero(buf, s * ENTRY_BYTES, (s + 1) * ENTRY_BYTES) < 0) continue;
    if (stale++ === 0) first = s;
  }
  if (stale === 0) return;
  const byteOffset = g.chunkToByte(g.areaChunk(area)) + firstNonZero(buf, first * ENTRY_BYTES, g.chunkBytes);
  await report({
    kind: 'stale-after-terminator',
    area,
    entry: first,
    byteOffset,
    message: `area ${area}: ${stale} non-zero entries after the terminator (entry ${slot}), first entry ${first}: lost to the kernel`,
  });
}

/** Areas after the table's last one hold nothing in what the kernel writes on a zeroed COW. */
async function checkStaleAreas(cow: BlockDevice, g: CowGeometry, buf: Buffer, fromArea: number, report: Report): Promise<void> {
  for (let area = fromArea; g.areaChunk(area) + 1 <= g.cowChunks; area++) {
    const areaByte = g.chunkToByte(g.areaChunk(area));
    await cow.read(buf, 0, g.chunkBytes, areaByte);
    const firstByte = firstNonZero(buf, 0, g.chunkBytes);
    if (firstByte < 0) continue;
    let entries = 0;
    for (let s = 0; s < g.exceptionsPerArea; s++) if (firstNonZero(buf, s * ENTRY_BYTES, (s + 1) * ENTRY_BYTES) >= 0) entries++;
    const entry = Math.floor(firstByte / ENTRY_BYTES);
    await report({
      kind: 'stale-area',
      area,
      entry,
      byteOffset: areaByte + firstByte,
      message: `area ${area} after the table's end holds ${entries} non-zero entries, first entry ${entry}`,
    });
  }
}

async function reportDuplicateNews(news: number[], duplicates: number[], g: CowGeometry, report: Report): Promise<void> {
  const E = g.exceptionsPerArea;
  for (const j of duplicates) {
    const first = firstIndexOf(news, j);
    const area = Math.floor(j / E);
    const slot = j % E;
    await report({
      kind: 'duplicate-new-chunk',
      area,
      entry: slot,
      byteOffset: g.chunkToByte(g.areaChunk(area)) + slot * ENTRY_BYTES + 8,
      message: `area ${area} entry ${slot} (new ${news[j]}) shares COW chunk ${news[j]} with ${describeIndex(first, E)}`,
    });
  }
}

/** The first index before `limit` whose value equals the value at `limit` (duplicates are rare: a linear scan). */
function firstIndexOf(values: number[], limit: number): number {
  const v = values[limit];
  for (let k = 0; k < limit; k++) if (values[k] === v) return k;
  return limit;
}

function describeIndex(j: number, exceptionsPerArea: number): string {
  return `area ${Math.floor(j / exceptionsPerArea)} entry ${j % exceptionsPerArea}`;
}

function firstNonZero(buf: Buffer, from: number, to: number): number {
  for (let i = from; i < to; i++) if (buf[i] !== 0) return i;
  return -1;
}

function hex32(v: number): string {
  return `0x${v.toString(16).padStart(8, '0')}`;
}
