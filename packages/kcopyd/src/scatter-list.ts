import { BlockDevice, DeviceError, errnoOf, NativeEndpoint } from '@dmtool/devices';
import { nativeScatterList, ScatterSpan } from '@dmtool/native';
import { copyPathCounters, onDescriptor } from './copy-out';

export { ScatterSpan };

export interface ScatterListResult {
  /** Spans whose reads and writes all completed, from the first. */
  spansDone: number;
  readError?: DeviceError;
  writeError?: DeviceError;
}

/** Both devices' descriptors, when both offer the native capability with no decorator watching their I/O. */
export interface ScatterListEnds {
  src: NativeEndpoint;
  dest: NativeEndpoint;
}

/**
 * The descriptors for scatterListCopy, or undefined where it does not apply:
 * a device without the native capability, or one whose decorators hook
 * native I/O (fault injection, crash points count and fail each write, so
 * those take scatterCopy's one span per call).
 */
export function scatterListEnds(src: BlockDevice, dest: BlockDevice): ScatterListEnds | undefined {
  const srcEnd = src.nativeEndpoint?.();
  const destEnd = dest.nativeEndpoint?.();
  if (!srcEnd || !destEnd || srcEnd.hooks.length > 0 || destEnd.hooks.length > 0) return undefined;
  return { src: srcEnd, dest: destEnd };
}

/**
 * Many scatter copies in one native call: each span is read from the
 * source into one of `bufs` while the span before is written from the
 * other; every write comes from one thread, span after span, and the call
 * stops at the first failure. Spans and
 * pieces must already be checked against both devices (ExtentJob does).
 */
export async function scatterListCopy(
  src: BlockDevice,
  dest: BlockDevice,
  ends: ScatterListEnds,
  bufs: readonly [Buffer, Buffer],
  spans: readonly ScatterSpan[],
): Promise<ScatterListResult> {
  copyPathCounters.nativeLists++;
  const onDesc = spans.map((s) => ({
    srcByteOffset: onDescriptor(ends.src, s.srcByteOffset),
    spanBytes: s.spanBytes,
    pieces: s.pieces.map((p) => ({ ...p, destByteOffset: onDescriptor(ends.dest, p.destByteOffset) })),
  }));
  const done = await nativeScatterList(ends.src.fd, ends.dest.fd, bufs, onDesc);
  if (done.readErrno !== 0) {
    const s = spans[done.spansDone];
    const detail = done.readErrno === errnoOf('EIO') && done.readBytes < s.spanBytes ? 'device ended before the range did' : undefined;
    return {
      spansDone: done.spansDone,
      readError: new DeviceError(done.readErrno, 'read', src.path, s.srcByteOffset, s.spanBytes, detail),
    };
  }
  if (done.writeErrno !== 0) {
    const p = spans[done.spansDone].pieces[done.failedPiece];
    return { spansDone: done.spansDone, writeError: new DeviceError(done.writeErrno, 'write', dest.path, p.destByteOffset, p.bytes) };
  }
  return { spansDone: spans.length };
}
