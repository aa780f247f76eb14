import { lvmCrc } from './crc';
import { LvmError } from './errors';

/** The metadata area header's magic (lib/format_text/layout.h, FMTT_MAGIC). */
export const MDA_MAGIC = ' LVM2 x[5A%r0N*>';
export const MDA_VERSION = 1;
/** The header takes the first 512 bytes of the area; the circular text buffer is the rest. */
export const MDA_HEADER_BYTES = 512;
const RAW_LOCN_BYTES = 24;
const FIRST_RAW_LOCN_BYTE = 40;
/** raw_locn flag: this metadata area is ignored (`pvchange --metadataignore`). */
export const RAW_LOCN_IGNORED = 1;

/** Where a metadata text lies in its area: offset from the area start, size, CRC of the text. */
export interface RawLocation {
  byteOffset: number;
  sizeBytes: number;
  checksum: number;
  flags: number;
}

export interface MdaHeader {
  version: number;
  /** Absolute byte offset of the area on the PV (equals the PV header's entry). */
  startByte: number;
  sizeBytes: number;
  /** The committed metadata first; an empty list when the area holds none yet. */
  locations: RawLocation[];
}

/** One or two pieces of the text in absolute bytes: the second when the text wraps to the buffer start. */
export interface TextPiece {
  byteOffset: number;
  sizeBytes: number;
}

/** Decode and check the 512-byte header of a metadata area found at `areaByte`. */
export function decodeMdaHeader(bytes: Buffer, areaByte: number, path?: string): MdaHeader {
  if (bytes.length < MDA_HEADER_BYTES) throw new RangeError(`an mda header is ${MDA_HEADER_BYTES} bytes`);
  const place = { path, sector: Math.floor(areaByte / 512), sectors: 1 };
  const magic = bytes.toString('latin1', 4, 20);
  if (magic !== MDA_MAGIC) throw new LvmError('bad-mda-header', `metadata area magic ${JSON.stringify(magic)} is wrong`, place);
  const stored = bytes.readUInt32LE(0);
  const crc = lvmCrc(bytes.subarray(4, MDA_HEADER_BYTES));
  if (stored !== crc) {
    throw new LvmError(
      'mda-crc',
      `metadata area header checksum 0x${stored.toString(16)} does not match its contents (0x${crc.toString(16)})`,
      place,
    );
  }
  const version = bytes.readUInt32LE(20);
  if (version !== MDA_VERSION) throw new LvmError('bad-mda-header', `metadata area version ${version} is not ${MDA_VERSION}`, place);
  const startByte = Number(bytes.readBigUInt64LE(24));
  const sizeBytes = Number(bytes.readBigUInt64LE(32));
  if (startByte !== areaByte)
    throw new LvmError('bad-mda-header', `metadata area header says it starts at byte ${startByte}, found at ${areaByte}`, place);
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= MDA_HEADER_BYTES) {
    throw new LvmError('bad-mda-header', `metadata area size ${sizeBytes} bytes leaves no room for text`, place);
  }
  const locations: RawLocation[] = [];
  for (let at = FIRST_RAW_LOCN_BYTE; at + RAW_LOCN_BYTES <= MDA_HEADER_BYTES; at += RAW_LOCN_BYTES) {
    const byteOffset = Number(bytes.readBigUInt64LE(at));
    if (byteOffset === 0) break;
    locations.push({
      byteOffset,
      sizeBytes: Number(bytes.readBigUInt64LE(at + 8)),
      checksum: bytes.readUInt32LE(at + 16),
      flags: bytes.readUInt32LE(at + 20),
    });
  }
  return { version, startByte, sizeBytes, locations };
}

/**
 * Where the text of `loc` lies: the buffer runs from the end of the header to
 * the end of the area, and a text that reaches the end continues right after
 * the header (lib/format_text/format-text.c, the wrap of `_read_vg`).
 */
export function textPieces(header: MdaHeader, loc: RawLocation, path?: string): TextPiece[] {
  const place = { path, sector: Math.floor(header.startByte / 512), sectors: 1 };
  const bufferBytes = header.sizeBytes - MDA_HEADER_BYTES;
  if (!Number.isSafeInteger(loc.byteOffset) || loc.byteOffset < MDA_HEADER_BYTES || loc.byteOffset >= header.sizeBytes) {
    throw new LvmError(
      'bad-text-location',
      `metadata text offset ${loc.byteOffset} lies outside the area's buffer (${MDA_HEADER_BYTES}..${header.sizeBytes - 1})`,
      place,
    );
  }
  if (!Number.isSafeInteger(loc.sizeBytes) || loc.sizeBytes === 0 || loc.sizeBytes > bufferBytes) {
    throw new LvmError('bad-text-location', `metadata text size ${loc.sizeBytes} does not fit the ${bufferBytes}-byte buffer`, place);
  }
  const firstBytes = Math.min(loc.sizeBytes, header.sizeBytes - loc.byteOffset);
  const pieces: TextPiece[] = [{ byteOffset: header.startByte + loc.byteOffset, sizeBytes: firstBytes }];
  if (firstBytes < loc.sizeBytes) pieces.push({ byteOffset: header.startByte + MDA_HEADER_BYTES, sizeBytes: loc.sizeBytes - firstBytes });
  return pieces;
}

/** Join the pieces' bytes, check the CRC, and return the text (without the trailing NUL lvm2 may store). */
export function metadataText(pieces: Buffer[], loc: RawLocation, header: MdaHeader, path?: string): string {
  let crc: number | undefined;
  for (const p of pieces) crc = lvmCrc(p, crc);
  if (crc !== loc.checksum) {
    throw new LvmError(
      'text-crc',
      `metadata text checksum 0x${loc.checksum.toString(16)} does not match its ${loc.sizeBytes} bytes (0x${(crc ?? 0).toString(16)})`,
      { path, sector: Math.floor((header.startByte + loc.byteOffset) / 512), sectors: Math.ceil(loc.sizeBytes / 512) },
    );
  }
  const all = Buffer.concat(pieces);
  const end = all.indexOf(0);
  return all.toString('utf8', 0, end === -1 ? all.length : end);
}
