import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FaultInjector, MemoryDevice, withFaults } from '@dmtool/devices';
import { copyPathCounters, KcopydClient } from '@dmtool/kcopyd';
import { FileDevice } from '@dmtool/native';
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

describe('LinearDevice native endpoint', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-linear-ep-'));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  function file(name: string, bytes: Buffer): FileDevice {
    fs.writeFileSync(path.join(dir, name), bytes);
    return FileDevice.open(path.join(dir, name), { write: true });
  }

  test('kcopyd copies between ranges of files natively, at the ranges offsets; the base fault rules see base offsets', async () => {
    const src = Buffer.alloc(64 * 1024);
    for (let i = 0; i < src.length; i++) src[i] = (i * 7 + (i >> 9)) & 0xff;
    const a = file('a.img', src);
    const b = file('b.img', Buffer.alloc(64 * 1024));
    // A write fault on b's bytes 40960.. (b's own offsets): the linear range from byte 8192 reaches it at its byte 32768.
    const faults = new FaultInjector({ rules: [{ op: 'write', code: 'EIO', path: 'b.img', fromByte: 40960, toByte: 41472 }] });
    const from = new LinearDevice(a, 4096, 32768);
    const to = new LinearDevice(withFaults(b, faults), 8192, 40960);
    expect(to.nativeEndpoint()?.baseByteOffset).toBe(8192);
    const before = copyPathCounters.native;
    const kc = new KcopydClient();
    try {
      await kc.copy({ device: from, sector: 0, count: 64 }, [{ device: to, sector: 0 }]);
      expect(copyPathCounters.native).toBeGreaterThan(before);
      const out = fs.readFileSync(path.join(dir, 'b.img'));
      expect(out.subarray(8192, 8192 + 32768).equals(src.subarray(4096, 4096 + 32768))).toBe(true);
      expect(out.subarray(0, 8192).equals(Buffer.alloc(8192))).toBe(true);
      await expect(kc.copy({ device: from, sector: 0, count: 1 }, [{ device: to, sector: 64 }])).rejects.toMatchObject({
        writeErr: 1,
      });
    } finally {
      await kc.destroy();
      a.close();
      b.close();
    }
  });
});
