import { constants } from 'os';
import { DmtoolError, ErrorKind } from './dmtool-error';

const errnoNames = new Map<number, string>(Object.entries(constants.errno).map(([name, value]) => [value as number, name]));

export function errnoName(errno: number): string {
  return errnoNames.get(errno) ?? `E${errno}`;
}

export type DeviceOp = 'open' | 'read' | 'write' | 'flush' | 'zero' | 'discard' | 'close';

const hints: Record<string, string> = {
  EBUSY: 'device is mounted or in use by another program',
  EWOULDBLOCK: 'locked by another process',
  EROFS: 'device is read-only',
  EPERM: 'operation not permitted (read-only device?)',
  EACCES: 'permission denied',
  ENOENT: 'no such file or device',
  ENOSPC: 'no space left on device',
  EIO: 'I/O error',
  ENODEV: 'not a regular file or block device',
  EINVAL: 'invalid argument (misaligned O_DIRECT I/O?)',
  ELOOP: 'too many levels of symbolic links',
  ENOTDIR: 'a path component is not a directory',
  ENAMETOOLONG: 'file name too long',
  ECONNREFUSED: 'connection refused (is the server running?)',
};

/** The plain-words meaning of an errno name, as error messages show it. */
export function errnoHint(code: string): string {
  return hints[code] ?? 'error';
}

/** Why a device failed: the operation that failed. */
export type DeviceErrorReason = `${DeviceOp}-failed`;

/** An open failing with one of these is a refusal of the device, not an I/O error. */
const REFUSED_OPEN_CODES = new Set([
  'ENOENT',
  'EBUSY',
  'EWOULDBLOCK',
  'EAGAIN',
  'EROFS',
  'EACCES',
  'EPERM',
  'ENODEV',
  'ENXIO',
  'ELOOP',
  'ENOTDIR',
  'ENAMETOOLONG',
  'ECONNREFUSED',
]);

/** A device refused (missing, busy, locked, read-only, …) or an I/O error. */
export function deviceErrorKind(op: DeviceOp, code: string): ErrorKind {
  return op === 'open' && REFUSED_OPEN_CODES.has(code) ? 'device-refused' : 'io';
}

/**
 * An I/O error on one device. Carries the errno name, the device path, the
 * operation and the byte range, so callers can report it in one line.
 */
export class DeviceError extends DmtoolError<DeviceErrorReason> {
  readonly errno: number;
  readonly op: DeviceOp;
  readonly byteOffset: number;
  readonly bytes: number;
  declare readonly path: string;

  constructor(errno: number, op: DeviceOp, path: string, byteOffset = 0, bytes = 0, detail?: string) {
    const code = errnoName(errno);
    const range = bytes > 0 ? { sector: Math.floor(byteOffset / 512), sectors: Math.ceil(bytes / 512) } : {};
    const where = range.sector !== undefined ? ` at sector ${range.sector} (+${range.sectors} sectors)` : '';
    super(
      deviceErrorKind(op, code),
      `${op}-failed`,
      code,
      `${code}: ${op} failed on ${path}${where}: ${detail ?? hints[code] ?? 'error'}`,
      {
        path,
        ...range,
      },
    );
    this.name = 'DeviceError';
    this.errno = errno;
    this.op = op;
    this.byteOffset = byteOffset;
    this.bytes = bytes;
  }
}

export function errnoOf(code: string): number {
  const n = (constants.errno as Record<string, number>)[code];
  if (n === undefined) throw new Error(`unknown errno name ${code}`);
  return n;
}

/**
 * A flush that completed, but cannot vouch for writes acknowledged before
 * it: the device lost them or may have (a network device whose server
 * restarted with them in a volatile cache). Reported once, by the first
 * flush after the loss; a caller that still holds the data writes again
 * what it wrote since its last successful flush and flushes again.
 */
export class UnflushedWritesLost extends DeviceError {
  constructor(path: string, detail: string) {
    super(errnoOf('EIO'), 'flush', path, 0, 0, detail);
    this.name = 'UnflushedWritesLost';
  }
}
