import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { dmtool } from '../support/cli';
import { makeBaseOrigin, makeZeroFile } from '../support/fixtures';
import { makeImage, sha256File } from '../support/images';
import { attachLoop, describeLoop, detachAll, LoopDevice, removeDir, tempDir } from '../support/loop';

/**
 * A dry run opens what the real run opens, with the same checks (write
 * access included), and predicts what the real run would do; writing
 * nothing. Each refusal is compared with the real run's.
 */
const MiB = 1 << 20;

let dir: string;
beforeAll(() => {
  dir = tempDir('dmtool-dry-run-');
});
afterAll(() => removeDir(dir));

let n = 0;
function sub(): string {
  const d = path.join(dir, `c${n++}`);
  fs.mkdirSync(d);
  return d;
}

function shas(files: string[]): string[] {
  return files.map((f) => sha256File(f));
}

/** The dry run and the real run are refused alike: same exit status, same line, nothing written. */
function refusedAlike(args: string[], files: string[], status: number, message: RegExp): void {
  const before = shas(files);
  const dry = dmtool([...args, '--dry-run']);
  const real = dmtool(args);
  expect({ status: dry.status, stderr: dry.stderr, stdout: dry.stdout }).toEqual({
    status: real.status,
    stderr: real.stderr,
    stdout: real.stdout,
  });
  expect(dry.status).toBe(status);
  expect(dry.stderr).toMatch(message);
  expect(dry.stderr.split('\n')).toHaveLength(2);
  expect(shas(files)).toEqual(before);
}

describeLoop('dry runs on a read-only loop device are refused as the real run is (exit 3)', () => {
  let ro: LoopDevice;
  let d: string;
  beforeAll(() => {
    d = sub();
    const backing = path.join(d, 'ro.img');
    makeImage(backing, 4 * MiB, 'RO');
    ro = attachLoop(backing, { readOnly: true });
  });
  afterAll(() => {
    detachAll();
    expect(execFileSync('losetup', ['-a'], { encoding: 'utf8' })).not.toContain(dir);
  });

  const erofs = () => new RegExp(`^dmtool: EROFS: open failed on ${ro.path}: cannot open for writing: device or file is read-only\\n$`);

  test('copy and zero', () => {
    const src = path.join(d, 'src.img');
    makeImage(src, 4 * MiB, 'SRC');
    refusedAlike(['copy', src, ro.path], [src, ro.backingFile], 3, erofs());
    refusedAlike(['zero', ro.path], [ro.backingFile], 3, erofs());
  });

  test('snapshot-create, snapshot-write to the origin, snapshot-merge', () => {
    const origin = path.join(d, 'origin.img');
    const cow = path.join(d, 'cow.img');
    makeBaseOrigin(origin, 4 * MiB);
    makeZeroFile(cow, MiB);
    refusedAlike(['snapshot-create', origin, ro.path, '--chunk-size', '8'], [origin, ro.backingFile], 3, erofs());
    // A snapshot of the read-only device as origin.
    expect(dmtool(['snapshot-create', ro.path, cow, '--chunk-size', '8']).status).toBe(0);
    const data = path.join(d, 'data.bin');
    fs.writeFileSync(data, Buffer.alloc(4096, 7));
    refusedAlike(['snapshot-write', ro.path, cow, '--target', 'origin', '--offset', '0', '-i', data], [cow, ro.backingFile], 3, erofs());
    refusedAlike(['snapshot-merge', ro.path, cow], [cow, ro.backingFile], 3, erofs());
  });

  test('mirror-create with a read-only log, mirror-resync with a read-only leg', () => {
    const legs = [0, 1].map((i) => path.join(d, `leg${i}.img`));
    for (const l of legs) makeImage(l, 4 * MiB, path.basename(l));
    refusedAlike(['mirror-create', '--log', ro.path, '--region-size', '1024', ...legs], [...legs, ro.backingFile], 3, erofs());
    const log = path.join(d, 'log.img');
    makeZeroFile(log, 64 * 1024);
    expect(dmtool(['mirror-create', '--log', log, '--region-size', '1024', legs[0], ro.path]).status).toBe(0);
    refusedAlike(['mirror-resync', '--log', log, legs[0], ro.path], [log, legs[0], ro.backingFile], 3, erofs());
  });
});

const describeRoot = process.getuid?.() === 0 || process.env.CI === 'true' ? describe : describe.skip;

describeRoot('dry runs on an immutable file (chattr +i)', () => {
  test('copy --dry-run is refused with EPERM, exit 3, as the real run', () => {
    const d = sub();
    const src = path.join(d, 'src.img');
    const dst = path.join(d, 'dst.img');
    makeImage(src, MiB, 'SRC');
    makeImage(dst, MiB, 'DST');
    execFileSync('chattr', ['+i', dst]);
    try {
      refusedAlike(
        ['copy', src, dst],
        [src, dst],
        3,
        /^dmtool: EPERM: open failed on .*dst\.img: cannot open for writing: device or file is read-only\n$/,
      );
    } finally {
      execFileSync('chattr', ['-i', dst]);
    }
  });
});

describe('mirror-create --dry-run over an existing log', () => {
  test('is refused without --force, as the real run; with --force it predicts the write', () => {
    const d = sub();
    const legs = [0, 1].map((i) => path.join(d, `leg${i}.img`));
    for (const l of legs) makeImage(l, 8 * MiB, path.basename(l));
    const log = path.join(d, 'log.img');
    makeZeroFile(log, 64 * 1024);
    expect(dmtool(['mirror-create', '--log', log, '--region-size', '1024', ...legs]).status).toBe(0);
    refusedAlike(
      ['mirror-create', '--log', log, '--region-size', '1024', ...legs],
      [log, ...legs],
      2,
      /^dmtool: .*log\.img already holds a dm-mirror log \(16 regions, sector 0\); give --force to replace it\n$/,
    );
    const before = sha256File(log);
    const dry = dmtool(['mirror-create', '--log', log, '--region-size', '1024', '--force', '--dry-run', ...legs]);
    expect(dry.stderr).toBe('');
    expect(dry.stdout).toBe(`would write a 1536-byte dirty log (sectors 0..2) to ${log}: 16 regions of 1024 sectors, all out of sync\n`);
    expect(sha256File(log)).toBe(before);
  });
});

describe('snapshot-create --dry-run', () => {
  test('is refused as the real run (a COW too small, a COW already formatted) and predicts the status it leaves', () => {
    const d = sub();
    const origin = path.join(d, 'origin.img');
    const cow = path.join(d, 'cow.img');
    const tiny = path.join(d, 'tiny.img');
    makeBaseOrigin(origin, 4 * MiB);
    makeZeroFile(cow, 1 * MiB);
    makeZeroFile(tiny, 8 * 1024);
    refusedAlike(
      ['snapshot-create', origin, tiny, '--chunk-size', '8'],
      [origin, tiny],
      2,
      /^dmtool: ENOSPC: COW of 16 sectors cannot hold a header, a metadata area and one 8-sector chunk \(needs 24\)/,
    );
    const dry = dmtool(['snapshot-create', origin, cow, '--chunk-size', '8', '--dry-run']);
    expect(dry.stdout).toBe(`would format ${cow} with chunk size 8; status would be 16/2048 16\n`);
    const real = dmtool(['snapshot-create', origin, cow, '--chunk-size', '8']);
    expect(real.stdout.split('\n')[1]).toBe('0 8192 snapshot 16/2048 16');
    refusedAlike(
      ['snapshot-create', origin, cow, '--chunk-size', '8'],
      [origin, cow],
      2,
      /^dmtool: EEXIST: COW already holds a snapshot header \(refusing to format over it\)/,
    );
  });
});

describe('snapshot-write: a write that would overflow the COW', () => {
  /** Origin 4 MiB; a COW of `cowBytes` formatted with 4 KiB chunks. */
  function snapshotPair(cowBytes: number): { origin: string; cow: string; d: string } {
    const d = sub();
    const p = { origin: path.join(d, 'origin.img'), cow: path.join(d, 'cow.img'), d };
    makeBaseOrigin(p.origin, 4 * MiB);
    makeZeroFile(p.cow, cowBytes);
    expect(dmtool(['snapshot-create', p.origin, p.cow, '--chunk-size', '8']).status).toBe(0);
    return p;
  }
  function chunksFile(d: string, chunks: number): string {
    const f = path.join(d, `data-${chunks}.bin`);
    fs.writeFileSync(f, Buffer.alloc(chunks * 4096, 0x5a));
    return f;
  }
  const statusOf = (cow: string) => dmtool(['snapshot-status', cow]).stdout.trim();

  test('is refused (exit 2, nothing written) by the real run and the dry run, saying what it needs and has', () => {
    // 24 KiB: header, area 0 and room for 4 data chunks; the write needs 5.
    const p = snapshotPair(24 * 1024);
    for (const target of ['origin', 'snapshot']) {
      const dev = target === 'origin' ? p.origin : p.cow;
      refusedAlike(
        ['snapshot-write', p.origin, p.cow, '--target', target, '--offset', '0', '-i', chunksFile(p.d, 5)],
        [p.origin, p.cow],
        2,
        new RegExp(
          `^dmtool: ${target} write to ${dev} sectors 0\\.\\.39 needs 5 chunks = 40 sectors = 20\\.0 KiB of new COW space, ` +
            `${p.cow} has room for 4 chunks = 32 sectors = 16\\.0 KiB: the snapshot would be invalidated \\(give --allow-invalidate to write anyway\\)\\n$`,
        ),
      );
    }
    expect(statusOf(p.cow)).toBe('16/48 16');
  });

  test('with --allow-invalidate the dry run predicts Invalid and the real run invalidates', () => {
    const p = snapshotPair(24 * 1024);
    const args = ['snapshot-write', p.origin, p.cow, '--target', 'origin', '--offset', '0', '-i', chunksFile(p.d, 5), '--allow-invalidate'];
    const before = shas([p.origin, p.cow]);
    const dry = dmtool([...args, '--dry-run']);
    expect(dry.stderr).toBe('');
    expect(dry.status).toBe(0);
    expect(dry.stdout).toBe('would write 40 sectors to the origin at sector 0 (5 new exceptions); status now 16/48 16, after Invalid\n');
    expect(shas([p.origin, p.cow])).toEqual(before);
    const real = dmtool(args);
    expect(real.status).toBe(1);
    expect(statusOf(p.cow)).toBe('Invalid');
  });

  test('a full area whose next area lies past the COW end: the last chunk cannot be committed, and the plan knows it', () => {
    // 258 chunks: header, area 0 (256 entries) and its 256 data chunks; no room for area 1.
    const p = snapshotPair(258 * 4096);
    const over = dmtool([
      'snapshot-write',
      p.origin,
      p.cow,
      '--target',
      'origin',
      '--offset',
      '0',
      '-i',
      chunksFile(p.d, 256),
      '--dry-run',
    ]);
    expect(over.status).toBe(2);
    expect(over.stderr).toMatch(
      /needs 256 chunks = 2048 sectors = 1\.0 MiB of new COW space, .*cow\.img has room for 255 chunks = 2040 sectors = 1020\.0 KiB: /,
    );
    const forced = path.join(p.d, 'forced');
    fs.mkdirSync(forced);
    const q = { origin: path.join(forced, 'origin.img'), cow: path.join(forced, 'cow.img') };
    fs.copyFileSync(p.origin, q.origin);
    fs.copyFileSync(p.cow, q.cow);
    expect(
      dmtool(['snapshot-write', q.origin, q.cow, '--target', 'origin', '--offset', '0', '-i', chunksFile(p.d, 256), '--allow-invalidate'])
        .status,
    ).toBe(1);
    expect(statusOf(q.cow)).toBe('Invalid');
    const fits = ['snapshot-write', p.origin, p.cow, '--target', 'origin', '--offset', '0', '-i', chunksFile(p.d, 255)];
    expect(dmtool([...fits, '--dry-run']).stdout).toBe(
      'would write 2040 sectors to the origin at sector 0 (255 new exceptions); status now 16/2064 16, after 2056/2064 16\n',
    );
    expect(dmtool(fits).stdout).toBe('wrote 2040 sectors to the origin at sector 0; status 2056/2064 16\n');
  });

  test('the status a dry run predicts is the status the real run leaves, across a full area', () => {
    const p = snapshotPair(4 * MiB);
    const writes: [string, number, number][] = [
      ['snapshot', 3, 2], // a partial chunk: copy-out, one exception
      ['origin', 0, 300 * 8], // 299 new exceptions, area 0 fills
      ['origin', 100, 16], // none new
      ['snapshot', 301 * 8, 8], // a whole chunk
    ];
    for (const [target, offset, sectors] of writes) {
      const f = path.join(p.d, `w-${target}-${offset}.bin`);
      fs.writeFileSync(f, Buffer.alloc(sectors * 512, offset & 0xff));
      const args = ['snapshot-write', p.origin, p.cow, '--target', target, '--offset', String(offset), '-i', f];
      const dry = dmtool([...args, '--dry-run']);
      expect(dry.status).toBe(0);
      const predicted = /, after (.*)$/.exec(dry.stdout.trim())?.[1];
      const real = dmtool(args);
      expect(real.stderr).toBe('');
      expect(real.stdout).toBe(`wrote ${sectors} sectors to the ${target} at sector ${offset}; status ${predicted}\n`);
    }
    // 301 exceptions: the last in COW chunk 303 (area 1 at chunk 258), so 304 chunks allocated, areas 0 and 1 in use.
    expect(statusOf(p.cow)).toBe('2432/8192 24');
  });
});
