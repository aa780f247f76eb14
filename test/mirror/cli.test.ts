import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { Bitmap, decodeDiskLog, encodeDiskLog } from '@dmtool/dm-mirror';
import { attachLoop, describeLoop, detachAll, LoopDevice, makeLoop, removeDir, tempDir } from '../support/loop';
import { makeImage, readRange, sha256File, sha256Range } from '../support/images';
import { DMTOOL, dmtool as runCli } from '../support/cli';

const MiB = 1 << 20;
const LEG_BYTES = 16 * MiB;
const REGION = 256; // sectors, 128 KiB
const REGIONS = LEG_BYTES / 512 / REGION; // 128

function dmtool(args: string[], faults?: object) {
  const r = runCli(args, { faults, timeoutMs: 60000 });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

describeLoop('dmtool mirror-* on loop devices', () => {
  let dir: string;
  let legs: LoopDevice[];
  let log: LoopDevice;

  beforeAll(() => {
    dir = tempDir('dmtool-mirror-cli-');
  });

  beforeEach(() => {
    legs = ['a', 'b', 'c'].map((seed, i) => {
      const file = path.join(dir, `leg${i}.img`);
      makeImage(file, LEG_BYTES, seed);
      return attachLoop(file);
    });
    log = makeLoop(dir, 'log.img', 64 * 1024);
  });

  afterEach(() => detachAll());

  afterAll(() => {
    detachAll();
    removeDir(dir);
    // other suites may attach devices meanwhile: check that none of ours is left
    const now = execFileSync('losetup', ['-a'], { encoding: 'utf8' });
    expect(now.split('\n').filter((l) => l.includes(dir))).toEqual([]);
  });

  const legPaths = () => legs.map((l) => l.path);
  const logClean = () => decodeDiskLog(readRange(log.path, 0, 1536), { expectRegions: REGIONS }).clean;

  test('create, status, resync, check: exact lines and JSON', () => {
    const c = dmtool(['mirror-create', '--log', log.path, '--region-size', String(REGION), ...legPaths()]);
    expect(c.stderr).toBe('');
    expect(c.code).toBe(0);
    const info = `0 ${LEG_BYTES / 512} mirror 3 ${legPaths().join(' ')} 0/${REGIONS} 1 AAA 3 disk ${log.path} A`;
    expect(c.stdout.split('\n')).toContain(info);
    const st = dmtool(['mirror-status', '--log', log.path, ...legPaths(), '--json']);
    expect(st.code).toBe(0);
    const sj = JSON.parse(st.stdout).mirror;
    expect(sj.info).toBe(info);
    expect(sj.table).toBe(
      `0 ${LEG_BYTES / 512} mirror disk 2 ${log.path} ${REGION} 3 ${legPaths()
        .map((p) => `${p} 0`)
        .join(' ')}`,
    );
    expect(sj.regionSize).toBe(REGION);
    expect(sj.outOfSyncRegions).toBe(REGIONS);
    expect(sj.outOfSyncRanges).toEqual([[0, REGIONS - 1]]);

    const chk = dmtool(['mirror-check', ...legPaths(), '--region-size', String(REGION), '--json']);
    expect(chk.code).toBe(1);
    expect(JSON.parse(chk.stdout).differingRegions).toHaveLength(REGIONS);

    const r = dmtool(['mirror-resync', '--log', log.path, ...legPaths(), '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const rj = JSON.parse(r.stdout);
    expect(rj.regionsSynced).toBe(REGIONS);
    expect(rj.mirror.info).toBe(`0 ${LEG_BYTES / 512} mirror 3 ${legPaths().join(' ')} ${REGIONS}/${REGIONS} 1 AAA 3 disk ${log.path} A`);
    expect(logClean().count()).toBe(REGIONS);
    const ok = dmtool(['mirror-check', ...legPaths(), '--region-size', String(REGION)]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^legs identical: 128 regions of 256 sectors compared/);
  });

  test('--table line, dirty regions only, --dry-run writes nothing', () => {
    const clean = new Bitmap(REGIONS);
    clean.fill(true);
    [5, 6, 100].forEach((r) => clean.clear(r));
    fs.writeFileSync(log.path, encodeDiskLog(REGIONS, clean));
    const table = `0 ${LEG_BYTES / 512} mirror disk 2 ${log.path} ${REGION} 2 ${legs[0].path} 0 ${legs[1].path} 0`;
    const shas = [legs[0], legs[1], log].map((d) => sha256File(d.path));
    const dry = dmtool(['mirror-resync', '--table', table, '--dry-run']);
    expect(dry.code).toBe(0);
    expect(dry.stdout).toBe(`would copy 3 of 128 regions (384.0 KiB) from ${legs[0].path} to 1 leg\n`);
    expect([legs[0], legs[1], log].map((d) => sha256File(d.path))).toEqual(shas);
    const r = dmtool(['mirror-resync', '--table', table]);
    expect(r.code).toBe(0);
    const chk = dmtool(['mirror-check', legs[0].path, legs[1].path, '--region-size', String(REGION), '--json']);
    // only the three dirty regions were copied; every other region still differs
    expect(JSON.parse(chk.stdout).differingRegions).toEqual(
      Array.from({ length: REGIONS }, (_, i) => i).filter((i) => ![5, 6, 100].includes(i)),
    );
  });

  test('a leg failing with EIO is reported; the others complete', () => {
    expect(dmtool(['mirror-create', '--log', log.path, '--region-size', String(REGION), ...legPaths()]).code).toBe(0);
    const r = dmtool(['mirror-resync', '--log', log.path, ...legPaths(), '--json'], {
      rules: [{ op: 'write', code: 'EIO', path: legs[1].path, fromByte: 10 * REGION * 512 }],
    });
    expect(r.code).toBe(1);
    // Regions 10..13 are copied at once (--parallel 4): the first failure reported is one of them.
    expect(r.stderr).toMatch(
      new RegExp(`^dmtool: leg 1 ${legs[1].path} failed \\(S\\): EIO: write failed on ${legs[1].path} at sector (2560|2816|3072|3328) `),
    );
    const j = JSON.parse(r.stdout);
    expect(j.failedLegs.map((f: { index: number }) => f.index)).toEqual([1]);
    expect(j.mirror.info).toMatch(/ 1 ASA 3 disk /);
    expect(sha256File(legs[2].path)).toBe(sha256File(legs[0].path));
    expect(sha256Range(legs[1].path, 0, 10 * REGION * 512)).toBe(sha256Range(legs[0].path, 0, 10 * REGION * 512));
    expect(logClean().zeros()).toEqual(Array.from({ length: REGIONS - 10 }, (_, i) => 10 + i));
    expect([j.regionsFailed, j.failedRanges]).toEqual([REGIONS - 10, [[10, REGIONS - 1]]]);
  });

  test.each([
    ['region-start', 'mirror-resync:region-start', 70, 1],
    ['region-copied', 'mirror-resync:region-copied', 100, 1],
    ['recorded', 'mirror-resync:recorded', 1, 4],
    ['after 150 writes', undefined, 150, 1],
  ])('kill -9 at %s, rerun: identical legs, all-clean log', (_name, point, hit, parallel) => {
    expect(dmtool(['mirror-create', '--log', log.path, '--region-size', String(REGION), ...legPaths()]).code).toBe(0);
    const faults = point ? { crashAt: { point, hit } } : { crashAfterWrites: hit };
    const crashed = dmtool(['mirror-resync', '--log', log.path, ...legPaths(), '--parallel', String(parallel)], faults);
    expect(crashed.signal).toBe('SIGKILL');
    const dirtyAfterCrash = logClean().zeros().length;
    expect(dirtyAfterCrash).toBeGreaterThan(0);
    expect(dirtyAfterCrash).toBeLessThan(REGIONS);
    const again = dmtool(['mirror-resync', '--log', log.path, ...legPaths(), '--json']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).regionsToSync).toBe(dirtyAfterCrash);
    const s0 = sha256File(legs[0].path);
    expect(sha256File(legs[1].path)).toBe(s0);
    expect(sha256File(legs[2].path)).toBe(s0);
    expect(logClean().count()).toBe(REGIONS);
  });

  // A power cut: writes not yet flushed are lost and a flush in progress may
  // have persisted its writes in any order. A region recorded clean whose
  // copy was not durable would show as differing legs after the rerun.
  test.each([
    ['region-copied', { crashAt: { point: 'mirror-resync:region-copied', hit: 40 } }],
    ['recorded', { crashAt: { point: 'mirror-resync:recorded', hit: 2 } }],
    ['recorded, late', { crashAt: { point: 'mirror-resync:recorded', hit: 3 } }],
    ['during a flush (3 writes applied)', { crashDuringFlush: 3 }],
    ['during a flush (40 writes applied)', { crashDuringFlush: 40 }],
    ['during a flush (100 writes applied)', { crashDuringFlush: 100 }],
  ])('power cut at %s, rerun: identical legs, all-clean log', (_name, crash) => {
    expect(dmtool(['mirror-create', '--log', log.path, '--region-size', String(REGION), ...legPaths()]).code).toBe(0);
    const crashed = dmtool(['mirror-resync', '--log', log.path, ...legPaths(), '--parallel', '4'], {
      volatileCache: { order: 'reverse' },
      ...crash,
    });
    expect(crashed.signal).toBe('SIGKILL');
    const again = dmtool(['mirror-resync', '--log', log.path, ...legPaths(), '--json']);
    expect(again.stderr).toBe('');
    expect(again.code).toBe(0);
    const s0 = sha256File(legs[0].path);
    expect(sha256File(legs[1].path)).toBe(s0);
    expect(sha256File(legs[2].path)).toBe(s0);
    expect(logClean().count()).toBe(REGIONS);
  });

  test('a real kill -9 from outside during a rate-limited resync, then rerun', async () => {
    expect(dmtool(['mirror-create', '--log', log.path, '--region-size', String(REGION), ...legPaths()]).code).toBe(0);
    const env = { ...process.env };
    delete env.DMTOOL_FAULTS;
    const child = spawn(process.execPath, [DMTOOL, 'mirror-resync', '--log', log.path, ...legPaths(), '--rate', '4M'], {
      env,
      stdio: 'ignore',
    });
    const exited = new Promise<string | null>((resolve) => child.on('exit', (_code, signal) => resolve(signal)));
    const deadline = Date.now() + 20000;
    while (logClean().count() === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGKILL');
    expect(await exited).toBe('SIGKILL');
    const left = logClean().zeros().length;
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThan(REGIONS);
    const again = dmtool(['mirror-resync', '--log', log.path, ...legPaths(), '--json']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout).regionsToSync).toBe(left);
    const s0 = sha256File(legs[0].path);
    expect(sha256File(legs[1].path)).toBe(s0);
    expect(sha256File(legs[2].path)).toBe(s0);
    expect(logClean().count()).toBe(REGIONS);
  });

  test.each([
    ['bad magic', () => fs.writeFileSync(log.path, Buffer.from('garbage!')), `bad magic 0x62726167 at sector 0`],
    [
      'wrong nr_regions',
      () => fs.writeFileSync(log.path, encodeDiskLog(REGIONS + 1, new Bitmap(REGIONS + 1))),
      `records 129 regions at sector 0, but the mirror has 128`,
    ],
  ])('malformed log (%s): one line, exit 2, nothing written', (_name, spoil, message) => {
    spoil();
    const shas = [...legs, log].map((d) => sha256File(d.path));
    const r = dmtool(['mirror-resync', '--log', log.path, '--region-size', String(REGION), ...legPaths()]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')).toEqual([expect.stringContaining(message), '']);
    expect(r.stderr).toMatch(new RegExp(`^dmtool: dirty log ${log.path} `));
    expect([...legs, log].map((d) => sha256File(d.path))).toEqual(shas);
  });

  test.each(['mirror-create', 'mirror-status', 'mirror-resync', 'mirror-check'])('%s --help shows an example', (cmd) => {
    const r = dmtool([cmd, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(new RegExp(`Examples:\\n  dmtool ${cmd} `));
    expect(r.stdout).toMatch(/--json/);
  });

  test('refusals: same device twice, different leg sizes, log too small, existing log', () => {
    const twice = dmtool(['mirror-resync', '--log', log.path, legs[0].path, legs[0].path]);
    expect(twice.code).toBe(2);
    expect(twice.stderr).toBe(`dmtool: ${legs[0].path} is given twice (as leg 0 and as leg 1)\n`);
    const small = makeLoop(dir, 'small.img', LEG_BYTES / 2);
    const diff = dmtool(['mirror-create', '--log', log.path, '--region-size', String(REGION), legs[0].path, small.path]);
    expect(diff.code).toBe(2);
    expect(diff.stderr).toBe(
      `dmtool: legs differ in size: ${legs[0].path} has 32768 sectors, ${small.path} has 16384 (give the mirror length with a table line)\n`,
    );
    const tiny = makeLoop(dir, 'tiny.img', 1024);
    const t = dmtool(['mirror-create', '--log', tiny.path, '--region-size', '2', legs[0].path, legs[1].path]);
    expect(t.code).toBe(2);
    expect(t.stderr).toBe(`dmtool: dirty log ${tiny.path} is too small: 1024 bytes, 16384 regions need sectors 0..5 (3072 bytes)\n`);
    expect(dmtool(['mirror-create', '--log', log.path, ...legPaths()]).code).toBe(0);
    const again = dmtool(['mirror-create', '--log', log.path, ...legPaths()]);
    expect(again.code).toBe(2);
    expect(again.stderr).toMatch(/already holds a dm-mirror log \(32 regions, sector 0\); give --force/);
  });

  // Reports after a failed resync: what the log on disk records, exactly.
  const regionRange = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

  test('a read error on leg 0 stops the resync: every region still out of sync is reported, as the log records', () => {
    expect(dmtool(['mirror-create', '--log', log.path, '--region-size', String(REGION), ...legPaths()]).code).toBe(0);
    const at = 32 * REGION * 512;
    const r = dmtool(['mirror-resync', '--log', log.path, ...legPaths(), '--parallel', '1'], {
      rules: [{ op: 'read', code: 'EIO', path: legs[0].path, fromByte: at, toByte: at + 1 }],
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `dmtool: leg 0 ${legs[0].path} failed (S): EIO: read failed on ${legs[0].path} at sector 8192 (+256 sectors): injected fault\n` +
        'dmtool: 96 regions left out of sync: 32-127\n',
    );
    const out = r.stdout.split('\n');
    expect(out[0]).toMatch(/^resynced 32 of 128 out-of-sync regions \(4\.0 MiB in /);
    expect(out[1]).toBe(`0 32768 mirror 3 ${legPaths().join(' ')} 32/128 1 SAA 3 disk ${log.path} A`);
    expect(logClean().zeros()).toEqual(regionRange(32, 128));
  });

  test('a failed leg flush is not reported as success: the log records every region dirty, and so does the status', () => {
    expect(dmtool(['mirror-create', '--log', log.path, '--region-size', String(REGION), ...legPaths()]).code).toBe(0);
    const r = dmtool(['mirror-resync', '--log', log.path, ...legPaths(), '--json'], {
      rules: [{ op: 'flush', code: 'EIO', path: legs[1].path }],
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toBe(
      `dmtool: leg 1 ${legs[1].path} failed (F): EIO: flush failed on ${legs[1].path}: injected fault\n` +
        'dmtool: 128 regions left out of sync: 0-127\n',
    );
    const j = JSON.parse(r.stdout);
    expect([j.ok, j.regionsSynced, j.mirror.inSyncRegions, j.mirror.inSync, j.mirror.outOfSyncRanges]).toEqual([
      false,
      0,
      0,
      false,
      [[0, 127]],
    ]);
    expect(j.mirror.info).toBe(`0 32768 mirror 3 ${legPaths().join(' ')} 0/128 1 AFA 3 disk ${log.path} A`);
    expect(logClean().count()).toBe(0);
    const human = dmtool(['mirror-resync', '--log', log.path, ...legPaths()], {
      rules: [{ op: 'flush', code: 'EIO', path: legs[1].path }],
    });
    expect(human.code).toBe(1);
    expect(human.stdout.split('\n').slice(0, 2)).toEqual([
      expect.stringMatching(/^resynced 0 of 128 out-of-sync regions \(/),
      `0 32768 mirror 3 ${legPaths().join(' ')} 0/128 1 AFA 3 disk ${log.path} A`,
    ]);
    expect(logClean().count()).toBe(0);
  });
});

describeLoop('mirror-resync --direct on 4096-byte-sector devices', () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir('dmtool-mirror-direct-');
  });
  afterAll(() => {
    detachAll();
    removeDir(dir);
    const now = execFileSync('losetup', ['-a'], { encoding: 'utf8' });
    expect(now.split('\n').filter((l) => l.includes(dir))).toEqual([]);
  });

  test('a region size taken from the log that O_DIRECT cannot copy is refused before the log is written', () => {
    const files = ['leg0', 'leg1', 'log'].map((name) => path.join(dir, `${name}.img`));
    makeImage(files[0], MiB, 'd0');
    makeImage(files[1], MiB, 'd1');
    makeImage(files[2], 64 * 1024);
    const devices: LoopDevice[] = [];
    try {
      for (const f of files) devices.push(attachLoop(f, { sectorSize: 4096 }));
      const [leg0, leg1, log] = devices.map((d) => d.path);
      expect(dmtool(['mirror-create', '--log', log, '--region-size', '4', leg0, leg1]).code).toBe(0);
      // A version 1 log: resuming rewrites it as version 2, so a write before the refusal would show.
      const fd = fs.openSync(log, 'r+');
      try {
        const version1 = Buffer.alloc(4);
        version1.writeUInt32LE(1);
        fs.writeSync(fd, version1, 0, 4, 4);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      const before = [leg0, leg1, log].map((p) => sha256File(p));
      // Any write at all kills the process: the refusal must come first.
      const r = dmtool(['mirror-resync', '--direct', '--log', log, leg0, leg1], { crashAfterWrites: 1 });
      expect(r.signal).toBeNull();
      expect(r.stderr).toBe(
        `dmtool: leg ${leg0} has 4096-byte blocks: with --direct the offset (0), mirror length (2048) and region size (4) must be multiples of 8 sectors\n`,
      );
      expect(r.code).toBe(2);
      expect([leg0, leg1, log].map((p) => sha256File(p))).toEqual(before);
      // Without --direct the same resync runs, and does rewrite the log.
      expect(dmtool(['mirror-resync', '--log', log, leg0, leg1]).code).toBe(0);
      expect(sha256File(leg1)).toBe(sha256File(leg0));
      expect(readRange(log, 4, 4).readUInt32LE()).toBe(2);
    } finally {
      for (const d of devices) d.detach();
    }
  });
});
