import { binding } from './binding';

export interface NativeCopyOutDone {
  readErrno: number;
  readBytes: number;
  /** One per destination, 0 where the write succeeded. */
  writeErrnos: number[];
}

/**
 * One kcopyd sub-job in a single call on the thread pool: read `bytes` at
 * `srcByteOffset` once into `buf`, then write them to every destination in
 * parallel. A failed destination does not stop the others. With
 * `writeOnReadError` the destinations are written even if the read failed.
 * Callers validate ranges and buffers against the devices first.
 */
export function nativeCopyOut(
  srcFd: number,
  srcByteOffset: number,
  bytes: number,
  buf: Buffer,
  destFds: readonly number[],
  destByteOffsets: readonly number[],
  writeOnReadError: boolean,
): Promise<NativeCopyOutDone> {
  return new Promise((resolve) =>
    binding.copyOut(
      srcFd,
      srcByteOffset,
      bytes,
      buf,
      [...destFds],
      [...destByteOffsets],
      writeOnReadError,
      (readErrno, readBytes, writeErrnos) => resolve({ readErrno, readBytes, writeErrnos }),
    ),
  );
}

export interface NativeScatterDone {
  readErrno: number;
  writeErrno: number;
  /** Index of the piece whose write failed. */
  failedIndex: number;
}

/** One piece of a scatter: `bytes` at `spanOffset` in the span go to `destByteOffset`. */
export interface ScatterPiece {
  spanOffset: number;
  destByteOffset: number;
  bytes: number;
}

/**
 * Read a span of the source once, then write pieces of it to scattered
 * offsets of one destination, in one call; stops at the first failed write.
 */
export function nativeScatter(
  srcFd: number,
  srcByteOffset: number,
  spanBytes: number,
  buf: Buffer,
  destFd: number,
  pieces: readonly ScatterPiece[],
): Promise<NativeScatterDone> {
  const flat = new Float64Array(pieces.length * 3);
  pieces.forEach((p, i) => {
    flat[3 * i] = p.spanOffset;
    flat[3 * i + 1] = p.destByteOffset;
    flat[3 * i + 2] = p.bytes;
  });
  return new Promise((resolve) =>
    binding.scatter(srcFd, srcByteOffset, spanBytes, buf, destFd, flat, (readErrno, writeErrno, failedIndex) =>
      resolve({ readErrno, writeErrno, failedIndex }),
    ),
  );
}

/** A plain positional write by descriptor, resolving to an errno (0 on success). */
export function nativeWrite(fd: number, buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<number> {
  return new Promise((resolve) => binding.write(fd, buf, bufOffset, bytes, byteOffset, (errno) => resolve(errno)));
}
