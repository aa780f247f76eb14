import { constants } from 'os';

const errnoNames = new Map<number, string>(
  Object.entries(constants.errno).map(([name, value]) => [value as number, name]),
);

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
};

/** The plain-words meaning of an errno name, as error messages show it. */
export function errnoHint(code: string): string {
  return hints[code] ?? 'error';
}

/**
 * An I/O error on one device. Carries the errno name, the device path, the
 * operation and the byte range, so callers can report it in one line.
 */
export class DeviceError extends Error {
  readonly code: string;
  readonly errno: number;
  readonly path: string;
  readonly op: DeviceOp;
  readonly byteOffset: number;
  readonly bytes: number;

  constructor(errno: number, op: DeviceOp, path: string, byteOffset = 0, bytes = 0, detail?: string) {
    const code = errnoName(errno);
    const where =
      bytes > 0 ? ` at sector ${Math.floor(byteOffset / 512)} (+${Math.ceil(bytes / 512)} sectors)` : '';
    super(`${code}: ${op} failed on ${path}${where}: ${detail ?? hints[code] ?? 'error'}`);
    this.name = 'DeviceError';
    this.code = code;
    this.errno = errno;
    this.path = path;
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
