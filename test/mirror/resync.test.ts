import * as fs from 'fs';
import { execFileSync } from 'child_process';
import { Bitmap, decodeDiskLog, encodeDiskLog, openMirror, resync, MirrorError, MirrorSet } from '@dmtool/dm-mirror';
import { faultyResolver, setFaultPlan } from '../support/faults';
import { attachLoop, describeLoop, detachAll, LoopDevice, makeLoop, removeDir, tempDir } from '../support/loop';
import { makeImage, readRange, sha256File, sha256Range } from '../support/images';

const MiB = 1 << 20;
const LEG_BYTES = 8 * MiB;
const REGION = 128; // sectors = 64 KiB
const REGIONS = LEG_BYTES / 512 / REGION; // 128
const REGION_BYTES = REGION * 512;

function regionShas(path: string): string[] {
  return Array.from({ length: REGIONS }, (_, r) => sha256Range(path, r * REGION_BYTES, REGION_BYTES));
}

function writeLog(path: string, dirty: number[]): void {
  const clean = new Bitmap(REGIONS);
  clean.fill(true);
  for (const r of dirty) clean.clear(r);
  const fd = fs.openSync(path, 'r+');
  fs.writeSync(fd, encodeDiskLog(REGIONS, clean, 512), 0, undefined, 0);
  fs.closeSync(fd);
}

function readLog(path: string) {
  return decodeDiskLog(readRange(path, 0, 1024 + 512), { expectRegions: REGIONS });
}

describeLoop('dm-mirror resync on loop devices', () => {
  let dir: string;
  let legs: LoopDevice[];
  let log: LoopDevice;

  beforeAll(() => {
    dir = tempDir('dmtool-mirror-');
  });

  beforeEach(() => {
    const seeds = ['leg0', 'leg1', 'leg2'];
    legs = seeds.map((seed, i) => {
      const dev = makeLoop(dir, `leg${i}.img`, LEG_BYTES);
      makeImage(dev.backingFile, LEG_BYTES, seed);
      return dev;
    });
    // re-attach after filling so the loop device sees the backing file content
    legs.forEach((d) => d.detach());
    legs = seeds.map((_, i) => {
      return attachLoop(`${dir}/leg${i}.img`);
    });
    log = makeLoop(dir, 'log.img', 64 * 1024);
  });

  afterEach(() => {
    setFaultPlan(undefined);
    detachAll();
  });

  afterAll(() => {
    detachAll();
    removeDir(dir);
    // other suites may attach devices meanwhile: check that none of ours is left
    const now = execFileSync('losetup', ['-a'], { encoding: 'utf8' });
    expect(now.split('\n').filter((l) => l.includes(dir))).toEqual([]);
  });

  const cfg = (n = 3) => ({
    regionSize: REGION,
    log: { type: 'disk' as const, path: log.path },
    legs: legs.slice(0, n).map((l) => ({ path: l.path })),
  });

  test('a log with chosen dirty regions resyncs exactly those regions', async () => {
    const dirty = [0, 3, 17, 64, 127];
    writeLog(log.path, dirty);
    const shas = legs.map((l) => regionShas(l.path));
    const m = await openMirror(cfg(), faultyResolver, { writeLegs: true });
    try {
      expect(m.statusInfo()).toBe(`3 ${legs.map((l) => l.path).join(' ')} ${REGIONS - dirty.length}/${REGIONS} 1 AAA 3 disk ${log.path} A`);
      const r = await resync(m, { parallel: 3 });
      expect(r.regionsTotal).toBe(dirty.length);
      expect(r.regionsSynced).toBe(dirty.length);
      expect(r.sectorsCopied).toBe(dirty.length * REGION);
      expect(r.failedLegs).toEqual([]);
      expect(m.statusInfo()).toBe(`3 ${legs.map((l) => l.path).join(' ')} ${REGIONS}/${REGIONS} 1 AAA 3 disk ${log.path} A`);
    } finally {
      m.close();
    }
    const after = legs.map((l) => regionShas(l.path));
    expect(after[0]).toEqual(shas[0]);
    for (const leg of [1, 2]) {
      for (let r = 0; r < REGIONS; r++) {
        expect([leg, r, after[leg][r]]).toEqual([leg, r, dirty.includes(r) ? shas[0][r] : shas[leg][r]]);
      }
    }
    const img = readLog(log.path);
    expect(img.clean.count()).toBe(REGIONS);
  });

  test('full resync of 3 legs: identical legs, all-clean log in the kernel format', async () => {
    const m = await openMirror(cfg(), faultyResolver, { writeLegs: true, createLog: true });
    const seen: number[] = [];
    try {
      expect(m.log.getSyncCount()).toBe(0);
      const r = await resync(m, { parallel: 4, onProgress: (p) => seen.push(p.regionsDone) });
      expect(r.inSync).toBe(true);
      expect(r.regionsSynced).toBe(REGIONS);
      expect(m.status().info).toBe(
        `0 ${LEG_BYTES / 512} mirror 3 ${legs.map((l) => l.path).join(' ')} ${REGIONS}/${REGIONS} 1 AAA 3 disk ${log.path} A`,
      );
      expect(m.status().table).toBe(
        `0 ${LEG_BYTES / 512} mirror disk 2 ${log.path} ${REGION} 3 ${legs.map((l) => `${l.path} 0`).join(' ')}`,
      );
    } finally {
      m.close();
    }
    expect(seen[seen.length - 1]).toBe(REGIONS);
    const s0 = sha256File(legs[0].backingFile);
    expect(sha256File(legs[1].backingFile)).toBe(s0);
    expect(sha256File(legs[2].backingFile)).toBe(s0);
    const raw = readRange(log.path, 0, 1536);
    expect(raw.subarray(0, 16).toString('hex')).toBe('725269' + '4d' + '02000000' + '8000000000000000');
    expect(raw.subarray(16, 1024).every((b) => b === 0)).toBe(true);
    expect(raw.subarray(1024, 1024 + 16).every((b) => b === 0xff)).toBe(true);
    expect(raw.subarray(1040).every((b) => b === 0)).toBe(true);
  });

  test('a leg with injected EIO is marked failed; the other legs complete', async () => {
    const m = await openMirror(cfg(), faultyResolver, { writeLegs: true, createLog: true });
    const failFrom = 40 * REGION_BYTES;
    setFaultPlan({ rules: [{ op: 'write', code: 'EIO', path: legs[2].path, fromByte: failFrom }] });
    let r;
    try {
      r = await resync(m, { parallel: 1 });
      setFaultPlan(undefined);
      expect(r.failedLegs.map((f) => [f.index, f.health])).toEqual([[2, 'S']]);
      expect(r.failedLegs[0].error).toMatch(/^EIO: write failed on .* at sector 5120 \(\+128 sectors\)/);
      expect(m.statusInfo()).toBe(`3 ${legs.map((l) => l.path).join(' ')} 40/${REGIONS} 1 AAS 3 disk ${log.path} A`);
      expect(r.regionsFailed).toEqual(Array.from({ length: REGIONS - 40 }, (_, i) => 40 + i));
    } finally {
      m.close();
    }
    expect(sha256File(legs[1].backingFile)).toBe(sha256File(legs[0].backingFile));
    expect(sha256Range(legs[2].path, 0, failFrom)).toBe(sha256Range(legs[0].path, 0, failFrom));
    expect(sha256Range(legs[2].path, failFrom, REGION_BYTES)).not.toBe(sha256Range(legs[0].path, failFrom, REGION_BYTES));
    const img = readLog(log.path);
    expect(img.clean.zeros()).toEqual(r.regionsFailed);
  });

  test('a read error on the default leg fails it (S) and stops the resync; nothing is recorded clean wrongly', async () => {
    const m = await openMirror(cfg(), faultyResolver, { writeLegs: true, createLog: true });
    setFaultPlan({ rules: [{ op: 'read', code: 'EIO', path: legs[0].path, fromByte: 10 * REGION_BYTES, toByte: 11 * REGION_BYTES }] });
    let r;
    try {
      r = await resync(m, { parallel: 1 });
    } finally {
      setFaultPlan(undefined);
      m.close();
    }
    expect(r.failedLegs.map((f) => [f.index, f.health])).toEqual([[0, 'S']]);
    expect(r.regionsSynced).toBe(10);
    expect(r.regionsFailed).toEqual([10]);
    expect(readLog(log.path).clean.zeros()).toEqual(Array.from({ length: REGIONS - 10 }, (_, i) => 10 + i));
  });

  test('a second run after the failed leg is gone finishes the set', async () => {
    const m = await openMirror(cfg(), faultyResolver, { writeLegs: true, createLog: true });
    setFaultPlan({ rules: [{ op: 'write', code: 'EIO', path: legs[1].path, fromByte: 0 }] });
    const r = await resync(m);
    m.close();
    setFaultPlan(undefined);
    expect(r.regionsSynced).toBe(0);
    expect(r.failedLegs.map((f) => f.index)).toEqual([1]);
    // leg 2 got everything even though leg 1 failed on the first write
    expect(sha256File(legs[2].backingFile)).toBe(sha256File(legs[0].backingFile));
    const m2 = await openMirror({ ...cfg(), legs: [{ path: legs[0].path }, { path: legs[1].path }] }, faultyResolver, { writeLegs: true });
    try {
      const r2 = await resync(m2);
      expect(r2.regionsTotal).toBe(REGIONS);
      expect(r2.inSync).toBe(true);
    } finally {
      m2.close();
    }
    expect(sha256File(legs[1].backingFile)).toBe(sha256File(legs[0].backingFile));
  });

  test('writes through the mirror: log dirtied and flushed before the legs, cleaned after', async () => {
    const m: MirrorSet = await openMirror(cfg(2), faultyResolver, { writeLegs: true, createLog: true });
    try {
      await resync(m);
      const data = Buffer.alloc(3 * REGION_BYTES, 0x5a);
      const logDev = (m.log as unknown as { device: { path: string } }).device;
      expect(logDev.path).toBe(log.path);
      // while the write is in flight the log on disk must already say dirty
      const sector = 5 * REGION + 64;
      const legWrite = legs[0].path;
      let dirtyOnDiskDuringWrite: number[] = [];
      const dev0 = m.legs[0].device;
      const orig = dev0.write.bind(dev0);
      dev0.write = async (...args: Parameters<typeof dev0.write>) => {
        dirtyOnDiskDuringWrite = readLog(log.path).clean.zeros();
        return orig(...args);
      };
      await m.write(data, sector, 2 * REGION);
      expect(dirtyOnDiskDuringWrite).toEqual([5, 6, 7]);
      expect(m.rh.state(6)).toBe('CLEAN');
      await m.settle();
      expect(readLog(log.path).clean.zeros()).toEqual([]);
      expect(readRange(legWrite, sector * 512, 2 * REGION_BYTES).equals(data.subarray(0, 2 * REGION_BYTES))).toBe(true);
      expect(readRange(legs[1].path, sector * 512, 2 * REGION_BYTES).equals(data.subarray(0, 2 * REGION_BYTES))).toBe(true);
      const back = Buffer.alloc(2 * REGION_BYTES);
      await m.read(back, sector, 2 * REGION);
      expect(back.equals(data.subarray(0, 2 * REGION_BYTES))).toBe(true);
    } finally {
      m.close();
    }
  });

  test('rate limit paces the copy; an AbortSignal stops it resumably', async () => {
    const m = await openMirror(cfg(2), faultyResolver, { writeLegs: true, createLog: true });
    try {
      const r = await resync(m, { rateBytesPerSecond: 16 * MiB, parallel: 2 });
      // 8 MiB at 16 MiB/s: the last piece is admitted at (8 MiB - 64 KiB) / 16 MiB/s
      expect(r.elapsedMs).toBeGreaterThanOrEqual(450);
      expect(r.inSync).toBe(true);
    } finally {
      m.close();
    }
    const m2 = await openMirror(cfg(2), faultyResolver, { writeLegs: true, createLog: true });
    const ctl = new AbortController();
    let r2;
    try {
      r2 = await resync(m2, {
        rateBytesPerSecond: 16 * MiB,
        onProgress: (p) => {
          if (p.regionsDone >= 20) ctl.abort();
        },
        signal: ctl.signal,
        commitRegions: 8,
      });
    } finally {
      m2.close();
    }
    expect(r2.aborted).toBe(true);
    const left = readLog(log.path).clean.zeros().length;
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThanOrEqual(REGIONS - 16);
    const m3 = await openMirror(cfg(2), faultyResolver, { writeLegs: true });
    try {
      const r3 = await resync(m3);
      expect(r3.regionsTotal).toBe(left);
      expect(r3.inSync).toBe(true);
    } finally {
      m3.close();
    }
    expect(sha256File(legs[1].backingFile)).toBe(sha256File(legs[0].backingFile));
  });

  test('reads: default leg; a failed default falls back to the next leg counting down (in-sync regions only)', async () => {
    const m: MirrorSet = await openMirror(cfg(), faultyResolver, { writeLegs: true, createLog: true });
    try {
      await resync(m);
      // make leg 2 distinguishable, then fail reads on leg 0
      fs.writeFileSync(legs[2].path, Buffer.alloc(512, 0x77), { flag: 'r+' });
      const buf = Buffer.alloc(512);
      await m.read(buf, 0, 1);
      expect(buf.equals(readRange(legs[0].path, 0, 512))).toBe(true);
      setFaultPlan({ rules: [{ op: 'read', code: 'EIO', path: legs[0].path }] });
      await m.read(buf, 0, 1);
      expect(buf.every((b) => b === 0x77)).toBe(true);
      expect(m.legs.map((l) => l.health).join('')).toBe('RAA');
      // an out-of-sync region is served by the default leg only
      m.log.setRegionSync(1, false);
      await expect(m.read(buf, REGION, 1)).rejects.toThrow(/^EIO: read failed on /);
    } finally {
      setFaultPlan(undefined);
      m.close();
    }
  });

  describe('malformed logs are refused before anything is written', () => {
    const cases: [string, () => void, RegExp][] = [
      [
        'bad magic',
        () => fs.writeFileSync(log.backingFile, Buffer.from('not a log at all'), { flag: 'r+' }),
        /bad magic 0x20746f6e at sector 0/,
      ],
      [
        'wrong nr_regions for the leg size',
        () => {
          const clean = new Bitmap(REGIONS * 2);
          const fd = fs.openSync(log.path, 'r+');
          fs.writeSync(fd, encodeDiskLog(REGIONS * 2, clean), 0, undefined, 0);
          fs.closeSync(fd);
        },
        /records 256 regions at sector 0, but the mirror has 128/,
      ],
      [
        'a region count no region size gives',
        () => {
          const clean = new Bitmap(100);
          const fd = fs.openSync(log.path, 'r+');
          fs.writeSync(fd, encodeDiskLog(100, clean), 0, undefined, 0);
          fs.closeSync(fd);
        },
        /records 100 regions at sector 0, but the mirror has 128/,
      ],
    ];
    test.each(cases)('%s', async (_name, spoil, message) => {
      spoil();
      const shas = [...legs, log].map((d) => sha256File(d.backingFile));
      await expect(openMirror(cfg(), faultyResolver, { writeLegs: true })).rejects.toThrow(message);
      await expect(openMirror(cfg(), faultyResolver, { writeLegs: true })).rejects.toBeInstanceOf(MirrorError);
      expect([...legs, log].map((d) => sha256File(d.backingFile))).toEqual(shas);
    });

    test('truncated log file', async () => {
      const file = `${dir}/trunc.log`;
      const clean = new Bitmap(REGIONS);
      fs.writeFileSync(file, encodeDiskLog(REGIONS, clean).subarray(0, 1100));
      const shas = [...legs].map((d) => sha256File(d.backingFile));
      const fileSha = sha256File(file);
      const c = { ...cfg(), regionSize: undefined, log: { type: 'disk' as const, path: file } };
      await expect(openMirror(c, faultyResolver, { writeLegs: true })).rejects.toThrow(
        `dirty log ${file} is too small: 1100 bytes, 128 regions need sectors 0..2 (1536 bytes)`,
      );
      expect(legs.map((d) => sha256File(d.backingFile))).toEqual(shas);
      expect(sha256File(file)).toBe(fileSha);
    });

    test('a log device too small for the region count', async () => {
      const tiny = makeLoop(dir, 'tiny.img', 1024);
      const shas = [...legs, tiny].map((d) => sha256File(d.backingFile));
      await expect(
        openMirror({ ...cfg(), regionSize: 2, log: { type: 'disk', path: tiny.path } }, faultyResolver, {
          createLog: true,
          writeLegs: true,
        }),
      ).rejects.toThrow(`dirty log ${tiny.path} is too small: 1024 bytes, 8192 regions need sectors 0..3 (2048 bytes)`);
      expect([...legs, tiny].map((d) => sha256File(d.backingFile))).toEqual(shas);
    });

    test('the same device twice, and legs of different sizes', async () => {
      await expect(openMirror({ ...cfg(), legs: [{ path: legs[0].path }, { path: legs[0].path }] }, faultyResolver)).rejects.toThrow(
        `${legs[0].path} is given twice (as leg 0 and as leg 1)`,
      );
      await expect(openMirror({ ...cfg(), log: { type: 'disk', path: legs[1].path } }, faultyResolver)).rejects.toThrow(
        /given twice \(as leg 1 and as the log\)/,
      );
      const small = makeLoop(dir, 'small.img', LEG_BYTES / 2);
      await expect(openMirror({ ...cfg(), legs: [{ path: legs[0].path }, { path: small.path }] }, faultyResolver)).rejects.toThrow(
        `legs differ in size: ${legs[0].path} has 16384 sectors, ${small.path} has 8192`,
      );
      await expect(
        openMirror({ ...cfg(), lengthSectors: 16384, legs: [{ path: legs[0].path }, { path: small.path }] }, faultyResolver),
      ).rejects.toThrow(`leg ${small.path} is smaller than the mirror: it has 8192 sectors, the mirror needs sectors 0..16383`);
    });
  });
});
