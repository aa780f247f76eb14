import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { DMTOOL } from './support/cli';
import { makeImage, readRange, sha256, sha256File } from './support/images';
import { describeLoop, removeDir, tempDir } from './support/loop';

const examples = path.join(__dirname, '..', 'examples');

function runExample(name: string, args: string[]) {
  return spawnSync(process.execPath, [path.join(examples, name), ...args], { encoding: 'utf8' });
}

describe('examples', () => {
  let dir: string;
  beforeEach(() => (dir = tempDir()));
  afterEach(() => removeDir(dir));

  it('copy-to-many.js copies an image to three destinations with progress', () => {
    const src = path.join(dir, 'src.img');
    makeImage(src, 3 << 20, 'EX');
    const dests = [1, 2, 3].map((i) => path.join(dir, `d${i}.img`));
    dests.forEach((d) => makeImage(d, 3 << 20));
    const r = runExample('copy-to-many.js', [src, ...dests]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    // 6 pieces of 1024 sectors: 16, 33, 50, 66, 83, 100 percent; the example prints quarters.
    expect(r.stdout).toBe('progress 50%\nprogress 100%\ncopied 6144 sectors to 3 destinations: readErr=false writeErr=0\n');
    for (const d of dests) expect(sha256File(d)).toBe(sha256File(src));
  });

  it('snapshot-and-merge.js keeps the old chunk in the COW and merges it back', () => {
    const origin = path.join(dir, 'origin.img');
    const cow = path.join(dir, 'cow.img');
    makeImage(origin, 4 << 20, 'ORIGIN');
    makeImage(cow, 1 << 20);
    const originalSha = sha256File(origin);
    const first = sha256(readRange(origin, 0, 4096)).slice(0, 16);
    const written = sha256(Buffer.alloc(4096, 0xee)).slice(0, 16);
    const r = runExample('snapshot-and-merge.js', [origin, cow]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(
      [
        `snapshot taken: status 16/2048 16, first chunk ${first}`,
        `origin written: status 24/2048 16, origin ${written}, snapshot view ${first}`,
        `merged 1 chunk(s) back: status 16/2048 16, origin ${first}`,
        '',
      ].join('\n'),
    );
    expect(sha256File(origin)).toBe(originalSha);
  });

  it('mirror-resync.js resyncs three legs from a new log and keeps them identical through a write', () => {
    const legs = [0, 1, 2].map((i) => path.join(dir, `leg${i}.img`));
    legs.forEach((p, i) => makeImage(p, 4 << 20, `LEG${i}`));
    const log = path.join(dir, 'log.img');
    makeImage(log, 64 << 10);
    const leg0Before = readRange(legs[0], 0, 4 << 20);
    const r = runExample('mirror-resync.js', [log, ...legs]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const names = legs.join(' ');
    expect(r.stdout).toBe(
      [
        `created: 3 ${names} 0/8 1 AAA 3 disk ${log} A`,
        `resynced 8 regions: 3 ${names} 8/8 1 AAA 3 disk ${log} A`,
        `after a mirrored write: 3 ${names} 8/8 1 AAA 3 disk ${log} A`,
        'check: 0 of 8 regions differ',
        '',
      ].join('\n'),
    );
    leg0Before.fill(0x5a, 2048 * 512, 3072 * 512);
    for (const leg of legs) expect(sha256File(leg)).toBe(sha256(leg0Before));
    // The log on disk: every region clean (bits 0..7 set).
    expect(readRange(log, 1024, 4)).toEqual(Buffer.from([0xff, 0, 0, 0]));
  });
});

/** What served-snapshot-fs.sh needs beside root and loop devices; missing, it is skipped (CI installs it: .ci/run). */
function filesystemTools(): boolean {
  const missing = ['nbdfuse', 'mkfs.ext4', 'e2fsck'].filter((t) => spawnSync('sh', ['-c', `command -v ${t}`]).status !== 0);
  if (!fs.existsSync('/dev/fuse')) missing.push('/dev/fuse');
  if (missing.length === 0) return true;
  if (process.env.CI === 'true') {
    test('served-snapshot-fs.sh has its tools', () => {
      throw new Error(`missing ${missing.join(', ')}; .ci/run installs them (apt-get install libnbd-bin e2fsprogs)`);
    });
  } else console.warn(`skipping served-snapshot-fs.sh: missing ${missing.join(', ')} (apt-get install libnbd-bin e2fsprogs)`);
  return false;
}

describeLoop('examples/served-snapshot-fs.sh', () => {
  const run = filesystemTools() ? it : it.skip;
  let dir: string;
  beforeEach(() => (dir = tempDir()));
  afterEach(() => removeDir(dir));

  run('an ext4 origin changed through NBD while the snapshot keeps the old files; the merge rolls the origin back', () => {
    const r = spawnSync('bash', [path.join(examples, 'served-snapshot-fs.sh'), dir], {
      encoding: 'utf8',
      env: { ...process.env, DMTOOL: `${process.execPath} ${DMTOOL}`, PATH: `/usr/sbin:/usr/bin:/sbin:/bin:${process.env.PATH ?? ''}` },
      timeout: 100000,
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(
      [
        'origin.img: ext4 holding notes.txt (version 1); snapshot taken into cow.img',
        'serving origin (snapshot-origin) and snap (snapshot, read-only) over NBD',
        'origin, through nbdfuse and a loop device: notes.txt version 2; files: added.txt lost+found notes.txt',
        'snapshot, through nbdfuse and a read-only loop device: notes.txt version 1; files: lost+found notes.txt',
        'e2fsck -fn: origin clean, snapshot clean',
        'stopped; every device flushed',
        'snapshot-merge: the origin now holds what the snapshot showed',
        'origin.img after the merge: notes.txt version 1; files: lost+found notes.txt; e2fsck clean',
        '',
      ].join('\n'),
    );
    // Nothing left behind: no mount, no loop device, no nbdfuse.
    expect(fs.readFileSync('/proc/mounts', 'utf8')).not.toContain(dir);
    expect(spawnSync('losetup', ['-l', '-n', '-O', 'BACK-FILE'], { encoding: 'utf8' }).stdout).not.toContain(dir);
    expect(fs.readFileSync(path.join(dir, 'nbdfuse.log'), 'utf8')).toBe('');
    expect(spawnSync('e2fsck', ['-fn', path.join(dir, 'origin.img')]).status).toBe(0);
  });
});
