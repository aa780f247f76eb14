import { decodeLabel, decodeMdaHeader, formatLvmUuid, LvmError, lvmCrc, MDA_MAGIC, metadataText, textPieces } from '@dmtool/lvm';

const UUID = 'exJg3zQwqdlSbf75OTQftzjykCVnU5Z6';

/** A label sector as pvcreate writes it, with the PV header at byte 32. */
function labelSector(sector: number, opts: { data: [number, number][]; mdas: [number, number][] }): Buffer {
  const s = Buffer.alloc(512);
  s.write('LABELONE', 0, 'latin1');
  s.writeBigUInt64LE(BigInt(sector), 8);
  s.writeUInt32LE(32, 20);
  s.write('LVM2 001', 24, 'latin1');
  s.write(UUID, 32, 'latin1');
  s.writeBigUInt64LE(64n << 20n, 64);
  let p = 72;
  for (const list of [opts.data, opts.mdas]) {
    for (const [o, n] of [...list, [0, 0]]) {
      s.writeBigUInt64LE(BigInt(o), p);
      s.writeBigUInt64LE(BigInt(n), p + 8);
      p += 16;
    }
  }
  s.writeUInt32LE(2, p);
  s.writeUInt32LE(lvmCrc(s.subarray(20)), 16);
  return s;
}

function mdaHeader(startByte: number, sizeBytes: number, locs: [number, number, number, number][]): Buffer {
  const h = Buffer.alloc(512);
  h.write(MDA_MAGIC, 4, 'latin1');
  h.writeUInt32LE(1, 20);
  h.writeBigUInt64LE(BigInt(startByte), 24);
  h.writeBigUInt64LE(BigInt(sizeBytes), 32);
  locs.forEach(([o, n, crc, flags], i) => {
    h.writeBigUInt64LE(BigInt(o), 40 + i * 24);
    h.writeBigUInt64LE(BigInt(n), 48 + i * 24);
    h.writeUInt32LE(crc, 56 + i * 24);
    h.writeUInt32LE(flags, 60 + i * 24);
  });
  h.writeUInt32LE(lvmCrc(h.subarray(4)), 0);
  return h;
}

describe('lvmCrc', () => {
  test('is CRC-32 without the inversions, seeded with 0xf597a6cf by default', () => {
    const check = Buffer.from('123456789');
    expect((lvmCrc(check, 0xffffffff) ^ 0xffffffff) >>> 0).toBe(0xcbf43926);
    expect(lvmCrc(Buffer.alloc(0))).toBe(0xf597a6cf);
  });

  test('a split text gives the CRC of the whole when the second part is seeded with the first', () => {
    const text = Buffer.from('vg0 {\n\tseqno = 1\n}\n');
    expect(lvmCrc(text.subarray(7), lvmCrc(text.subarray(0, 7)))).toBe(lvmCrc(text));
  });
});

describe('decodeLabel', () => {
  const head = (sector: number, s: Buffer) => {
    const b = Buffer.alloc(2048);
    s.copy(b, sector * 512);
    return b;
  };

  test('finds the label in any of sectors 0-3 and decodes the PV header', () => {
    const label = decodeLabel(head(1, labelSector(1, { data: [[1 << 20, 0]], mdas: [[4096, 1044480]] })));
    expect(label).toEqual({
      labelSector: 1,
      pvUuid: UUID,
      deviceSizeBytes: 64 << 20,
      dataAreas: [{ byteOffset: 1 << 20, sizeBytes: 0 }],
      metadataAreas: [{ byteOffset: 4096, sizeBytes: 1044480 }],
      extensionVersion: 2,
    });
    expect(decodeLabel(head(3, labelSector(3, { data: [[1 << 20, 0]], mdas: [] }))).labelSector).toBe(3);
    expect(formatLvmUuid(UUID)).toBe('exJg3z-Qwqd-lSbf-75OT-Qftz-jykC-VnU5Z6');
  });

  test.each([
    [
      'no label',
      () => Buffer.alloc(2048),
      'no-label',
      /no LVM2 label \(LABELONE\) in sectors 0-3: not a physical volume \(pv sectors 0\.\.3\)/,
    ],
    [
      'a flipped byte',
      () => {
        const b = head(1, labelSector(1, { data: [[1 << 20, 0]], mdas: [] }));
        b[512 + 40] ^= 1;
        return b;
      },
      'label-crc',
      /label checksum 0x[0-9a-f]+ does not match its contents \(0x[0-9a-f]+\) \(pv sectors 1\.\.1\)/,
    ],
    [
      'the wrong sector number',
      () => head(2, labelSector(1, { data: [[1 << 20, 0]], mdas: [] })),
      'bad-label',
      /label in sector 2 says it is in sector 1/,
    ],
    ['no data area', () => head(0, labelSector(0, { data: [], mdas: [] })), 'bad-pv-header', /PV header lists no data area/],
  ])('refuses %s with one error', (_name, make, reason, message) => {
    expect(() => decodeLabel(make(), 'pv')).toThrow(message);
    try {
      decodeLabel(make(), 'pv');
    } catch (e) {
      expect(e).toBeInstanceOf(LvmError);
      expect(e).toMatchObject({ reason, kind: 'bad-input' });
    }
  });
});

describe('metadata area header and text', () => {
  test('decodes the committed location', () => {
    const h = decodeMdaHeader(mdaHeader(4096, 1044480, [[1536, 1021, 0x1234, 0]]), 4096);
    expect(h).toEqual({
      version: 1,
      startByte: 4096,
      sizeBytes: 1044480,
      locations: [{ byteOffset: 1536, sizeBytes: 1021, checksum: 0x1234, flags: 0 }],
    });
  });

  test('a text that reaches the end of the area continues after the header', () => {
    const text = Buffer.from('vg0 {\n\tid = "x"\n\tseqno = 9\n}\n');
    const crc = lvmCrc(text);
    const area = 4096;
    const size = 8192;
    const h = decodeMdaHeader(mdaHeader(area, size, [[size - 10, text.length, crc, 0]]), area);
    const pieces = textPieces(h, h.locations[0]);
    expect(pieces).toEqual([
      { byteOffset: area + size - 10, sizeBytes: 10 },
      { byteOffset: area + 512, sizeBytes: text.length - 10 },
    ]);
    expect(metadataText([text.subarray(0, 10), text.subarray(10)], h.locations[0], h)).toBe(text.toString());
    const unwrapped = decodeMdaHeader(mdaHeader(area, size, [[512, text.length, crc, 0]]), area);
    expect(textPieces(unwrapped, unwrapped.locations[0])).toEqual([{ byteOffset: area + 512, sizeBytes: text.length }]);
  });

  test.each([
    [
      'a header with a flipped byte',
      () => {
        const b = mdaHeader(4096, 8192, [[512, 10, 0, 0]]);
        b[45] ^= 1;
        return decodeMdaHeader(b, 4096, 'pv');
      },
      'mda-crc',
      /metadata area header checksum 0x[0-9a-f]+ does not match its contents \(0x[0-9a-f]+\) \(pv sectors 8\.\.8\)/,
    ],
    [
      'a wrong magic',
      () => {
        const b = mdaHeader(4096, 8192, []);
        b.write('X', 5, 'latin1');
        return decodeMdaHeader(b, 4096, 'pv');
      },
      'bad-mda-header',
      /metadata area magic " XVM2 x\[5A%r0N\*>" is wrong/,
    ],
    [
      'a header found elsewhere',
      () => decodeMdaHeader(mdaHeader(4096, 8192, []), 8192, 'pv'),
      'bad-mda-header',
      /says it starts at byte 4096, found at 8192/,
    ],
    [
      'a text offset outside the buffer',
      () => {
        const h = decodeMdaHeader(mdaHeader(4096, 8192, [[100, 10, 0, 0]]), 4096, 'pv');
        return textPieces(h, h.locations[0], 'pv');
      },
      'bad-text-location',
      /metadata text offset 100 lies outside the area's buffer \(512\.\.8191\)/,
    ],
    [
      'a text larger than the buffer',
      () => {
        const h = decodeMdaHeader(mdaHeader(4096, 8192, [[512, 9000, 0, 0]]), 4096, 'pv');
        return textPieces(h, h.locations[0], 'pv');
      },
      'bad-text-location',
      /metadata text size 9000 does not fit the 7680-byte buffer/,
    ],
    [
      'a text whose checksum is wrong',
      () => {
        const h = decodeMdaHeader(mdaHeader(4096, 8192, [[512, 4, 0xdead, 0]]), 4096, 'pv');
        return metadataText([Buffer.from('vg0 ')], h.locations[0], h, 'pv');
      },
      'text-crc',
      /metadata text checksum 0xdead does not match its 4 bytes \(0x[0-9a-f]+\) \(pv sectors 9\.\.9\)/,
    ],
  ])('refuses %s with one error', (_name, run, reason, message) => {
    expect(run).toThrow(message);
    try {
      run();
    } catch (e) {
      expect(e).toMatchObject({ reason, kind: 'bad-input' });
    }
  });
});
