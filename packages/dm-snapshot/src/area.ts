import { ENTRY_BYTES } from './geometry';
import { SnapshotError } from './errors';

const TWO32 = 4294967296;
/** Chunk numbers above this cannot be held exactly in a JS number. */
const MAX_HI = 0x1fffff;

/** Read one u64 LE chunk number; refuses values beyond 2^53. */
export function readChunk(buf: Buffer, byteOffset: number, what: () => string): number {
  const lo = buf.readUInt32LE(byteOffset);
  const hi = buf.readUInt32LE(byteOffset + 4);
  if (hi > MAX_HI)
    throw new SnapshotError(
      'EINVAL',
      'entry-past-cow-end',
      `${what()}: chunk number 0x${hi.toString(16)}${lo.toString(16).padStart(8, '0')} is absurdly large`,
    );
  return hi * TWO32 + lo;
}

export function writeChunk(buf: Buffer, byteOffset: number, chunk: number): void {
  buf.writeUInt32LE((chunk % TWO32) >>> 0, byteOffset);
  buf.writeUInt32LE(Math.floor(chunk / TWO32), byteOffset + 4);
}

export interface DecodedArea {
  /** Entries before the terminator, in order. */
  olds: number[];
  news: number[];
  /** True when no terminator was found (all E entries in use). */
  full: boolean;
}

/**
 * Decode one metadata area (docs/snapshot-format.md#exception-entries): entries up to the first new_chunk 0.
 * Only the format is checked here; the table checks the meaning.
 */
export function decodeArea(buf: Buffer, exceptionsPerArea: number, area: number, path?: string): DecodedArea {
  const olds: number[] = [];
  const news: number[] = [];
  for (let i = 0; i < exceptionsPerArea; i++) {
    const at = i * ENTRY_BYTES;
    const what = () => `${path ?? 'COW'} area ${area} entry ${i}`;
    const newChunk = readChunk(buf, at + 8, what);
    if (newChunk === 0) return { olds, news, full: false };
    olds.push(readChunk(buf, at, what));
    news.push(newChunk);
  }
  return { olds, news, full: true };
}

/** Entries of one area decoded into caller-owned arrays (no allocation per area): `count` entries before the terminator. */
export interface AreaEntries {
  olds: Float64Array;
  news: Float64Array;
  count: number;
  full: boolean;
}

/** decodeArea into `into` (arrays of at least `exceptionsPerArea` elements); the same checks, the same errors. */
export function decodeAreaInto(buf: Buffer, exceptionsPerArea: number, area: number, into: AreaEntries, path?: string): AreaEntries {
  into.count = 0;
  into.full = false;
  for (let i = 0; i < exceptionsPerArea; i++) {
    const at = i * ENTRY_BYTES;
    const newHi = buf.readUInt32LE(at + 12);
    const oldHi = buf.readUInt32LE(at + 4);
    if (newHi > MAX_HI || oldHi > MAX_HI) {
      // The rare case: let readChunk build the error (new_chunk is read first, as in decodeArea).
      const what = () => `${path ?? 'COW'} area ${area} entry ${i}`;
      if (readChunk(buf, at + 8, what) === 0) return into;
      readChunk(buf, at, what);
    }
    const newChunk = newHi * TWO32 + buf.readUInt32LE(at + 8);
    if (newChunk === 0) return into;
    into.olds[i] = oldHi * TWO32 + buf.readUInt32LE(at);
    into.news[i] = newChunk;
    into.count = i + 1;
  }
  into.full = true;
  return into;
}

/** Write entry `index` of an area buffer. */
export function encodeEntry(buf: Buffer, index: number, oldChunk: number, newChunk: number): void {
  writeChunk(buf, index * ENTRY_BYTES, oldChunk);
  writeChunk(buf, index * ENTRY_BYTES + 8, newChunk);
}

/** Zero entry `index` (both fields), as the kernel's clear_exception. */
export function clearEntry(buf: Buffer, index: number): void {
  buf.fill(0, index * ENTRY_BYTES, (index + 1) * ENTRY_BYTES);
}
