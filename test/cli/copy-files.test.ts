import * as fs from 'fs';
import * as path from 'path';
import { spawnSync } from 'child_process';
import { DMTOOL, dmtool, startDmtool, waitFor } from '../support/cli';
import { makeImage, patternBytes, sha256File } from '../support/images';
import { attachLoop, describeLoop, LoopDevice, removeDir, tempDir } from '../support/loop';

/**
 * copy into files: a missing destination is created sized to the range,
 * the source's holes stay holes (--sparse), a failed copy leaves no file
 * behind, and a copy with --map resumes after SIGINT or SIGKILL.
 */
const MiB = 1 << 20;
const SOURCE_BYTES = 16 * MiB;
/** The explicit zeros written into the source's data: allocated, but all zero. */
const ZERO_DATA_BYTES = MiB;

function writeAt(file: string, byteOffset: number, data: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, data, 0, data.length, byteOffset);
  } finally {
    fs.closeSync(fd);
  }
}

/** 16 MiB: data 0..1M, hole, data 4M..5M, allocated zeros 5M..6M, hole, one 4 KiB block at 12M, hole. */
function makeSparseSource(file: string): void {
  makeImage(file, SOURCE_BYTES);
  writeAt(file, 0, patternBytes('SPARSE', 0, 2048));
  writeAt(file, 4 * MiB, patternBytes('SPARSE', 8192, 2048));
  writeAt(file, 5 * MiB, Buffer.alloc(ZERO_DATA_BYTES));
  writeAt(file, 12 * MiB, patternBytes('SPARSE', 24576, 8));
}

/** Allocated bytes (st_blocks is in 512-byte units whatever the file system). */
function allocatedBytes(file: string): number {
  return fs.statSync(file).blocks * 512;
}

describe('copy into files', () => {
  let dir: string;
  const f = (name: string) => path.join(dir, name);
  let src: string;

  beforeAll(() => {
    dir = tempDir('dmtool-copy-files-');
    src = f('src.img');
    makeSparseSource(src);
  });
  afterAll(() => removeDir(dir));

  it('creates a missing destination (mode from the umask) with the holes of the source: --sparse=auto', () => {
    const r = dmtool(['copy', src, f('auto.img')]);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    expect(r.stdout).toMatch(new RegExp(`^copied 32768 sectors from ${src} to 1 destination: 16\\.0 MiB in `));
    expect(sha256File(f('auto.img'))).toBe(sha256File(src));
    const st = fs.statSync(f('auto.img'));
    expect(st.size).toBe(SOURCE_BYTES);
    expect(st.mode & 0o777).toBe(0o666 & ~process.umask());
    expect(allocatedBytes(f('auto.img'))).toBe(allocatedBytes(src));
  });

  it('--sparse=always also leaves all-zero blocks of the data unwritten; --sparse=never writes everything', () => {
    expect(dmtool(['copy', src, f('always.img'), '--sparse=always']).status).toBe(0);
    expect(sha256File(f('always.img'))).toBe(sha256File(src));
    expect(allocatedBytes(f('always.img'))).toBe(allocatedBytes(src) - ZERO_DATA_BYTES);
    expect(dmtool(['copy', src, f('never.img'), '--sparse=never']).status).toBe(0);
    expect(sha256File(f('never.img'))).toBe(sha256File(src));
    expect(allocatedBytes(f('never.img'))).toBe(SOURCE_BYTES);
  });

  it('an existing destination full of junk ends byte-identical, the source holes punched into it', () => {
    makeImage(f('junk.img'), SOURCE_BYTES, 'JUNK');
    expect(allocatedBytes(f('junk.img'))).toBe(SOURCE_BYTES);
    const punchFails = dmtool(['copy', src, f('junk.img')], { faults: { rules: [{ op: 'zero', code: 'EIO', path: 'junk.img' }] } });
    expect(punchFails.status).toBe(1);
    // Hole pieces run in parallel: whichever punch fails first is reported; it lies in one of the source's holes (sectors).
    const failedAt = /^dmtool: EIO: zero failed on .*junk\.img at sector (\d+) /.exec(punchFails.stderr);
    const holes = [
      [2048, 8192],
      [12288, 24576],
      [24584, 32768],
    ];
    expect(holes.some(([start, end]) => Number(failedAt?.[1]) >= start && Number(failedAt?.[1]) < end)).toBe(true);
    const r = dmtool(['copy', src, f('junk.img')]);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    expect(sha256File(f('junk.img'))).toBe(sha256File(src));
    expect(allocatedBytes(f('junk.img'))).toBe(allocatedBytes(src));
  });

  it('a new file covers --dest-offset plus the range; an existing file keeps its size', () => {
    const r = dmtool(['copy', src, f('part.img'), '--offset', '8192', '--length', '2M', '--dest-offset', '1M']);
    expect(r.status).toBe(0);
    const part = fs.readFileSync(f('part.img'));
    expect(part.length).toBe(3 * MiB);
    expect(part.subarray(0, MiB).equals(Buffer.alloc(MiB))).toBe(true);
    expect(part.subarray(MiB).equals(fs.readFileSync(src).subarray(4 * MiB, 6 * MiB))).toBe(true);
    expect(dmtool(['copy', src, f('part.img'), '--length', '1M']).status).toBe(0);
    expect(fs.statSync(f('part.img')).size).toBe(3 * MiB);
  });

  it("makes a created destination's folder entry durable before copying (the folder is fsynced)", () => {
    const sub = f('sub');
    fs.mkdirSync(sub);
    const log = f('strace.log');
    const r = spawnSync(
      'strace',
      ['-f', '-qq', '-e', 'trace=openat,fsync', '-o', log, process.execPath, DMTOOL, 'copy', src, path.join(sub, 'new.img')],
      {
        encoding: 'utf8',
        timeout: 120000,
      },
    );
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    const lines = fs.readFileSync(log, 'utf8').split('\n');
    const folderFds = lines
      .map((l) => new RegExp(`^(\\d+) +openat\\(AT_FDCWD, "${sub}", O_RDONLY[^)]*\\) = (\\d+)$`).exec(l))
      .filter((m): m is RegExpExecArray => m !== null)
      .map((m) => `${m[1]} fsync(${m[2]})`);
    expect(lines.some((l) => folderFds.some((call) => l.replace(/ +/g, ' ').startsWith(`${call} = 0`)))).toBe(true);
    expect(sha256File(path.join(sub, 'new.img'))).toBe(sha256File(src));
  });

  it('a dry run creates nothing and says what it would create', () => {
    const r = dmtool(['copy', src, f('dry.img'), '--dry-run']);
    expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({
      status: 0,
      stdout: `would copy 32768 sectors from ${src} sector 0 to ${f('dry.img')} sector 0; would create ${f('dry.img')} (16777216 bytes)\n`,
      stderr: '',
    });
    expect(fs.existsSync(f('dry.img'))).toBe(false);
  });

  it('a copy that fails removes the file it created; with --map the file and the map stay', () => {
    const faults = { rules: [{ op: 'write', code: 'EIO', path: 'failing.img', fromByte: 4 * MiB }] };
    const r = dmtool(['copy', src, f('failing.img'), '--sparse=never'], { faults });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^dmtool: EIO: write failed on .*failing\.img/);
    expect(fs.existsSync(f('failing.img'))).toBe(false);
    // The JSON names only created files that are still there.
    const removedJson = dmtool(['copy', src, f('failing.img'), '--sparse=never', '--json'], { faults });
    expect(removedJson.status).toBe(1);
    expect(JSON.parse(removedJson.stdout).created).toEqual([]);
    expect(fs.existsSync(f('failing.img'))).toBe(false);
    const kept = dmtool(['copy', src, f('failing.img'), '--sparse=never', '--map', f('failing.map'), '--json'], { faults });
    expect(kept.status).toBe(1);
    expect(JSON.parse(kept.stdout).created).toEqual([f('failing.img')]);
    expect(kept.stderr).toContain(
      `dmtool: the map keeps what was done; to finish: dmtool copy ${src} ${f('failing.img')} --sparse=never --map ${f('failing.map')} --json --resume\n`,
    );
    expect(fs.statSync(f('failing.img')).size).toBe(SOURCE_BYTES);
    expect(fs.readFileSync(f('failing.map'), 'utf8')).toMatch(
      /^dmtool-copy-map 1\nsource "file:\d+:\d+" 16777216 ".*src\.img"\ndestination "file:\d+:\d+" 16777216 ".*failing\.img"\nrange 0 0 32768\n(done \d+ \d+\n)*$/,
    );
    const resumed = dmtool(['copy', src, f('failing.img'), '--sparse=never', '--map', f('failing.map'), '--resume']);
    expect(resumed.status).toBe(0);
    expect(sha256File(f('failing.img'))).toBe(sha256File(src));
    expect(fs.existsSync(f('failing.map'))).toBe(false);
  });
});

describe('copy --map: resume after an interrupt', () => {
  let dir: string;
  const f = (name: string) => path.join(dir, name);
  const SECTORS = 16384;

  beforeEach(() => {
    dir = tempDir('dmtool-copy-resume-');
    makeImage(f('src.img'), SECTORS * 512, 'RESUME');
  });
  afterEach(() => removeDir(dir));

  const doneSectors = (map: string) =>
    [...fs.readFileSync(map, 'utf8').matchAll(/^done (\d+) (\d+)$/gm)].reduce((n, m) => n + Number(m[2]), 0);
  const hasDone = (map: string) => fs.existsSync(map) && doneSectors(map) > 0;

  it('after SIGINT the message gives the resume command; the resumed copy is byte-identical and removes the map', async () => {
    const args = ['copy', f('src.img'), f('dst.img'), '--map', f('copy.map'), '--rate', '1M'];
    const cli = startDmtool(args);
    expect(await waitFor(() => hasDone(f('copy.map')), 20000)).toBe(true);
    cli.signal('SIGINT');
    const r = await cli.done;
    expect(r.status).toBe(130);
    const done = doneSectors(f('copy.map'));
    expect(done).toBeGreaterThan(0);
    expect(done).toBeLessThan(SECTORS);
    expect(r.stderr).toBe(
      `dmtool: interrupted by SIGINT: ${done} of 16384 sectors copied and flushed; to finish, run: dmtool ${args.join(' ')} --resume\n`,
    );
    const mapBefore = fs.readFileSync(f('copy.map'), 'utf8');
    const dry = dmtool([...args, '--resume', '--dry-run']);
    expect({ status: dry.status, stdout: dry.stdout }).toEqual({
      status: 0,
      stdout: `would copy 16384 sectors (${SECTORS - done} left: the map records ${done} done) from ${f('src.img')} sector 0 to ${f('dst.img')} sector 0\n`,
    });
    expect(fs.readFileSync(f('copy.map'), 'utf8')).toBe(mapBefore);
    const resumed = dmtool([...args, '--resume', '--json']);
    expect(resumed.status).toBe(0);
    expect(JSON.parse(resumed.stdout)).toMatchObject({ resumedSectors: done, sectorsDone: SECTORS - done, percent: 100, created: [] });
    expect(sha256File(f('dst.img'))).toBe(sha256File(f('src.img')));
    expect(fs.existsSync(f('copy.map'))).toBe(false);
  });

  it('after SIGKILL mid-copy the map and the created file stay, and --resume finishes a byte-identical copy', async () => {
    const args = ['copy', f('src.img'), f('dst.img'), '--map', f('copy.map'), '--rate', '1M'];
    const cli = startDmtool(args);
    expect(await waitFor(() => hasDone(f('copy.map')), 20000)).toBe(true);
    cli.signal('SIGKILL');
    expect((await cli.done).signal).toBe('SIGKILL');
    expect(doneSectors(f('copy.map'))).toBeLessThan(SECTORS);
    const resumed = dmtool([...args, '--resume']);
    expect({ status: resumed.status, stderr: resumed.stderr }).toEqual({ status: 0, stderr: '' });
    expect(sha256File(f('dst.img'))).toBe(sha256File(f('src.img')));
    expect(fs.existsSync(f('copy.map'))).toBe(false);
  });
});

describe('copy --map: a power cut', () => {
  it('loses only writes the map does not name: the map follows the flush, so --resume ends byte-identical', () => {
    const dir = tempDir('dmtool-copy-powercut-');
    const f = (name: string) => path.join(dir, name);
    try {
      makeImage(f('src.img'), 8 * MiB, 'POWERCUT');
      const args = ['copy', f('src.img'), f('dst.img'), '--map', f('copy.map'), '--rate', '2M', '--sparse=never'];
      // Writes stay in a volatile cache until a flush; the power goes after the tenth of sixteen 512 KiB writes.
      const cut = dmtool(args, { faults: { volatileCache: { order: 'reverse' }, crashAfterWrites: 10 } });
      expect(cut.signal).toBe('SIGKILL');
      const done = [...fs.readFileSync(f('copy.map'), 'utf8').matchAll(/^done (\d+) (\d+)$/gm)].reduce((n, m) => n + Number(m[2]), 0);
      expect(done).toBeGreaterThan(0);
      expect(done).toBeLessThan(10 * 1024);
      const resumed = dmtool([...args, '--resume']);
      expect({ status: resumed.status, stderr: resumed.stderr }).toEqual({ status: 0, stderr: '' });
      expect(sha256File(f('dst.img'))).toBe(sha256File(f('src.img')));
    } finally {
      removeDir(dir);
    }
  });
});

describeLoop('copy to a block device: zero blocks by request', () => {
  let dir: string;
  let loop: LoopDevice | undefined;
  const f = (name: string) => path.join(dir, name);

  beforeEach(() => {
    dir = tempDir('dmtool-copy-sparse-dev-');
    makeSparseSource(f('src.img'));
    makeImage(f('backing.img'), SOURCE_BYTES, 'JUNK');
    loop = attachLoop(f('backing.img'));
  });
  afterEach(() => {
    loop?.detach();
    removeDir(dir);
  });

  it('--sparse=always zeroes with zeroRange (BLKZEROOUT): a failing zeroRange fails the copy, plain writes do not use it', () => {
    const dev = (loop as LoopDevice).path;
    const faults = { rules: [{ op: 'zero', code: 'EIO', path: dev }] };
    const auto = dmtool(['copy', f('src.img'), dev], { faults });
    expect({ status: auto.status, stderr: auto.stderr }).toEqual({ status: 0, stderr: '' });
    expect(sha256File(dev)).toBe(sha256File(f('src.img')));
    makeImage(f('junk.img'), SOURCE_BYTES, 'JUNK2');
    expect(dmtool(['copy', f('junk.img'), dev]).status).toBe(0);
    const failing = dmtool(['copy', f('src.img'), dev, '--sparse=always'], { faults });
    expect(failing.status).toBe(1);
    expect(failing.stderr).toMatch(/^dmtool: EIO: zero failed on /);
    const always = dmtool(['copy', f('src.img'), dev, '--sparse=always']);
    expect({ status: always.status, stderr: always.stderr }).toEqual({ status: 0, stderr: '' });
    expect(sha256File(dev)).toBe(sha256File(f('src.img')));
  });
});
