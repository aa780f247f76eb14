import { execFileSync, spawn } from 'child_process';
import * as path from 'path';
import { FileDevice, KcopydClient, KcopydFlags } from '@dmtool/kcopyd';
import { makeImage, sha256File, sha256Range, sha256Zeros } from '../support/images';
import { describeLoop, detachAll, LoopDevice, makeLoop, removeDir, tempDir } from '../support/loop';
import { DMTOOL, dmtool } from '../support/cli';

const MiB = 1 << 20;

describeLoop('kcopyd and the CLI on loop devices', () => {
  let dir: string;
  let srcFile: string;
  const loops: LoopDevice[] = [];

  beforeAll(() => {
    dir = tempDir();
    srcFile = path.join(dir, 'src.img');
    makeImage(srcFile, 16 * MiB, 'LOOPSRC');
    for (let i = 0; i < 3; i++) loops.push(makeLoop(dir, `leg${i}.img`, 16 * MiB));
  });

  afterAll(() => {
    detachAll();
    removeDir(dir);
  });

  it('reports a loop device geometry', () => {
    const d = FileDevice.open(loops[0].path);
    try {
      expect(d.isBlockDevice).toBe(true);
      expect(d.sizeBytes).toBe(16 * MiB);
      expect(d.logicalBlockSize).toBe(512);
      // a loop device is its backing file, so the two are never both given to one command
      expect(d.identity).toBe(FileDevice.identityOf(loops[0].backingFile));
      expect(d.identity).toMatch(/^file:\d+:\d+$/);
    } finally {
      d.close();
    }
    const big = makeLoop(dir, 'sector4k.img', 4 * MiB, { sectorSize: 4096 });
    const d4 = FileDevice.open(big.path);
    try {
      expect(d4.logicalBlockSize).toBe(4096);
      expect(d4.sizeSectors).toBe(8192);
    } finally {
      d4.close();
      big.detach();
    }
  });

  it('refuses a busy device with EBUSY (O_EXCL), in the library and the CLI', () => {
    const holder = FileDevice.open(loops[0].path, { write: true });
    try {
      expect(() => FileDevice.open(loops[0].path, { write: true })).toThrow(
        /EBUSY: open failed on \/dev\/loop\d+: device is mounted or in use/,
      );
      const r = dmtool(['copy', srcFile, loops[0].path]);
      expect(r.status).toBe(3);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(r.stderr).toMatch(/^dmtool: EBUSY: open failed on \/dev\/loop\d+/);
    } finally {
      holder.close();
    }
  });

  it('copies one source to three loop devices with O_DIRECT, byte for byte', async () => {
    const src = FileDevice.open(srcFile, { direct: true });
    const dests = loops.map((l) => FileDevice.open(l.path, { write: true, direct: true }));
    const client = new KcopydClient();
    try {
      const r = await client.copy(
        { device: src, sector: 0, count: src.sizeSectors },
        dests.map((d) => ({ device: d, sector: 0 })),
      );
      expect(r).toMatchObject({ readErr: false, writeErr: 0, sectorsDone: 32768 });
      await Promise.all(dests.map((d) => d.flush()));
    } finally {
      await client.destroy();
      [src, ...dests].forEach((d) => d.close());
    }
    const want = sha256File(srcFile);
    for (const l of loops) expect(sha256Range(l.path, 0, 16 * MiB)).toBe(want);
  });

  it('a destination that turns read-only sets exactly its writeErr bit', async () => {
    for (const l of loops) execFileSync('blockdev', ['--setrw', l.path]);
    const src = FileDevice.open(srcFile);
    const dests = loops.map((l) => FileDevice.open(l.path, { write: true }));
    const client = new KcopydClient();
    // Zero the legs first, so content after the copy shows who was written.
    await client.zero(dests.map((d) => ({ device: d, sector: 0, count: d.sizeSectors })));
    await Promise.all(dests.map((d) => d.flush()));
    execFileSync('blockdev', ['--setro', loops[2].path]);
    try {
      const r = await client.copy(
        { device: src, sector: 0, count: src.sizeSectors },
        dests.map((d) => ({ device: d, sector: 0 })),
        {
          flags: KcopydFlags.IGNORE_ERROR,
        },
      );
      expect(r.readErr).toBe(false);
      expect(r.writeErr).toBe(0b100);
      expect(new Set(r.errors.map((e) => `${e.code} ${e.op} ${e.path}`))).toEqual(new Set([`EPERM write ${loops[2].path}`]));
      await dests[0].flush();
      await dests[1].flush();
    } finally {
      execFileSync('blockdev', ['--setrw', loops[2].path]);
      await client.destroy();
      [src, ...dests].forEach((d) => d.close());
    }
    const want = sha256File(srcFile);
    expect(sha256Range(loops[0].path, 0, 16 * MiB)).toBe(want);
    expect(sha256Range(loops[1].path, 0, 16 * MiB)).toBe(want);
    expect(sha256Range(loops[2].path, 0, 16 * MiB)).toBe(sha256Zeros(16 * MiB));
  });

  it('the CLI refuses a read-only loop device before writing anything', () => {
    const ro = makeLoop(dir, 'ro.img', 16 * MiB, { readOnly: true });
    try {
      const before = sha256File(loops[0].backingFile);
      const r = dmtool(['copy', srcFile, loops[0].path, ro.path]);
      expect(r.status).toBe(3);
      expect(r.stderr).toMatch(
        new RegExp(`^dmtool: (EROFS|EACCES): open failed on ${ro.path}: cannot open for writing: device or file is read-only\\n$`),
      );
      expect(sha256File(loops[0].backingFile)).toBe(before);
    } finally {
      ro.detach();
    }
  });

  it('the CLI copies, then zeroes, with --json results', () => {
    const c = dmtool(['copy', srcFile, loops[0].path, loops[1].path, '--json']);
    expect(c.status).toBe(0);
    const result = JSON.parse(c.stdout);
    expect(result).toMatchObject({ sectors: 32768, sectorsDone: 32768, readErr: false, writeErr: 0, errors: [] });
    expect(sha256Range(loops[1].path, 0, 16 * MiB)).toBe(sha256File(srcFile));
    const z = dmtool(['zero', loops[0].path, '--offset', '1M', '--length', '2048']);
    expect(z.status).toBe(0);
    expect(z.stdout).toMatch(/^zeroed 2048 sectors on 1 device: 1\.0 MiB in [\d.]+ s \([\d.]+ (KiB|MiB|GiB)\/s\)\n$/);
    expect(sha256Range(loops[0].path, MiB, MiB)).toBe(sha256Zeros(MiB));
    expect(sha256Range(loops[0].path, 0, MiB)).toBe(sha256Range(srcFile, 0, MiB));
    expect(sha256Range(loops[0].path, 2 * MiB, 14 * MiB)).toBe(sha256Range(srcFile, 2 * MiB, 14 * MiB));
  });

  it('SIGINT stops a copy cleanly: exit 130, the reported prefix copied and flushed, the rest untouched', async () => {
    const zero = dmtool(['zero', loops[2].path]);
    expect(zero.status).toBe(0);
    const child = spawn(process.execPath, [DMTOOL, 'copy', srcFile, loops[2].path, '--rate', '8M', '--json']);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    // Interrupt once copying has visibly started (the first MiB has arrived).
    const firstMiB = sha256Range(srcFile, 0, MiB);
    for (let i = 0; i < 100 && sha256Range(loops[2].path, 0, MiB) !== firstMiB; i++) await new Promise((r) => setTimeout(r, 50));
    child.kill('SIGINT');
    const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(status).toBe(130);
    const result = JSON.parse(stdout);
    expect(result.interrupted).toBe(true);
    const done = result.sectorsDone as number;
    expect(done).toBeGreaterThan(0);
    expect(done).toBeLessThan(32768);
    expect(stderr).toBe(
      `dmtool: interrupted by SIGINT: ${done} of 32768 sectors copied and flushed; run the command again to copy the whole range\n`,
    );
    // Pieces are claimed in order and in-flight ones finish: the done part is a prefix.
    expect(sha256Range(loops[2].path, 0, done * 512)).toBe(sha256Range(srcFile, 0, done * 512));
    expect(sha256Range(loops[2].path, done * 512, (32768 - done) * 512)).toBe(sha256Zeros((32768 - done) * 512));
  });

  it('the CLI refuses the same device twice, a too-small destination and a range past the end', () => {
    const before = loops.map((l) => sha256File(l.backingFile));
    const small = path.join(dir, 'small.img');
    makeImage(small, 8 * MiB);
    const cases: [string[], RegExp][] = [
      [['copy', srcFile, loops[0].path, loops[0].path], /is the same device as destination 0/],
      [['copy', srcFile, small], /destination .*small\.img is too small: needs sectors 0\.\.32767, has 16384 sectors/],
      [
        ['copy', srcFile, loops[1].path, '--offset', '32000', '--length', '1000'],
        /source .* sectors 32000\.\.32999 end beyond the device end \(32768 sectors\)/,
      ],
      [['zero', loops[1].path, '--offset', '40000'], /nothing to zero/],
      [['copy', srcFile, loops[1].path, '--length', '1000x'], /--length: "1000x" is not a size/],
    ];
    for (const [args, msg] of cases) {
      const r = dmtool(args);
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(msg);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    }
    expect(loops.map((l) => sha256File(l.backingFile))).toEqual(before);
    expect(sha256File(small)).toBe(sha256Zeros(8 * MiB));
  });
});
