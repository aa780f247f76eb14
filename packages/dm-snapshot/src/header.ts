import { SnapshotError } from './errors';

/** "SnAp" read as a little-endian u32. */
export const SNAP_MAGIC = 0x70416e53;
export const DISK_VERSION = 1;
export const HEADER_BYTES = 16;

export interface CowHeader {
  magic: number;
  valid: boolean;
  version: number;
  chunkSectors: number;
}

/** What the first 16 bytes of a COW device hold. */
export type HeaderState = { kind: 'fresh' } | { kind: 'snapshot'; header: CowHeader };

/**
 * Decode the header (docs/snapshot-format.md#header). Magic 0 means a fresh COW the kernel would
 * format; any other foreign magic, a version other than 1 or a chunk size
 * that is not a power of two is refused with one error.
 */
export function decodeHeader(bytes: Buffer, path?: string): HeaderState {
  if (bytes.length < HEADER_BYTES) throw new RangeError(`header needs ${HEADER_BYTES} bytes`);
  const magic = bytes.readUInt32LE(0);
  if (magic === 0) return { kind: 'fresh' };
  if (magic !== SNAP_MAGIC) {
    throw new SnapshotError(
      'ENXIO',
      'bad-magic',
      `invalid or corrupt snapshot: bad magic 0x${magic.toString(16).padStart(8, '0')} (expected 0x${SNAP_MAGIC.toString(16)} "SnAp")`,
      { path, sector: 0, sectors: 1 },
    );
  }
  const validWord = bytes.readUInt32LE(4);
  const version = bytes.readUInt32LE(8);
  const chunkSectors = bytes.readUInt32LE(12);
  if (version !== DISK_VERSION) {
    throw new SnapshotError('EINVAL', 'bad-version', `unsupported COW version ${version} (only ${DISK_VERSION} exists)`, {
      path,
      sector: 0,
      sectors: 1,
    });
  }
  if (chunkSectors === 0 || (chunkSectors & (chunkSectors - 1)) !== 0) {
    throw new SnapshotError('EINVAL', 'bad-chunk-size', `COW header chunk size ${chunkSectors} is not a power of two`, {
      path,
      sector: 0,
      sectors: 1,
    });
  }
  return { kind: 'snapshot', header: { magic, valid: validWord !== 0, version, chunkSectors } };
}

/** Encode a whole header chunk: the 16 header bytes, zeros to the chunk end (as the kernel writes it). */
export function encodeHeader(into: Buffer, h: { valid: boolean; chunkSectors: number }): Buffer {
  into.fill(0);
  into.writeUInt32LE(SNAP_MAGIC, 0);
  into.writeUInt32LE(h.valid ? 1 : 0, 4);
  into.writeUInt32LE(DISK_VERSION, 8);
  into.writeUInt32LE(h.chunkSectors, 12);
  return into;
}
