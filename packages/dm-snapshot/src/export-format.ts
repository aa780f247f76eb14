import { createHash } from 'crypto';
import { SECTOR_BYTES } from '@dmtool/devices';
import { SnapshotError } from './errors';
import { MAX_CHUNK_SECTORS } from './geometry';

/**
 * The snapshot-export stream (docs/snapshot-export.md): a header, records of
 * whole origin chunks with their data, a trailer. Every integer is
 * little-endian and fixed width. Pure codecs; the reader and writer add I/O.
 */
export const EXPORT_MAGIC = 'DMTEXPRT';
export const EXPORT_TRAILER_MAGIC = 'DMTEXEND';
export const EXPORT_VERSION = 1;
export const EXPORT_HEADER_BYTES = 128;
export const RECORD_HEAD_BYTES = 24;
export const RECORD_DIGEST_BYTES = 32;
export const EXPORT_TRAILER_BYTES = 64;
/** A record carries at most this much data, or one chunk when a chunk is larger. */
export const RECORD_DATA_LIMIT_BYTES = 4 << 20;

/** Which data the records carry: the origin's now, or the snapshot's (the origin's at the snapshot's time). */
export type ExportData = 'origin' | 'snapshot';
const DATA_CODE: Record<ExportData, number> = { origin: 1, snapshot: 2 };

export interface ExportHeader {
  version: number;
  chunkSectors: number;
  data: ExportData;
  originSectors: number;
  /** Coalesced ranges of changed chunks. */
  rangeCount: number;
  chunkCount: number;
  recordCount: number;
  /** Most chunks one record holds. */
  recordChunks: number;
  /** The whole stream, trailer included. */
  streamBytes: number;
  /** Data bytes of all records together (the last origin chunk may be partial). */
  dataBytes: number;
  /** Identity of the COW it came from: its size, and its header's version. */
  cowSectors: number;
  cowVersion: number;
}

export interface RecordHead {
  /** First origin chunk. */
  start: number;
  /** Chunks (1..recordChunks). */
  count: number;
  /** Position in the stream, from 0. */
  index: number;
}

export interface ExportTrailer {
  recordCount: number;
  chunkCount: number;
  /** Bytes before the trailer. */
  bytesBefore: number;
  /** sha256 of the header and every record's digest, in order (hex). */
  digest: string;
}

function badStream(message: string): SnapshotError {
  return new SnapshotError('EINVAL', 'bad-stream', message);
}

function readU64(buf: Buffer, at: number, what: string): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw badStream(`${what} ${v} is absurdly large`);
  return Number(v);
}

function writeU64(buf: Buffer, at: number, v: number): void {
  buf.writeBigUInt64LE(BigInt(v), at);
}

/** Chunks in a record of a stream with this chunk size. */
export function recordChunksFor(chunkSectors: number): number {
  return Math.max(1, Math.floor(RECORD_DATA_LIMIT_BYTES / (chunkSectors * SECTOR_BYTES)));
}

/** Data bytes of the chunks [start, start + count) of an origin of `originSectors` (the last chunk may be cut by the origin end). */
export function chunkDataBytes(start: number, count: number, chunkSectors: number, originSectors: number): number {
  const first = start * chunkSectors;
  const end = Math.min((start + count) * chunkSectors, originSectors);
  return Math.max(0, end - first) * SECTOR_BYTES;
}

/** Stream bytes of a stream with these records and data. */
export function streamBytesFor(recordCount: number, dataBytes: number): number {
  return EXPORT_HEADER_BYTES + recordCount * (RECORD_HEAD_BYTES + RECORD_DIGEST_BYTES) + dataBytes + EXPORT_TRAILER_BYTES;
}

export function encodeExportHeader(h: ExportHeader): Buffer {
  const b = Buffer.alloc(EXPORT_HEADER_BYTES);
  b.write(EXPORT_MAGIC, 0, 'latin1');
  b.writeUInt32LE(h.version, 8);
  b.writeUInt32LE(EXPORT_HEADER_BYTES, 12);
  b.writeUInt32LE(h.chunkSectors, 16);
  b.writeUInt32LE(DATA_CODE[h.data], 20);
  writeU64(b, 24, h.originSectors);
  writeU64(b, 32, h.rangeCount);
  writeU64(b, 40, h.chunkCount);
  writeU64(b, 48, h.recordCount);
  b.writeUInt32LE(h.recordChunks, 56);
  writeU64(b, 64, h.streamBytes);
  writeU64(b, 72, h.dataBytes);
  writeU64(b, 80, h.cowSectors);
  b.writeUInt32LE(h.cowVersion, 88);
  createHash('sha256').update(b.subarray(0, 96)).digest().copy(b, 96);
  return b;
}

/**
 * Decode and check a header: magic, version, its own checksum, and that its
 * counts agree with each other (so the stream's length is known from it).
 */
export function decodeExportHeader(b: Buffer): ExportHeader {
  if (b.length < EXPORT_HEADER_BYTES) throw badStream(`the stream ends inside its header (${b.length} of ${EXPORT_HEADER_BYTES} bytes)`);
  const magic = b.toString('latin1', 0, 8);
  if (magic !== EXPORT_MAGIC)
    throw badStream(`not a snapshot-export stream: bad magic ${JSON.stringify(magic)} (expected "${EXPORT_MAGIC}")`);
  const version = b.readUInt32LE(8);
  if (version !== EXPORT_VERSION) throw badStream(`stream version ${version} is not supported (only ${EXPORT_VERSION})`);
  if (b.readUInt32LE(12) !== EXPORT_HEADER_BYTES) throw badStream(`header length ${b.readUInt32LE(12)} is not ${EXPORT_HEADER_BYTES}`);
  const sum = createHash('sha256').update(b.subarray(0, 96)).digest();
  if (!sum.equals(b.subarray(96, 128))) throw badStream('header checksum mismatch: the header is damaged');
  const chunkSectors = b.readUInt32LE(16);
  if (chunkSectors < 1 || chunkSectors > MAX_CHUNK_SECTORS || (chunkSectors & (chunkSectors - 1)) !== 0)
    throw badStream(`header: chunk size ${chunkSectors} sectors is not a power of two in 1..${MAX_CHUNK_SECTORS}`);
  const dataCode = b.readUInt32LE(20);
  const data = (Object.keys(DATA_CODE) as ExportData[]).find((k) => DATA_CODE[k] === dataCode);
  if (!data) throw badStream(`header: data kind ${dataCode} is neither 1 (origin) nor 2 (snapshot)`);
  const h: ExportHeader = {
    version,
    chunkSectors,
    data,
    originSectors: readU64(b, 24, 'origin size'),
    rangeCount: readU64(b, 32, 'range count'),
    chunkCount: readU64(b, 40, 'chunk count'),
    recordCount: readU64(b, 48, 'record count'),
    recordChunks: b.readUInt32LE(56),
    streamBytes: readU64(b, 64, 'stream length'),
    dataBytes: readU64(b, 72, 'data length'),
    cowSectors: readU64(b, 80, 'COW size'),
    cowVersion: b.readUInt32LE(88),
  };
  const originChunks = Math.ceil(h.originSectors / chunkSectors);
  const consistent =
    h.recordChunks === recordChunksFor(chunkSectors) &&
    h.chunkCount <= originChunks &&
    h.rangeCount <= h.recordCount &&
    h.recordCount <= h.chunkCount &&
    (h.chunkCount === 0) === (h.recordCount === 0) &&
    h.dataBytes <= h.chunkCount * chunkSectors * SECTOR_BYTES &&
    h.streamBytes === streamBytesFor(h.recordCount, h.dataBytes);
  if (!consistent) throw badStream('header: its counts and lengths contradict each other');
  return h;
}

export function encodeRecordHead(r: RecordHead): Buffer {
  const b = Buffer.alloc(RECORD_HEAD_BYTES);
  writeU64(b, 0, r.start);
  writeU64(b, 8, r.count);
  writeU64(b, 16, r.index);
  return b;
}

export function decodeRecordHead(b: Buffer): RecordHead {
  return { start: readU64(b, 0, 'record start'), count: readU64(b, 8, 'record chunk count'), index: readU64(b, 16, 'record index') };
}

export function encodeTrailer(t: ExportTrailer): Buffer {
  const b = Buffer.alloc(EXPORT_TRAILER_BYTES);
  b.write(EXPORT_TRAILER_MAGIC, 0, 'latin1');
  writeU64(b, 8, t.recordCount);
  writeU64(b, 16, t.chunkCount);
  writeU64(b, 24, t.bytesBefore);
  Buffer.from(t.digest, 'hex').copy(b, 32);
  return b;
}

export function decodeTrailer(b: Buffer): ExportTrailer {
  const magic = b.toString('latin1', 0, 8);
  if (magic !== EXPORT_TRAILER_MAGIC) throw badStream(`bad trailer magic ${JSON.stringify(magic)} (expected "${EXPORT_TRAILER_MAGIC}")`);
  return {
    recordCount: readU64(b, 8, 'trailer record count'),
    chunkCount: readU64(b, 16, 'trailer chunk count'),
    bytesBefore: readU64(b, 24, 'trailer byte count'),
    digest: b.subarray(32, 64).toString('hex'),
  };
}
