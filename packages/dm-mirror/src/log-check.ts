import { BlockDevice } from '@dmtool/devices';
import { Bitmap } from './bitmap';
import { LOG_BITMAP_BYTE, LOG_HEADER_BYTES, LOG_MAGIC, logBufferBytes } from './log-format';

/** Every kind of problem `checkLogImage` reports (docs/mirror-log-tools.md). */
export const LOG_PROBLEM_KINDS = [
  'log-truncated',
  'bad-magic',
  'bad-version',
  'bad-region-count',
  'region-count-mismatch',
  'surplus-bits',
  'unused-bytes',
  'trailing-bytes',
] as const;

export type LogProblemKind = (typeof LOG_PROBLEM_KINDS)[number];

export interface LogProblem {
  kind: LogProblemKind;
  /** Byte offset on the log device of the bytes at fault. */
  byteOffset: number;
  message: string;
}

export interface LogCheckResult {
  problems: LogProblem[];
  /** Set when the header could be read: the log's version, region count, and regions in sync. */
  version?: number;
  nrRegions?: number;
  inSync?: number;
}

/** The largest log buffer: 2^32 - 1 regions. */
const MAX_LOG_BYTES = logBufferBytes(0xffffffff, 4096);

/**
 * Read what a log check needs from the log device: the header, then the
 * whole buffer the header asks for (or as much of it as the device holds).
 */
export async function readLogBytes(log: BlockDevice): Promise<Buffer> {
  const headBytes = Math.min(log.sizeBytes, LOG_BITMAP_BYTE);
  const head = Buffer.alloc(headBytes);
  if (headBytes > 0) await log.read(head, 0, headBytes, 0);
  let want = headBytes;
  if (headBytes >= LOG_HEADER_BYTES) {
    const regions = head.readBigUInt64LE(8);
    const need = regions > 0n && regions <= 0xffffffffn ? logBufferBytes(Number(regions), log.logicalBlockSize) : LOG_BITMAP_BYTE;
    want = Math.min(log.sizeBytes, Math.max(need, LOG_BITMAP_BYTE), MAX_LOG_BYTES);
  }
  // Whole sectors: the device reads in sectors.
  want = Math.min(log.sizeBytes, Math.ceil(want / 512) * 512);
  const buf = Buffer.alloc(want);
  if (want > 0) await log.read(buf, 0, want, 0);
  return buf;
}

/**
 * Check a disk log buffer read from sector 0 against the rules of
 * docs/mirror-log-format.md, reporting every problem. Pure.
 */
export function checkLogImage(buf: Buffer, opts: { logicalBlockSize?: number; expectRegions?: number } = {}): LogCheckResult {
  const problems: LogProblem[] = [];
  if (buf.length < LOG_BITMAP_BYTE + 4) {
    problems.push({
      kind: 'log-truncated',
      byteOffset: buf.length,
      message: `the log is ${buf.length} bytes; a disk log needs at least ${LOG_BITMAP_BYTE + 4}`,
    });
    if (buf.length < LOG_HEADER_BYTES) return { problems };
  }
  const magic = buf.readUInt32LE(0);
  const version = buf.readUInt32LE(4);
  const regions = buf.readBigUInt64LE(8);
  if (magic !== LOG_MAGIC) {
    problems.push({
      kind: 'bad-magic',
      byteOffset: 0,
      message: `magic is 0x${magic.toString(16).padStart(8, '0')}, not 0x4d695272 ("MiRr")`,
    });
  }
  if (version !== 1 && version !== 2) problems.push({ kind: 'bad-version', byteOffset: 4, message: `version is ${version}, not 2 (or 1)` });
  if (regions === 0n || regions > 0xffffffffn) {
    problems.push({ kind: 'bad-region-count', byteOffset: 8, message: `nr_regions is ${regions}: between 1 and 4294967295 are possible` });
    return { problems, version };
  }
  const nrRegions = Number(regions);
  if (opts.expectRegions !== undefined && opts.expectRegions !== nrRegions) {
    problems.push({
      kind: 'region-count-mismatch',
      byteOffset: 8,
      message: `nr_regions is ${nrRegions}, the mirror has ${opts.expectRegions}`,
    });
  }
  const unused = firstNonZero(buf, LOG_HEADER_BYTES, Math.min(buf.length, LOG_BITMAP_BYTE));
  if (unused >= 0)
    problems.push({
      kind: 'unused-bytes',
      byteOffset: unused,
      message: `unused header byte ${unused} is not zero (a new log has zeros in bytes 16..1023)`,
    });
  const need = logBufferBytes(nrRegions, opts.logicalBlockSize);
  if (buf.length < need) {
    problems.push({
      kind: 'log-truncated',
      byteOffset: buf.length,
      message: `${nrRegions} regions need ${need} bytes, the log has ${buf.length}`,
    });
    return { problems, version, nrRegions };
  }
  const bitmapBytes = Bitmap.byteLength(nrRegions);
  const clean = new Bitmap(nrRegions, Uint8Array.from(buf.subarray(LOG_BITMAP_BYTE, LOG_BITMAP_BYTE + bitmapBytes)));
  if (clean.hasSurplusBits()) {
    const firstSurplusByte = LOG_BITMAP_BYTE + Math.floor(nrRegions / 8);
    problems.push({
      kind: 'surplus-bits',
      byteOffset: firstSurplusByte,
      message: `bits past region ${nrRegions - 1} are set (they are always 0; the kernel clears them)`,
    });
    clean.clearSurplus();
  }
  const trailing = firstNonZero(buf, LOG_BITMAP_BYTE + bitmapBytes, need);
  if (trailing >= 0)
    problems.push({
      kind: 'trailing-bytes',
      byteOffset: trailing,
      message: `byte ${trailing} after the bitmap is not zero (the buffer ends in zeros)`,
    });
  return { problems, version, nrRegions, inSync: clean.count() };
}

function firstNonZero(buf: Buffer, from: number, to: number): number {
  for (let i = from; i < to; i++) if (buf[i] !== 0) return i;
  return -1;
}
