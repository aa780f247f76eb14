import { binding } from './binding';
import { ScatterPiece } from './native-copy';

/** One span of a scatter list: `spanBytes` read at `srcByteOffset`, then its pieces written. */
export interface ScatterSpan {
  srcByteOffset: number;
  spanBytes: number;
  pieces: readonly ScatterPiece[];
}

export interface NativeScatterListDone {
  /** Spans read and written in full. */
  spansDone: number;
  /** Set when the read of span `spansDone` failed; `readBytes` of it were read. */
  readErrno: number;
  readBytes: number;
  /** Set when piece `failedPiece` of span `spansDone` failed; its earlier pieces were written. */
  writeErrno: number;
  failedPiece: number;
}

/**
 * Many scatter copies in one native call: each span is read into one of
 * the two buffers (alternately; each must hold the longest span) by one
 * thread while another writes the span before it, so all the writes come
 * from one thread. Spans are written in order; the call stops at the first
 * failed read or write. Buffered small writes into one file are cheapest
 * from one thread (docs/kcopyd.md, "Extent jobs"). Callers validate ranges
 * against the devices first.
 */
export function nativeScatterList(
  srcFd: number,
  destFd: number,
  bufs: readonly [Buffer, Buffer],
  spans: readonly ScatterSpan[],
): Promise<NativeScatterListDone> {
  const flatSpans = new Float64Array(spans.length * 3);
  let pieceCount = 0;
  spans.forEach((s, i) => {
    flatSpans[3 * i] = s.srcByteOffset;
    flatSpans[3 * i + 1] = s.spanBytes;
    flatSpans[3 * i + 2] = s.pieces.length;
    pieceCount += s.pieces.length;
  });
  const flatPieces = new Float64Array(pieceCount * 3);
  let k = 0;
  for (const s of spans) {
    for (const p of s.pieces) {
      flatPieces[k++] = p.spanOffset;
      flatPieces[k++] = p.destByteOffset;
      flatPieces[k++] = p.bytes;
    }
  }
  return new Promise((resolve) =>
    binding.scatterList(
      srcFd,
      destFd,
      bufs[0],
      bufs[1],
      flatSpans,
      flatPieces,
      (readErrno, readBytes, writeErrno, failedSpan, failedPiece) =>
        resolve({ spansDone: failedSpan < 0 ? spans.length : failedSpan, readErrno, readBytes, writeErrno, failedPiece }),
    ),
  );
}
