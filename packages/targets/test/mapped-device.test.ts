import { MemoryDevice } from '@dmtool/devices';
import { ConcatDevice, LinearDevice, StripedDevice } from '@dmtool/targets';

async function fill(d: MemoryDevice, seed: number): Promise<Buffer> {
  const b = Buffer.alloc(d.sizeBytes);
  for (let i = 0; i < b.length; i++) b[i] = (i * 7 + seed * 13 + (i >> 9)) & 0xff;
  await d.write(b, 0, b.length, 0);
  return b;
}

describe('StripedDevice', () => {
  test('chunk k lives on stripe k mod N at chunk floor(k / N), for reads and writes across chunk edges', async () => {
    const stripes = [new MemoryDevice(16384), new MemoryDevice(16384), new MemoryDevice(16384)];
    const contents = await Promise.all(stripes.map((s, i) => fill(s, i)));
    const striped = new StripedDevice(stripes, 1024);
    expect(striped.sizeBytes).toBe(3 * 16384);
    const expected = Buffer.alloc(striped.sizeBytes);
    for (let chunk = 0; chunk < expected.length / 1024; chunk++) {
      contents[chunk % 3].copy(expected, chunk * 1024, Math.floor(chunk / 3) * 1024, Math.floor(chunk / 3) * 1024 + 1024);
    }
    const all = Buffer.alloc(striped.sizeBytes);
    await striped.read(all, 0, all.length, 0);
    expect(all.equals(expected)).toBe(true);
    const part = Buffer.alloc(3 * 512);
    await striped.read(part, 0, part.length, 1536);
    expect(part.equals(expected.subarray(1536, 1536 + 1536))).toBe(true);

    // Bytes 2560..4607: the end of chunk 2 (stripe 2), all of chunk 3 (stripe 0), the start of chunk 4 (stripe 1).
    await striped.write(Buffer.alloc(2048, 0xee), 0, 2048, 2560);
    const seen = Buffer.alloc(512);
    await stripes[2].read(seen, 0, 512, 512);
    expect(seen.every((b) => b === 0xee)).toBe(true);
    await stripes[0].read(seen, 0, 512, 1024);
    expect(seen.every((b) => b === 0xee)).toBe(true);
    await stripes[1].read(seen, 0, 512, 1024);
    expect(seen.every((b) => b === 0xee)).toBe(true);
    await stripes[1].read(seen, 0, 512, 1536);
    expect(seen.equals(contents[1].subarray(1536, 2048))).toBe(true);
  });

  test('refuses stripes of different sizes or not whole chunks', () => {
    expect(() => new StripedDevice([new MemoryDevice(4096), new MemoryDevice(8192)], 1024)).toThrow(/stripes differ in size/);
    expect(() => new StripedDevice([new MemoryDevice(4096)], 3072)).toThrow(/not a whole number of 3072-byte chunks/);
    expect(() => new StripedDevice([new MemoryDevice(4096)], 100)).toThrow(/stripe size 100 is not a whole, positive number of sectors/);
  });
});

describe('ConcatDevice', () => {
  test('parts one after another; a request across a boundary is split; closing runs onClose once', async () => {
    const base = new MemoryDevice(1 << 20);
    const contents = await fill(base, 5);
    let closed = 0;
    const concat = new ConcatDevice([new LinearDevice(base, 65536, 4096), new LinearDevice(base, 0, 8192)], {
      name: 'vg/lv',
      onClose: () => closed++,
    });
    expect([concat.path, concat.sizeBytes, concat.writable]).toEqual(['vg/lv', 12288, true]);
    const b = Buffer.alloc(2048);
    await concat.read(b, 0, 2048, 3072);
    expect(b.equals(Buffer.concat([contents.subarray(65536 + 3072, 65536 + 4096), contents.subarray(0, 1024)]))).toBe(true);
    await concat.zeroRange(4096 - 512, 1024);
    const z = Buffer.alloc(512);
    await base.read(z, 0, 512, 0);
    expect(z.every((x) => x === 0)).toBe(true);
    await expect(concat.read(b, 0, 2048, 12288 - 1024)).rejects.toMatchObject({ code: 'ENOSPC' });
    concat.close();
    concat.close();
    expect([closed, concat.isOpen, base.isOpen]).toEqual([1, false, true]);
  });

  test('read-only on request, or when a part is', async () => {
    const ro = new ConcatDevice([new MemoryDevice(4096)], { readOnly: true });
    expect(ro.writable).toBe(false);
    await expect(ro.write(Buffer.alloc(512), 0, 512, 0)).rejects.toMatchObject({ code: 'EBADF' });
  });
});
