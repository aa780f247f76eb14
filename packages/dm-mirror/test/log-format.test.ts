import { Bitmap, decodeDiskLog, encodeDiskLog, logBufferBytes, MirrorError } from '@dmtool/dm-mirror';

describe('disk log codec (dm-log.c format)', () => {
  test('worked example: 10 GiB mirror, region 1024 sectors, fully synced', () => {
    const regions = (10 * 2 ** 30) / 512 / 1024;
    expect(regions).toBe(20480);
    expect(logBufferBytes(regions, 512)).toBe(3584);
    const clean = new Bitmap(regions);
    clean.fill(true);
    const buf = encodeDiskLog(regions, clean, 512);
    expect(buf.length).toBe(3584);
    expect(buf.subarray(0, 16).toString('hex')).toBe('725269 4d 02000000 0050000000000000'.replace(/ /g, ''));
    expect(buf.subarray(16, 1024).every((b) => b === 0)).toBe(true);
    expect(buf.subarray(1024, 3584).every((b) => b === 0xff)).toBe(true);
    const back = decodeDiskLog(buf, { expectRegions: regions });
    expect(back.version).toBe(2);
    expect(back.nrRegions).toBe(20480);
    expect(back.clean.count()).toBe(20480);
  });

  test('bit order is LSB first, surplus bits zero, buffer rounded to the logical block', () => {
    const clean = new Bitmap(37);
    clean.fill(true);
    clean.clear(0);
    clean.clear(9);
    const buf = encodeDiskLog(37, clean, 4096);
    expect(buf.length).toBe(4096);
    // 8 bitmap bytes (two 32-bit words): regions 0..36 with 0 and 9 dirty
    expect([...buf.subarray(1024, 1032)]).toEqual([0xfe, 0xfd, 0xff, 0xff, 0x1f, 0, 0, 0]);
    expect(buf.subarray(1032).every((b) => b === 0)).toBe(true);
  });

  test('version 1 is accepted; surplus bits on disk are dropped', () => {
    const clean = new Bitmap(5);
    clean.fill(true);
    const buf = Buffer.from(encodeDiskLog(5, clean));
    buf.writeUInt32LE(1, 4);
    buf[1024] = 0xff;
    const img = decodeDiskLog(buf);
    expect(img.version).toBe(1);
    expect(img.hadSurplusBits).toBe(true);
    expect(img.clean.count()).toBe(5);
    expect(img.clean.bytes[0]).toBe(0x1f);
  });

  const good = () => {
    const c = new Bitmap(100);
    c.fill(true);
    return Buffer.from(encodeDiskLog(100, c));
  };

  test.each([
    ['bad magic', (b: Buffer) => b.writeUInt32LE(0x12345678, 0), 'EBADMSG', /bad magic 0x12345678 at sector 0/],
    ['unknown version', (b: Buffer) => b.writeUInt32LE(3, 4), 'EBADMSG', /unsupported version 3/],
    ['zero regions', (b: Buffer) => b.writeBigUInt64LE(0n, 8), 'EBADMSG', /impossible nr_regions 0/],
  ])('refuses %s', (_name, spoil, code, message) => {
    const b = good();
    spoil(b);
    expect(() => decodeDiskLog(b, { path: '/dev/x' })).toThrow(message);
    try {
      decodeDiskLog(b, { path: '/dev/x' });
    } catch (e) {
      expect(e).toBeInstanceOf(MirrorError);
      expect((e as MirrorError).code).toBe(code);
      expect((e as MirrorError).path).toBe('/dev/x');
    }
  });

  test('refuses a wrong region count and a truncated buffer', () => {
    expect(() => decodeDiskLog(good(), { path: 'L', expectRegions: 99 })).toThrow(
      'dirty log L records 100 regions at sector 0, but the mirror has 99',
    );
    const c = new Bitmap(100000);
    const big = Buffer.from(encodeDiskLog(100000, c));
    expect(() => decodeDiskLog(big.subarray(0, 2048), { path: 'L' })).toThrow(
      /truncated: 100000 regions need sectors 0\.\.26 \(13824 bytes\), only 2048/,
    );
    expect(() => decodeDiskLog(Buffer.alloc(512), { path: 'L' })).toThrow(/truncated/);
  });
});

describe('Bitmap', () => {
  test('count, nextZero, zeros, fillRange', () => {
    const b = new Bitmap(70);
    expect(b.bytes.length).toBe(12);
    b.fill(true);
    expect(b.count()).toBe(70);
    expect(b.hasSurplusBits()).toBe(false);
    expect(b.nextZero()).toBe(70);
    b.clear(3);
    b.clear(64);
    expect(b.zeros()).toEqual([3, 64]);
    expect(b.nextZero(4)).toBe(64);
    b.fillRange(60, 100, false);
    expect(b.zeros()).toEqual([3, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69]);
    expect(b.assign(3, true)).toBe(true);
    expect(b.assign(3, true)).toBe(false);
    expect(() => b.get(70)).toThrow(RangeError);
  });
});
