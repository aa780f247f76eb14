import {
  checkChunkSectors,
  CowGeometry,
  cowSectorsForOrigin,
  decodeArea,
  decodeHeader,
  encodeEntry,
  encodeHeader,
  SnapshotError,
} from '@dmtool/dm-snapshot';

function codeOf(fn: () => unknown): [string, string] {
  try {
    fn();
  } catch (e) {
    if (e instanceof SnapshotError) return [e.code, e.reason];
    throw e;
  }
  throw new Error('no error thrown');
}

describe('header codec', () => {
  test('encodes the kernel header bytes (docs/snapshot-format.md#worked-example) and zero-fills the chunk', () => {
    const buf = Buffer.alloc(4096, 0xaa);
    encodeHeader(buf, { valid: true, chunkSectors: 8 });
    expect(buf.subarray(0, 16).toString('hex')).toBe('536e41700100000001000000' + '08000000');
    expect(buf.subarray(16).every((b) => b === 0)).toBe(true);
    encodeHeader(buf, { valid: false, chunkSectors: 16 });
    expect(buf.subarray(0, 16).toString('hex')).toBe('536e41700000000001000000' + '10000000');
  });

  test('decodes fresh, valid and invalidated headers', () => {
    expect(decodeHeader(Buffer.alloc(512))).toEqual({ kind: 'fresh' });
    const buf = encodeHeader(Buffer.alloc(512), { valid: true, chunkSectors: 32 });
    expect(decodeHeader(buf)).toEqual({ kind: 'snapshot', header: { magic: 0x70416e53, valid: true, version: 1, chunkSectors: 32 } });
    buf.writeUInt32LE(0, 4);
    expect(decodeHeader(buf)).toMatchObject({ header: { valid: false } });
  });

  test('refuses bad magic, version and chunk size with one coded error', () => {
    const good = () => encodeHeader(Buffer.alloc(512), { valid: true, chunkSectors: 8 });
    const badMagic = good();
    badMagic.write('XXXX', 0, 'latin1');
    expect(codeOf(() => decodeHeader(badMagic, '/dev/x'))).toEqual(['ENXIO', 'bad-magic']);
    const badVersion = good();
    badVersion.writeUInt32LE(2, 8);
    expect(codeOf(() => decodeHeader(badVersion))).toEqual(['EINVAL', 'bad-version']);
    const badChunk = good();
    badChunk.writeUInt32LE(12, 12);
    expect(codeOf(() => decodeHeader(badChunk))).toEqual(['EINVAL', 'bad-chunk-size']);
    badChunk.writeUInt32LE(0, 12);
    expect(codeOf(() => decodeHeader(badChunk))).toEqual(['EINVAL', 'bad-chunk-size']);
    try {
      decodeHeader(badMagic, '/dev/x');
    } catch (e) {
      expect((e as Error).message).toBe(
        'ENXIO: invalid or corrupt snapshot: bad magic 0x58585858 (expected 0x70416e53 "SnAp") (/dev/x sectors 0..0)',
      );
    }
  });
});

describe('area codec', () => {
  test('worked example: entries little-endian, table ends at the first new_chunk 0', () => {
    const area = Buffer.alloc(4096);
    encodeEntry(area, 0, 100, 2);
    encodeEntry(area, 1, 5, 3);
    encodeEntry(area, 2, 101, 4);
    expect(area.subarray(0, 0x40).toString('hex')).toBe(
      '6400000000000000' +
        '0200000000000000' +
        '0500000000000000' +
        '0300000000000000' +
        '6500000000000000' +
        '0400000000000000' +
        '0'.repeat(32),
    );
    // Bytes after the terminator are ignored, as by the kernel.
    encodeEntry(area, 4, 7, 9);
    expect(decodeArea(area, 256, 0)).toEqual({ olds: [100, 5, 101], news: [2, 3, 4], full: false });
  });

  test('an area without terminator is full; 64-bit chunk numbers above 2^32 survive', () => {
    const area = Buffer.alloc(4096);
    for (let i = 0; i < 256; i++) encodeEntry(area, i, 2 ** 40 + i, 2 + i);
    const d = decodeArea(area, 256, 3);
    expect(d.full).toBe(true);
    expect(d.olds[255]).toBe(2 ** 40 + 255);
    expect(area.readBigUInt64LE(255 * 16)).toBe(BigInt(2 ** 40 + 255));
  });

  test('absurd chunk numbers are refused', () => {
    const area = Buffer.alloc(4096);
    area.writeBigUInt64LE(0xffffffffffffffffn, 8);
    expect(codeOf(() => decodeArea(area, 256, 0))).toEqual(['EINVAL', 'entry-past-cow-end']);
  });
});

describe('geometry', () => {
  test('area and data chunk numbering (docs/snapshot-format.md#chunk-geometry table)', () => {
    for (const [cs, E] of [
      [8, 256],
      [16, 512],
      [32, 1024],
      [128, 4096],
      [1024, 32768],
    ]) {
      const g = new CowGeometry(cs, 1 << 30);
      expect(g.exceptionsPerArea).toBe(E);
      expect(g.areaChunk(0)).toBe(1);
      expect(g.areaChunk(3)).toBe(1 + 3 * (E + 1));
      expect(g.dataChunkOfIndex(0)).toBe(2);
      expect(g.dataChunkOfIndex(E)).toBe(2 + (E + 1));
      expect(g.isMetadataChunk(1 + 2 * (E + 1))).toBe(true);
      expect(g.isMetadataChunk(2 + 2 * (E + 1))).toBe(false);
    }
  });

  test('allocation with metadata skip equals the in-order formula', () => {
    const g = new CowGeometry(8, 1 << 30);
    let next = 2;
    for (let j = 0; j < 2000; j++) {
      expect(next).toBe(g.dataChunkOfIndex(j));
      next = g.skipMetadata(next + 1);
    }
    expect(g.dataChunkOfIndex(256)).toBe(259);
    expect(g.areaChunk(2)).toBe(515);
  });

  test('chunk size rules', () => {
    expect(checkChunkSectors(8)).toBe(8);
    expect(codeOf(() => checkChunkSectors(12))).toEqual(['EINVAL', 'bad-chunk-size']);
    expect(codeOf(() => checkChunkSectors(0))).toEqual(['EINVAL', 'bad-chunk-size']);
    expect(codeOf(() => checkChunkSectors(2 ** 23))).toEqual(['EINVAL', 'bad-chunk-size']);
    expect(codeOf(() => checkChunkSectors(4, [{ path: '/dev/4k', logicalBlockSize: 4096 }]))).toEqual(['EINVAL', 'bad-chunk-size']);
    expect(checkChunkSectors(8, [{ path: '/dev/4k', logicalBlockSize: 4096 }])).toBe(8);
  });

  test("lvm2's COW size formula (docs/snapshot-format.md#cow-size)", () => {
    // 64 MiB origin, cs 8: 16384 chunks, 64 areas + 1 terminator area, header.
    expect(cowSectorsForOrigin(131072, 8)).toBe((1 + 16384 + 65) * 8);
    expect(cowSectorsForOrigin(131072 - 8, 8)).toBe((1 + 16383 + 64) * 8);
  });
});
