import * as path from 'path';
import { loadAddon } from './load-addon';

/** What `open` returns: errno 0 and the device, or only the errno. */
export interface NativeOpenResult {
  errno: number;
  fd: number;
  sizeBytes: number;
  logicalBlockSize: number;
  physicalBlockSize: number;
  isBlockDevice: boolean;
  dev: string;
  ino: string;
  rdev: string;
}

type DoneCallback = (errno: number, bytesDone: number) => void;
type ErrnoCallback = (errno: number) => void;

/**
 * The raw addon. It checks each argument's type, integer range and buffer
 * bounds itself and throws a TypeError or RangeError naming the argument
 * before any I/O; device ranges, alignment and every other rule are checked
 * by the TypeScript layer (`checkIo`, `checkRange`) before the call.
 */
export interface NativeBinding {
  /**
   * lockMode: 0 none, 1 shared, 2 exclusive (flock, never waiting). With
   * `create` a new regular file (O_CREAT | O_EXCL, mode 0666 less the
   * umask) of createBytes bytes, removed again if it cannot be locked or sized.
   */
  open(
    path: string,
    write: boolean,
    direct: boolean,
    exclusive: boolean,
    lockMode: number,
    create: boolean,
    createBytes: number,
  ): NativeOpenResult;
  /** lseek SEEK_DATA (hole false) or SEEK_HOLE; errno ENXIO when no data follows byteOffset. */
  seekExtent(fd: number, byteOffset: number, hole: boolean): { errno: number; byteOffset: number };
  lock(path: string, lockMode: number): { errno: number; fd: number };
  close(fd: number): number;
  allocAligned(bytes: number): Buffer;
  read(fd: number, buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, cb: DoneCallback): void;
  write(fd: number, buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, cb: DoneCallback): void;
  datasync(fd: number, cb: ErrnoCallback): void;
  zeroRange(fd: number, isBlockDevice: boolean, byteOffset: number, bytes: number, cb: ErrnoCallback): void;
  discard(fd: number, isBlockDevice: boolean, byteOffset: number, bytes: number, cb: ErrnoCallback): void;
  copyOut(
    srcFd: number,
    srcByteOffset: number,
    bytes: number,
    buf: Buffer,
    destFds: number[],
    destByteOffsets: number[],
    writeOnReadError: boolean,
    cb: (readErrno: number, readBytes: number, writeErrnos: number[]) => void,
  ): void;
  scatter(
    srcFd: number,
    srcByteOffset: number,
    spanBytes: number,
    buf: Buffer,
    destFd: number,
    pieces: Float64Array,
    cb: (readErrno: number, writeErrno: number, failedIndex: number) => void,
  ): void;
}

// The package folder (binding.gyp, build/, prebuilds/) is the parent of
// lib/ (tests run the sources) and of dist/ (the built package).
export const binding = loadAddon(path.join(__dirname, '..')) as NativeBinding;
