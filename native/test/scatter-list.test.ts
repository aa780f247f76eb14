import * as fs from 'fs';
import * as path from 'path';
import { makeImage, patternBytes, readRange } from '../../test/support/images';
import { describeLoop, makeLoop, removeDir, tempDir } from '../../test/support/loop';
import { nativeScatterList, ScatterSpan } from '@dmtool/native';

const SRC_SECTORS = 2048; // 1 MiB
const DEST_BYTES = 1 << 20;

/** What `dest` holds after the spans' pieces (the first `upTo` of them) land on a `seed` image. */
function expectedDest(seed: string, spans: readonly ScatterSpan[], upTo = Infinity): Buffer {
  const out = patternBytes(seed, 0, DEST_BYTES / 512);
  const src = patternBytes('SRC', 0, SRC_SECTORS);
  let n = 0;
  for (const s of spans) {
    for (const p of s.pieces) {
      if (n++ >= upTo) return out;
      src.copy(out, p.destByteOffset, s.srcByteOffset + p.spanOffset, s.srcByteOffset + p.spanOffset + p.bytes);
    }
  }
  return out;
}

/** Spans of 64 KiB from `first`, each scattering its sixteen 4 KiB blocks to destination blocks in a fixed shuffled order. */
function shuffledSpans(first: number, count: number): ScatterSpan[] {
  return Array.from({ length: count }, (_, s) => ({
    srcByteOffset: (first + s) * 65536,
    spanBytes: 65536,
    pieces: Array.from({ length: 16 }, (_, i) => ({
      spanOffset: i * 4096,
      destByteOffset: ((((first + s) * 16 + i) * 37) % 256) * 4096,
      bytes: 4096,
    })),
  }));
}

describe('nativeScatterList', () => {
  let dir: string;
  let srcFd: number;
  const bufs: [Buffer, Buffer] = [Buffer.alloc(65536), Buffer.alloc(65536)];

  beforeEach(() => {
    dir = tempDir();
    makeImage(path.join(dir, 'src.img'), SRC_SECTORS * 512, 'SRC');
    makeImage(path.join(dir, 'dest.img'), DEST_BYTES, 'DST');
    srcFd = fs.openSync(path.join(dir, 'src.img'), 'r');
  });
  afterEach(() => {
    fs.closeSync(srcFd);
    removeDir(dir);
  });

  it('writes every piece of every span where it belongs and nothing else', async () => {
    const spans: ScatterSpan[] = [
      ...shuffledSpans(0, 12),
      // Pieces of odd sizes and offsets, some out of order, one span read but with no pieces.
      {
        srcByteOffset: 900_000,
        spanBytes: 5000,
        pieces: [
          { spanOffset: 4000, destByteOffset: 3, bytes: 1000 },
          { spanOffset: 0, destByteOffset: DEST_BYTES - 512, bytes: 512 },
        ],
      },
      { srcByteOffset: 12345, spanBytes: 777, pieces: [] },
    ];
    const destFd = fs.openSync(path.join(dir, 'dest.img'), 'r+');
    try {
      const done = await nativeScatterList(srcFd, destFd, bufs, spans);
      expect(done).toEqual({ spansDone: spans.length, readErrno: 0, readBytes: 0, writeErrno: 0, failedPiece: -1 });
    } finally {
      fs.closeSync(destFd);
    }
    expect(readRange(path.join(dir, 'dest.img'), 0, DEST_BYTES).equals(expectedDest('DST', spans))).toBe(true);
  });

  it('stops at a span whose read comes up short: EIO, the bytes read, its pieces not written', async () => {
    const spans: ScatterSpan[] = [
      ...shuffledSpans(0, 2),
      { srcByteOffset: SRC_SECTORS * 512 - 4096, spanBytes: 8192, pieces: [{ spanOffset: 0, destByteOffset: 0, bytes: 4096 }] },
      ...shuffledSpans(3, 1),
    ];
    const destFd = fs.openSync(path.join(dir, 'dest.img'), 'r+');
    try {
      const done = await nativeScatterList(srcFd, destFd, bufs, spans);
      expect(done).toEqual({ spansDone: 2, readErrno: 5 /* EIO */, readBytes: 4096, writeErrno: 0, failedPiece: -1 });
    } finally {
      fs.closeSync(destFd);
    }
    expect(readRange(path.join(dir, 'dest.img'), 0, DEST_BYTES).equals(expectedDest('DST', spans, 32))).toBe(true);
  });

  it('reports a destination that refuses writes at its first piece, with nothing written', async () => {
    const destFd = fs.openSync(path.join(dir, 'dest.img'), 'r');
    try {
      const done = await nativeScatterList(srcFd, destFd, bufs, shuffledSpans(0, 3));
      expect(done).toEqual({ spansDone: 0, readErrno: 0, readBytes: 0, writeErrno: 9 /* EBADF */, failedPiece: 0 });
    } finally {
      fs.closeSync(destFd);
    }
    expect(readRange(path.join(dir, 'dest.img'), 0, DEST_BYTES).equals(patternBytes('DST', 0, DEST_BYTES / 512))).toBe(true);
  });

  describeLoop('on a block device', () => {
    it('reports the piece whose write runs past the device end (ENOSPC after a short write); the pieces before it landed', async () => {
      const loop = makeLoop(dir, 'small.img', 256 * 1024);
      try {
        const spans = shuffledSpans(0, 4).map((s) => ({
          ...s,
          pieces: s.pieces.map((p) => ({ ...p, destByteOffset: p.destByteOffset % (256 * 1024) })),
        }));
        // Span 2, piece 5: 4 KiB starting 2 KiB before the end of the 256 KiB device.
        spans[2].pieces[5] = { spanOffset: 5 * 4096, destByteOffset: 256 * 1024 - 2048, bytes: 4096 };
        const destFd = fs.openSync(loop.path, 'r+');
        try {
          const done = await nativeScatterList(srcFd, destFd, bufs, spans);
          expect(done).toEqual({ spansDone: 2, readErrno: 0, readBytes: 0, writeErrno: 28 /* ENOSPC */, failedPiece: 5 });
          fs.fsyncSync(destFd);
        } finally {
          fs.closeSync(destFd);
        }
        // Every piece before the failing one, and the failing piece's first 2 KiB (the short write), in place; zeros elsewhere.
        const want = Buffer.alloc(256 * 1024);
        const src = patternBytes('SRC', 0, SRC_SECTORS);
        const landed = spans.flatMap((s) => s.pieces.map((p) => ({ s, p }))).slice(0, 2 * 16 + 5);
        for (const { s, p } of landed)
          src.copy(want, p.destByteOffset, s.srcByteOffset + p.spanOffset, s.srcByteOffset + p.spanOffset + p.bytes);
        src.copy(want, 256 * 1024 - 2048, 2 * 65536 + 5 * 4096, 2 * 65536 + 5 * 4096 + 2048);
        expect(readRange(loop.backingFile, 0, 256 * 1024).equals(want)).toBe(true);
      } finally {
        loop.detach();
      }
    });
  });
});
