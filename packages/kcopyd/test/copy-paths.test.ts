import * as path from 'path';
import { FaultInjector, MemoryDevice, withFaults } from '@dmtool/devices';
import { BlockDevice, copyPathCounters, FileDevice, KcopydClient, KcopydIoError } from '@dmtool/kcopyd';
import { makeImage, patternBytes, readRange, sha256 } from '../../../test/support/images';
import { removeDir, tempDir } from '../../../test/support/loop';

const SECTORS = 4096; // 2 MiB
const BYTES = SECTORS * 512;

/** Copy all of `src` to every destination; report which path each sub-job took. */
async function copyAll(src: BlockDevice, dests: BlockDevice[]) {
  const before = { ...copyPathCounters };
  const client = new KcopydClient({ subJobSectors: 256 });
  try {
    // The report, whether the copy succeeded or rejected with it.
    const r = await client
      .copy(
        { device: src, sector: 0, count: SECTORS },
        dests.map((d) => ({ device: d, sector: 0 })),
      )
      .catch((e: unknown) => {
        if (e instanceof KcopydIoError) return e.result;
        throw e;
      });
    return { r, native: copyPathCounters.native - before.native, generic: copyPathCounters.generic - before.generic };
  } finally {
    await client.destroy();
  }
}

describe('kcopyd copy paths: the native capability and the generic read-once/write-N', () => {
  let dir: string;
  const opened: BlockDevice[] = [];
  const file = (name: string, seed?: string) => {
    const p = path.join(dir, name);
    makeImage(p, BYTES, seed);
    return p;
  };
  const open = (p: string, write = false) => {
    const d = FileDevice.open(p, { write });
    opened.push(d);
    return d;
  };

  beforeEach(() => (dir = tempDir()));
  afterEach(() => {
    opened.splice(0).forEach((d) => d.close());
    removeDir(dir);
  });

  it('a fault-wrapped multi-destination copy runs the same native copy as an unwrapped one', async () => {
    const src = file('src.img', 'SRC');
    const plain = await copyAll(open(src), [open(file('a0.img'), true), open(file('a1.img'), true)]);
    const faults = new FaultInjector({ rules: [{ op: 'write', code: 'EIO', path: 'nothing-matches' }] });
    const wrapped = await copyAll(withFaults(open(src), faults), [
      withFaults(open(file('b0.img'), true), faults),
      withFaults(open(file('b1.img'), true), faults),
    ]);
    expect(plain.native).toBe(SECTORS / 256);
    expect(plain.generic).toBe(0);
    expect(wrapped).toEqual(plain);
    const want = sha256(patternBytes('SRC', 0, SECTORS));
    for (const f of ['a0.img', 'a1.img', 'b0.img', 'b1.img']) expect(sha256(readRange(path.join(dir, f), 0, BYTES))).toBe(want);
  });

  it('an injected write error in the native path fails only that destination; a short write lands its prefix', async () => {
    const faults = new FaultInjector({
      rules: [
        { op: 'write', code: 'EIO', path: 'c1.img', fromByte: 512 * 512, toByte: 513 * 512 },
        { op: 'write', code: 'ENOSPC', path: 'c2.img', shortBytes: 1024, times: 1 },
      ],
    });
    const dests = ['c0.img', 'c1.img', 'c2.img'].map((f) => withFaults(open(file(f), true), faults));
    const { r, native, generic } = await copyAll(withFaults(open(file('src.img', 'SRC')), faults), dests);
    expect(native).toBeGreaterThan(0); // the job stops at the first error, as kcopyd does
    expect(generic).toBe(0);
    expect(r.writeErr).toBe(0b110);
    expect(r.errors.map((e) => e.code).sort()).toEqual(['EIO', 'ENOSPC']);
    expect(readRange(path.join(dir, 'c0.img'), 0, 256 * 512).equals(patternBytes('SRC', 0, 256))).toBe(true);
    const c2 = readRange(path.join(dir, 'c2.img'), 0, 256 * 512);
    expect(c2.subarray(0, 1024).equals(patternBytes('SRC', 0, 2))).toBe(true);
    expect(c2.subarray(1024).every((b) => b === 0)).toBe(true);
  });

  it('a device without the capability (memory, or a volatile cache) takes the generic path with the same result', async () => {
    const mem = new MemoryDevice(BYTES);
    await mem.write(patternBytes('MEM', 0, SECTORS), 0, BYTES, 0);
    const cached = withFaults(open(file('d1.img'), true), new FaultInjector({ volatileCache: {} }));
    const { r, native, generic } = await copyAll(mem, [open(file('d0.img'), true), cached]);
    expect(r.writeErr).toBe(0);
    expect([native, generic]).toEqual([0, SECTORS / 256]);
    expect(readRange(path.join(dir, 'd0.img'), 0, BYTES).equals(patternBytes('MEM', 0, SECTORS))).toBe(true);
    expect(readRange(path.join(dir, 'd1.img'), 0, 512).every((b) => b === 0)).toBe(true); // still in the cache
    await cached.flush();
    expect(readRange(path.join(dir, 'd1.img'), 0, BYTES).equals(patternBytes('MEM', 0, SECTORS))).toBe(true);
  });

  it('copyExtents scatters through fault-wrapped devices natively, and memory devices generically', async () => {
    const extents = [0, 7, 3].map((i) => ({ srcSector: i * 8, destSector: (20 - i) * 8, count: 8 }));
    const faults = new FaultInjector({});
    const client = new KcopydClient();
    try {
      const before = { ...copyPathCounters };
      const fileDest = withFaults(open(file('e.img'), true), faults);
      await client.copyExtents(withFaults(open(file('src.img', 'SRC')), faults), fileDest, extents);
      expect(copyPathCounters.native - before.native).toBeGreaterThan(0);
      expect(copyPathCounters.generic).toBe(before.generic);
      const mem = new MemoryDevice(BYTES);
      await client.copyExtents(open(path.join(dir, 'src.img')), mem, extents);
      expect(copyPathCounters.generic).toBeGreaterThan(before.generic);
      for (const x of extents) {
        const want = patternBytes('SRC', x.srcSector, 8);
        expect(readRange(path.join(dir, 'e.img'), x.destSector * 512, 4096).equals(want)).toBe(true);
        const got = Buffer.alloc(4096);
        await mem.read(got, 0, 4096, x.destSector * 512);
        expect(got.equals(want)).toBe(true);
      }
    } finally {
      await client.destroy();
    }
  });
});
