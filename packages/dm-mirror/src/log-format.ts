import { Bitmap } from './bitmap';
import { MirrorError } from './errors';

/**
 * The kernel's disk dirty log (drivers/md/dm-log.c), byte for byte:
 *
 *   0     u32 magic 0x4D695272 ("MiRr" as a little-endian number)
 *   4     u32 version (2; 1 is accepted and rewritten as 2)
 *   8     u64 nr_regions
 *   16    1008 unused bytes (written as read; a new log has zeros)
 *   1024  clean bitmap, ceil(nr_regions / 32) 32-bit LE words, 1 = clean
 *
 * The whole buffer, rounded up to the log device's logical block size, is
 * the unit of every read and write.
 */
export const LOG_MAGIC = 0x4d695272;
export const LOG_VERSION = 2;
export const LOG_HEADER_BYTES = 16;
/** Byte offset of the clean bitmap (sector 2). */
export const LOG_BITMAP_BYTE = 1024;

export interface DiskLogImage {
  version: number;
  nrRegions: number;
  /** Clean bits as stored (1 = clean / in sync). */
  clean: Bitmap;
  /** The 1008 unused header bytes, as read. */
  unused: Buffer;
  /** Surplus bits past nr_regions were set on disk (the kernel clears them). */
  hadSurplusBits: boolean;
}

/** Bytes of the log's I/O unit for nrRegions regions on a device with this logical block size. */
export function logBufferBytes(nrRegions: number, logicalBlockSize = 512): number {
  const block = Math.max(512, logicalBlockSize);
  return Math.ceil((LOG_BITMAP_BYTE + Bitmap.byteLength(nrRegions)) / block) * block;
}

export interface HeaderFields {
  magic: number;
  version: number;
  nrRegions: bigint;
}

export function readHeader(buf: Buffer): HeaderFields {
  if (buf.length < LOG_HEADER_BYTES) throw new RangeError('a log header needs 16 bytes');
  return { magic: buf.readUInt32LE(0), version: buf.readUInt32LE(4), nrRegions: buf.readBigUInt64LE(8) };
}

export interface DecodeOptions {
  /** Device path, for messages. */
  path?: string;
  /** Regions the mirror has; when given, nr_regions must equal it. */
  expectRegions?: number;
  /** Bytes available on the log device (default: buf.length). */
  deviceBytes?: number;
  logicalBlockSize?: number;
}

/**
 * Decode and validate a disk log read from sector 0. `buf` must hold at
 * least the header; the bitmap is taken from it when long enough. Every
 * defect becomes one MirrorError naming the device and the sectors.
 */
export function decodeDiskLog(buf: Buffer, opts: DecodeOptions = {}): DiskLogImage {
  const where = opts.path ?? 'log';
  const deviceBytes = opts.deviceBytes ?? buf.length;
  if (deviceBytes < LOG_BITMAP_BYTE || buf.length < LOG_HEADER_BYTES) {
    throw new MirrorError(
      'EBADMSG',
      'log-truncated',
      `dirty log ${where} is truncated: ${deviceBytes} bytes, a disk log needs at least ${LOG_BITMAP_BYTE + 4} (sectors 0..2)`,
      {
        path: opts.path,
        sector: 0,
        sectors: 3,
      },
    );
  }
  const h = readHeader(buf);
  if (h.magic !== LOG_MAGIC) {
    throw new MirrorError(
      'EBADMSG',
      'bad-magic',
      `dirty log ${where} has bad magic 0x${h.magic.toString(16).padStart(8, '0')} at sector 0 (expected 0x4d695272, "MiRr"): not a dm-mirror disk log`,
      { path: opts.path, sector: 0, sectors: 1 },
    );
  }
  if (h.version !== 1 && h.version !== 2) {
    throw new MirrorError('EBADMSG', 'bad-version', `dirty log ${where} has unsupported version ${h.version} at sector 0 (expected 2)`, {
      path: opts.path,
      sector: 0,
      sectors: 1,
    });
  }
  if (h.nrRegions === 0n || h.nrRegions > BigInt(0xffffffff)) {
    throw new MirrorError('EBADMSG', 'bad-region-count', `dirty log ${where} has an impossible nr_regions ${h.nrRegions} at sector 0`, {
      path: opts.path,
      sector: 0,
      sectors: 1,
    });
  }
  const nrRegions = Number(h.nrRegions);
  if (opts.expectRegions !== undefined && nrRegions !== opts.expectRegions) {
    throw new MirrorError(
      'EINVAL',
      'region-count-mismatch',
      `dirty log ${where} records ${nrRegions} regions at sector 0, but the mirror has ${opts.expectRegions}: wrong region count for the leg size or region size`,
      { path: opts.path, sector: 0, sectors: 1 },
    );
  }
  const need = logBufferBytes(nrRegions, opts.logicalBlockSize);
  if (deviceBytes < need || buf.length < LOG_BITMAP_BYTE + Bitmap.byteLength(nrRegions)) {
    const have = Math.min(deviceBytes, buf.length);
    throw new MirrorError(
      'EBADMSG',
      'log-truncated',
      `dirty log ${where} is truncated: ${nrRegions} regions need sectors 0..${need / 512 - 1} (${need} bytes), only ${have} bytes are there`,
      { path: opts.path, sector: 0, sectors: need / 512 },
    );
  }
  const bitmapBytes = Bitmap.byteLength(nrRegions);
  const stored = new Uint8Array(bitmapBytes);
  stored.set(buf.subarray(LOG_BITMAP_BYTE, LOG_BITMAP_BYTE + bitmapBytes));
  const clean = new Bitmap(nrRegions, stored);
  const hadSurplusBits = clean.hasSurplusBits();
  clean.clearSurplus();
  return {
    version: h.version,
    nrRegions,
    clean,
    unused: Buffer.from(buf.subarray(LOG_HEADER_BYTES, LOG_BITMAP_BYTE)),
    hadSurplusBits,
  };
}

/**
 * Encode the log buffer exactly as the kernel writes it: header (version 2),
 * the unused area (zeros unless given), the clean bitmap with surplus bits
 * 0, zeros to the end of the last logical block.
 */
export function encodeDiskLog(nrRegions: number, clean: Bitmap, logicalBlockSize = 512, unused?: Buffer, into?: Buffer): Buffer {
  if (clean.bits !== nrRegions) throw new RangeError(`bitmap has ${clean.bits} bits for ${nrRegions} regions`);
  const bytes = logBufferBytes(nrRegions, logicalBlockSize);
  const buf = into ?? Buffer.alloc(bytes);
  if (buf.length < bytes) throw new RangeError(`log buffer of ${buf.length} bytes is too small (${bytes} needed)`);
  buf.fill(0, 0, bytes);
  buf.writeUInt32LE(LOG_MAGIC, 0);
  buf.writeUInt32LE(LOG_VERSION, 4);
  buf.writeBigUInt64LE(BigInt(nrRegions), 8);
  if (unused) Buffer.from(unused).copy(buf, LOG_HEADER_BYTES, 0, LOG_BITMAP_BYTE - LOG_HEADER_BYTES);
  clean.clearSurplus();
  buf.set(clean.bytes, LOG_BITMAP_BYTE);
  return buf.subarray(0, bytes);
}
