import { MemoryDevice } from '@dmtool/devices';
import { LinearDevice, linearArgs, parseTableLine, TableError } from '@dmtool/targets';

describe('LinearDevice', () => {
  test('maps every operation into its range of the base device', async () => {
    const base = new MemoryDevice(1 << 20);
    const lin = new LinearDevice(base, 8192, 65536);
    expect(lin.sizeSectors).toBe(128);
    await lin.write(Buffer.alloc(512, 7), 0, 512, 1024);
    const seen = Buffer.alloc(512);
    await base.read(seen, 0, 512, 8192 + 1024);
    expect(seen.every((b) => b === 7)).toBe(true);
    await base.write(Buffer.alloc(512, 9), 0, 512, 8192 + 4096);
    await lin.read(seen, 0, 512, 4096);
    expect(seen.every((b) => b === 9)).toBe(true);
    await lin.zeroRange(4096, 512);
    await base.read(seen, 0, 512, 8192 + 4096);
    expect(seen.every((b) => b === 0)).toBe(true);
  });

  test('refuses I/O beyond its own end even where the base goes on', async () => {
    const base = new MemoryDevice(1 << 20);
    const lin = new LinearDevice(base, 0, 4096);
    await expect(lin.write(Buffer.alloc(512), 0, 512, 4096)).rejects.toMatchObject({ code: 'ENOSPC' });
    await expect(lin.discard(4000, 512)).rejects.toMatchObject({ code: 'ENOSPC' });
  });

  test('read-only option, range checks, identity', () => {
    const base = new MemoryDevice(1 << 20);
    expect(new LinearDevice(base, 0, 512, { readOnly: true }).writable).toBe(false);
    expect(() => new LinearDevice(base, 512, 1 << 20)).toThrow(/end beyond/);
    expect(() => new LinearDevice(base, 100, 512)).toThrow(/whole number of sectors/);
    expect(new LinearDevice(base, 0, 512).identity).not.toBe(new LinearDevice(base, 512, 512).identity);
  });

  test('closing it leaves the base open', () => {
    const base = new MemoryDevice(4096);
    const lin = new LinearDevice(base, 0, 4096);
    lin.close();
    expect(lin.isOpen).toBe(false);
    expect(base.isOpen).toBe(true);
  });
});

describe('table lines', () => {
  test('linear', () => {
    const t = parseTableLine('  0 2048 linear /dev/loop0 128 ');
    expect(t).toEqual({ startSectors: 0, lengthSectors: 2048, target: 'linear', args: ['/dev/loop0', '128'] });
    expect(linearArgs(t)).toEqual({ device: '/dev/loop0', offsetSectors: 128 });
  });

  test.each([
    ['0 2048', /needs <start> <length> <target>/],
    ['x 2048 linear a 0', /start must be a whole number/],
    ['0 0 linear a 0', /at least one sector/],
    ['0 -1 linear a 0', /length must be a whole number/],
    ['0 99999999999999999999 linear a 0', /too large/],
  ])('refuses %j', (line, message) => {
    expect(() => parseTableLine(line)).toThrow(message);
    expect(() => parseTableLine(line)).toThrow(TableError);
  });

  test('linear arguments', () => {
    expect(() => linearArgs(parseTableLine('0 8 linear a'))).toThrow(/<device> <offset>/);
    expect(() => linearArgs(parseTableLine('0 8 linear a 1.5'))).toThrow(/linear offset/);
    expect(() => linearArgs(parseTableLine('0 8 striped 2 8 a 0 b 0'))).toThrow(/not a linear target/);
  });
});
