import { BlockDevice, checkIo, DeviceError, NativeIoFailure } from '@dmtool/devices';
import { nativeScatter, nativeWrite, ScatterPiece } from '@dmtool/native';
import { copyPathCounters, hookFailure, onDescriptor } from './copy-out';

export { ScatterPiece };

export interface ScatterResult {
  readError?: DeviceError;
  writeError?: DeviceError;
  /** Pieces written before a write failed (all of them on success). */
  piecesDone: number;
}

/**
 * Read `spanBytes` of the source once, then write pieces of it to scattered
 * places of one destination: many small copies (a snapshot merge of
 * random-order chunks) cost one native call per span instead of one per
 * piece when both devices offer the native capability. Stops at the first
 * failed write.
 */
export async function scatterCopy(
  src: BlockDevice,
  srcByteOffset: number,
  spanBytes: number,
  buf: Buffer,
  dest: BlockDevice,
  pieces: readonly ScatterPiece[],
): Promise<ScatterResult> {
  checkIo(src, 'read', buf, 0, spanBytes, srcByteOffset);
  for (const p of pieces) {
    if (p.spanOffset < 0 || p.spanOffset + p.bytes > spanBytes) {
      throw new RangeError(`scatter piece [${p.spanOffset}, +${p.bytes}) lies outside the ${spanBytes}-byte span`);
    }
    checkIo(dest, 'write', buf, p.spanOffset, p.bytes, p.destByteOffset);
  }
  const srcEnd = src.nativeEndpoint?.();
  const destEnd = dest.nativeEndpoint?.();
  if (!srcEnd || !destEnd) {
    copyPathCounters.generic++;
    return scatterGeneric(src, srcByteOffset, spanBytes, buf, dest, pieces);
  }
  copyPathCounters.native++;
  const readFailure = hookFailure(srcEnd.hooks, 'read', srcByteOffset, spanBytes);
  if (readFailure) return { readError: readFailure.error, piecesDone: 0 };
  // The native call writes the pieces before the first one a decorator fails.
  let upTo = pieces.length;
  let failure: NativeIoFailure | undefined;
  for (let i = 0; i < pieces.length && !failure; i++) {
    failure = hookFailure(destEnd.hooks, 'write', pieces[i].destByteOffset, pieces[i].bytes);
    if (failure) upTo = i;
  }
  const onDest = pieces.slice(0, upTo).map((p) => ({ ...p, destByteOffset: onDescriptor(destEnd, p.destByteOffset) }));
  const done = await nativeScatter(srcEnd.fd, onDescriptor(srcEnd, srcByteOffset), spanBytes, buf, destEnd.fd, onDest);
  if (done.readErrno !== 0) {
    return { readError: new DeviceError(done.readErrno, 'read', src.path, srcByteOffset, spanBytes), piecesDone: 0 };
  }
  const written = done.writeErrno !== 0 ? done.failedIndex : upTo;
  for (let i = 0; i < written; i++) for (const h of destEnd.hooks) h.afterWrite();
  if (done.writeErrno !== 0) {
    const p = pieces[done.failedIndex];
    return { writeError: new DeviceError(done.writeErrno, 'write', dest.path, p.destByteOffset, p.bytes), piecesDone: done.failedIndex };
  }
  if (failure) {
    const p = pieces[upTo];
    if (failure.partialBytes > 0)
      await nativeWrite(destEnd.fd, buf, p.spanOffset, failure.partialBytes, onDescriptor(destEnd, p.destByteOffset));
    return { writeError: failure.error, piecesDone: upTo };
  }
  return { piecesDone: pieces.length };
}

async function scatterGeneric(
  src: BlockDevice,
  srcByteOffset: number,
  spanBytes: number,
  buf: Buffer,
  dest: BlockDevice,
  pieces: readonly ScatterPiece[],
): Promise<ScatterResult> {
  try {
    await src.read(buf, 0, spanBytes, srcByteOffset);
  } catch (e) {
    if (e instanceof DeviceError) return { readError: e, piecesDone: 0 };
    throw e;
  }
  for (let i = 0; i < pieces.length; i++) {
    try {
      await dest.write(buf, pieces[i].spanOffset, pieces[i].bytes, pieces[i].destByteOffset);
    } catch (e) {
      if (e instanceof DeviceError) return { writeError: e, piecesDone: i };
      throw e;
    }
  }
  return { piecesDone: pieces.length };
}
