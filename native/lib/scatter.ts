import { binding } from './binding';
import { Device } from './device';
import { DeviceError } from './errors';
import { faults } from './faults';

/** One piece of a scatter copy: `bytes` at `spanOffset` in the source span go to `destByteOffset`. */
export interface ScatterPiece {
  spanOffset: number;
  destByteOffset: number;
  bytes: number;
}

export interface ScatterResult {
  readError?: DeviceError;
  writeError?: DeviceError;
  /** Pieces written before a write failed (all of them on success). */
  piecesDone: number;
}

/**
 * Read `spanBytes` of the source once, then write pieces of it to scattered
 * places of one destination, in one native call: many small copies (a
 * snapshot merge of random-order chunks) cost one thread-pool round trip per
 * span instead of one per piece. Stops at the first failed write.
 */
export async function scatterCopy(
  src: Device,
  srcByteOffset: number,
  spanBytes: number,
  buf: Buffer,
  dest: Device,
  pieces: readonly ScatterPiece[],
): Promise<ScatterResult> {
  src.checkIo('read', buf, 0, spanBytes, srcByteOffset);
  for (const p of pieces) {
    if (p.spanOffset < 0 || p.spanOffset + p.bytes > spanBytes) {
      throw new RangeError(`scatter piece [${p.spanOffset}, +${p.bytes}) lies outside the ${spanBytes}-byte span`);
    }
    dest.checkIo('write', buf, p.spanOffset, p.bytes, p.destByteOffset);
  }
  if (faults.active) return scatterStepwise(src, srcByteOffset, spanBytes, buf, dest, pieces);

  const flat = new Float64Array(pieces.length * 3);
  pieces.forEach((p, i) => {
    flat[3 * i] = p.spanOffset;
    flat[3 * i + 1] = p.destByteOffset;
    flat[3 * i + 2] = p.bytes;
  });
  const [readErrno, writeErrno, failed] = await new Promise<[number, number, number]>((resolve) =>
    binding.scatter(src.nativeFd, srcByteOffset, spanBytes, buf, dest.nativeFd, flat, (r, w, i) => resolve([r, w, i])),
  );
  if (readErrno !== 0) {
    return { readError: new DeviceError(readErrno, 'read', src.path, srcByteOffset, spanBytes), piecesDone: 0 };
  }
  if (writeErrno !== 0) {
    const p = pieces[failed];
    return { writeError: new DeviceError(writeErrno, 'write', dest.path, p.destByteOffset, p.bytes), piecesDone: failed };
  }
  return { piecesDone: pieces.length };
}

async function scatterStepwise(
  src: Device,
  srcByteOffset: number,
  spanBytes: number,
  buf: Buffer,
  dest: Device,
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
