import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { readRange, sha256, sha256File, sha256Range } from '../support/images';
import { attachLoop, describeLoop, detachAll, removeDir, tempDir } from '../support/loop';
import { dmtool, DMTOOL } from '../support/cli';
import { baseBlock, makeBaseOrigin, makeZeroFile, unpackFixture, writeData } from '../support/fixtures';
import { CowGeometry, encodeEntry, encodeHeader } from '@dmtool/dm-snapshot';

let dir: string;
beforeAll(() => {
  dir = tempDir('dmtool-snapcli-');
});
afterAll(() => removeDir(dir));

let n = 0;
function pair(originBytes = 4 << 20, cowBytes = 1 << 20): { origin: string; cow: string } {
  const sub = path.join(dir, `p${n++}`);
  fs.mkdirSync(sub);
  const p = { origin: path.join(sub, 'origin.img'), cow: path.join(sub, 'cow.img') };
  makeBaseOrigin(p.origin, originBytes);
  makeZeroFile(p.cow, cowBytes);
  return p;
}

function file(name: string, data: Buffer): string {
  const f = path.join(dir, name);
  fs.writeFileSync(f, data);
  return f;
}

function ok(args: string[]): string {
  const r = dmtool(args);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return r.stdout;
}

describe('dmtool snapshot-* end to end on image files', () => {
  test('create, origin and snapshot writes, status, list, read, merge', () => {
    const p = pair();
    expect(ok(['snapshot-create', p.origin, p.cow, '--chunk-size', '8']).trim().split('\n')).toEqual([
      `0 8192 snapshot ${p.origin} ${p.cow} P 8`,
      '0 8192 snapshot 16/2048 16',
    ]);
    expect(ok(['snapshot-status', p.cow])).toBe('16/2048 16\n');

    const w1 = writeData('CLI1', 25, 1);
    expect(ok(['snapshot-write', p.origin, p.cow, '--target', 'origin', '--offset', '25', '-i', file('w1', w1)])).toBe(
      'wrote 1 sector to the origin at sector 25; status 24/2048 16\n',
    );
    const w2 = writeData('CLI2', 100, 8);
    const r = dmtool(['snapshot-write', p.origin, p.cow, '--target', 'snapshot', '--offset', '100', '--json'], { input: w2 });
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({
      command: 'snapshot-write',
      ok: true,
      dryRun: false,
      target: 'snapshot',
      offset: 100,
      sectors: 8,
      status: '40/2048 16',
      exceptions: 3,
      invalidated: false,
      seconds: expect.any(Number),
    });

    expect(readRange(p.origin, 25 * 512, 512)).toEqual(w1);
    const view = path.join(dir, 'view.img');
    ok(['snapshot-read', p.origin, p.cow, '-o', view]);
    const expectedView = Buffer.concat(Array.from({ length: 1024 }, (_, b) => baseBlock('BASE', b)));
    w2.copy(expectedView, 100 * 512);
    expect(sha256File(view)).toBe(sha256(expectedView));
    const piece = dmtool(['snapshot-read', p.origin, p.cow, '--offset', '24', '--length', '8']);
    expect(Buffer.from(piece.stdout, 'latin1')).toEqual(baseBlock('BASE', 3));

    const list = JSON.parse(ok(['snapshot-list', p.cow, '--json']));
    expect(list.table).toEqual([
      { index: 0, oldChunk: 3, newChunk: 2, originSector: 24, cowSector: 16 },
      { index: 1, oldChunk: 12, newChunk: 3, originSector: 96, cowSector: 24 },
      { index: 2, oldChunk: 13, newChunk: 4, originSector: 104, cowSector: 32 },
    ]);
    expect(ok(['snapshot-list', p.cow]).split('\n').slice(2, 5)).toEqual(['0 3 2 24 16', '1 12 3 96 24', '2 13 4 104 32']);

    const cowSha = sha256File(p.cow);
    const dry = JSON.parse(ok(['snapshot-merge', p.origin, p.cow, '--dry-run', '--json']));
    expect(dry).toMatchObject({ dryRun: true, exceptions: 3, batches: 1, runs: 2, status: '16/2048 16' });
    expect(sha256File(p.cow)).toBe(cowSha);
    const merged = JSON.parse(ok(['snapshot-merge', p.origin, p.cow, '--json', '--rate', '100M']));
    expect(merged).toMatchObject({ exceptions: 3, mergedChunks: 3, mergedBytes: 3 * 4096, status: '16/2048 16' });
    expect(sha256File(p.origin)).toBe(sha256(expectedView));
    expect(ok(['snapshot-status', p.cow])).toBe('16/2048 16\n');
  });

  test('snapshot-merge copies 256 MiB per batch unless --batch-size says otherwise', () => {
    // A sparse COW of 70000 exceptions at chunk 8 (273 MiB of data): only its header and areas are written.
    const exceptions = 70_000;
    const g = new CowGeometry(8, 0);
    const sub = path.join(dir, 'batches');
    fs.mkdirSync(sub);
    const origin = path.join(sub, 'origin.img');
    const cow = path.join(sub, 'cow.img');
    fs.writeFileSync(origin, '');
    fs.truncateSync(origin, exceptions * g.chunkBytes);
    fs.writeFileSync(cow, '');
    fs.truncateSync(cow, (g.dataChunkOfIndex(exceptions) + 2) * g.chunkBytes);
    const fd = fs.openSync(cow, 'r+');
    try {
      const chunk = Buffer.alloc(g.chunkBytes);
      encodeHeader(chunk, { valid: true, chunkSectors: 8 });
      fs.writeSync(fd, chunk, 0, chunk.length, 0);
      const E = g.exceptionsPerArea;
      for (let area = 0; area * E <= exceptions; area++) {
        chunk.fill(0);
        for (let j = area * E; j < Math.min(exceptions, (area + 1) * E); j++)
          encodeEntry(chunk, j - area * E, (j * 7919) % exceptions, g.dataChunkOfIndex(j));
        fs.writeSync(fd, chunk, 0, chunk.length, g.chunkToByte(g.areaChunk(area)));
      }
    } finally {
      fs.closeSync(fd);
    }
    const plan = (...args: string[]) => JSON.parse(ok(['snapshot-merge', origin, cow, '--dry-run', '--json', ...args]));
    // 65536 chunks of 4 KiB per batch, then the 4464 left.
    expect(plan()).toMatchObject({ dryRun: true, exceptions, batches: 2, runs: exceptions });
    expect(plan('--batch-size', '64M')).toMatchObject({ dryRun: true, exceptions, batches: 5, runs: exceptions });
  });

  test('every command has --help with an example', () => {
    for (const cmd of ['snapshot-create', 'snapshot-status', 'snapshot-list', 'snapshot-read', 'snapshot-write', 'snapshot-merge']) {
      const out = ok([cmd, '--help']);
      expect(out).toContain(`dmtool ${cmd}`);
      expect(out).toContain('Examples:');
    }
  });
});

describe('bad input: one error line naming the device, exit 2, nothing written', () => {
  function refused(args: string[], files: string[], pattern: RegExp, code = 2, input?: Buffer): void {
    const before = files.map((f) => sha256File(f));
    const r = dmtool(args, { input });
    expect(r.stdout).toBe('');
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(pattern);
    expect(r.status).toBe(code);
    expect(files.map((f) => sha256File(f))).toEqual(before);
  }

  test('same device twice', () => {
    const p = pair();
    refused(['snapshot-create', p.origin, p.origin, '--chunk-size', '8'], [p.origin], /COW .*origin\.img is the same device as origin/);
  });

  test('chunk size not a power of two, and COW too small', () => {
    const p = pair(4 << 20, 8192);
    refused(
      ['snapshot-create', p.origin, p.cow, '--chunk-size', '12'],
      [p.origin, p.cow],
      /^dmtool: EINVAL: chunk size 12 sectors is not a power of two$/,
    );
    refused(
      ['snapshot-create', p.origin, p.cow, '--chunk-size', '8'],
      [p.origin, p.cow],
      /^dmtool: ENOSPC: COW of 16 sectors cannot hold .* \(.*cow\.img\)$/,
    );
  });

  test('formatting over an existing snapshot', () => {
    const p = pair();
    ok(['snapshot-create', p.origin, p.cow, '--chunk-size', '8']);
    refused(
      ['snapshot-create', p.origin, p.cow, '--chunk-size', '16'],
      [p.origin, p.cow],
      /already holds a snapshot header .*cow\.img sectors 0\.\.15/,
    );
  });

  test('writes that do not fit', () => {
    const p = pair();
    ok(['snapshot-create', p.origin, p.cow, '--chunk-size', '8']);
    const files = [p.origin, p.cow];
    refused(
      ['snapshot-write', p.origin, p.cow, '--target', 'origin', '--offset', '0'],
      files,
      /origin write to .*origin\.img at sector 0: input is 100 bytes/,
      2,
      Buffer.alloc(100),
    );
    refused(
      ['snapshot-write', p.origin, p.cow, '--target', 'snapshot', '--offset', '8190', '-i', file('w4k', Buffer.alloc(4096, 1))],
      files,
      /snapshot write to .*cow\.img sectors 8190\.\.8197 ends beyond the 8192-sector snapshot/,
    );
    refused(['snapshot-read', p.origin, p.cow, '--offset', '8000', '--length', '500'], files, /sectors 8000\.\.8499 lie outside/);
    refused(
      ['snapshot-write', p.origin, p.cow, '--target', 'disk', '--offset', '0'],
      files,
      /^dmtool: --target: Invalid enum value. Expected 'origin' \| 'snapshot', received 'disk'$/,
      2,
      Buffer.alloc(512),
    );
  });

  test('corrupt COWs are refused by every command', () => {
    const p = pair();
    ok(['snapshot-create', p.origin, p.cow, '--chunk-size', '8']);
    ok(['snapshot-write', p.origin, p.cow, '--target', 'origin', '--offset', '0', '-i', file('w8', Buffer.alloc(4096, 8))]);
    const fd = fs.openSync(p.cow, 'r+');
    const entry = Buffer.alloc(8);
    entry.writeUInt32LE(1, 0);
    fs.writeSync(fd, entry, 0, 8, 4096 + 8);
    fs.closeSync(fd);
    const files = [p.origin, p.cow];
    const msg = /^dmtool: EINVAL: area 0 entry 0 \(old 0 → new 1\) points into a metadata chunk \(.*cow\.img sectors 8\.\.8\)$/;
    refused(['snapshot-merge', p.origin, p.cow], files, msg);
    refused(['snapshot-status', p.cow], files, msg);
    refused(['snapshot-read', p.origin, p.cow, '-o', path.join(dir, 'x')], files, msg);
    fs.writeFileSync(p.cow, Buffer.from('not a snapshot'), { flag: 'r+' });
    refused(['snapshot-list', p.cow], files, /bad magic 0x20746f6e/);
    refused(['snapshot-merge', p.origin, p.cow], files, /ENXIO: invalid or corrupt snapshot/);
  });

  test('an invalidated snapshot cannot be merged', () => {
    const p = pair(4 << 20, 3 * 4096);
    ok(['snapshot-create', p.origin, p.cow, '--chunk-size', '8']);
    const w = dmtool([
      'snapshot-write',
      p.origin,
      p.cow,
      '--target',
      'origin',
      '--offset',
      '0',
      '-i',
      file('a', Buffer.alloc(8192, 1)),
      '--allow-invalidate',
    ]);
    expect(w.status).toBe(1);
    expect(w.stderr).toBe(`dmtool: snapshot in ${p.cow} was invalidated (COW full or I/O error)\n`);
    expect(readRange(p.origin, 0, 8192).every((b) => b === 1)).toBe(true);
    expect(ok(['snapshot-status', p.cow])).toBe('Invalid\n');
    refused(['snapshot-merge', p.origin, p.cow], [p.origin, p.cow], /snapshot is invalid: can't merge/);
  });

  test('reading an invalidated snapshot leaves the output file as it was, and writes nothing to stdout', () => {
    const p = pair();
    ok(['snapshot-create', p.origin, p.cow, '--chunk-size', '8']);
    const header = readRange(p.cow, 0, 16);
    header.writeUInt32LE(0, 4);
    fs.writeFileSync(p.cow, header, { flag: 'r+' });
    const out = file('kept-view.bin', Buffer.from('the previous contents\n'));
    const msg = /^dmtool: snapshot in .*cow\.img is invalid; nothing read$/;
    refused(['snapshot-read', p.origin, p.cow, '-o', out], [p.origin, p.cow, out], msg);
    refused(['snapshot-read', p.origin, p.cow], [p.origin, p.cow], msg);
  });
});

describe('snapshot-read replaces its output file only when the whole read succeeded', () => {
  function prepared(): { origin: string; cow: string; out: string; sub: string } {
    const p = pair();
    ok(['snapshot-create', p.origin, p.cow, '--chunk-size', '8']);
    // Exceptions in the first and the third MiB of the view: COW chunks 2..9 and 10..17.
    ok(['snapshot-write', p.origin, p.cow, '--target', 'origin', '--offset', '0', '-i', file('r8', Buffer.alloc(4096 * 8, 8))]);
    ok(['snapshot-write', p.origin, p.cow, '--target', 'origin', '--offset', '4096', '-i', file('r8', Buffer.alloc(4096 * 8, 8))]);
    const sub = path.dirname(p.cow);
    const out = path.join(sub, 'view.bin');
    fs.writeFileSync(out, Buffer.from('the previous contents\n'));
    return { ...p, out, sub };
  }

  // The view is read 1 MiB at a time: these fail in its second and third MiB.
  test.each([
    ['origin.img', 1 << 20],
    ['cow.img', 10 * 4096],
  ])('a read error on %s after part of the view was written: exit 1, the output file and folder as they were', (device, fromByte) => {
    const p = prepared();
    const listing = fs.readdirSync(p.sub).sort();
    const before = sha256File(p.out);
    const r = dmtool(['snapshot-read', p.origin, p.cow, '-o', p.out], {
      faults: { rules: [{ op: 'read', code: 'EIO', path: device, fromByte }] },
    });
    expect(r.stderr.trimEnd()).toMatch(
      new RegExp(`^dmtool: EIO: read failed on .*${device.replace('.', '\\.')} at sector \\d+ \\(\\+\\d+ sectors\\): injected fault`),
    );
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.status).toBe(1);
    expect(sha256File(p.out)).toBe(before);
    expect(fs.readdirSync(p.sub).sort()).toEqual(listing);
  });

  test('SIGINT during the read: exit 130, the output file as it was, no partial file left', async () => {
    const sub = fs.mkdtempSync(path.join(dir, 'int-'));
    const origin = path.join(sub, 'origin.img');
    const cow = path.join(sub, 'cow.img');
    makeZeroFile(origin, 1 << 30);
    makeZeroFile(cow, 1 << 20);
    ok(['snapshot-create', origin, cow, '--chunk-size', '8']);
    const out = path.join(sub, 'view.bin');
    fs.writeFileSync(out, Buffer.from('the previous contents\n'));
    const listing = fs.readdirSync(sub).sort();
    const child = spawn(process.execPath, [DMTOOL, 'snapshot-read', origin, cow, '-o', out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    const deadline = Date.now() + 30000;
    while (!fs.readdirSync(sub).some((f) => f.endsWith('.partial')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(stderr).toMatch(
      /^dmtool: interrupted by SIGINT: read stopped at sector \d+, .*view\.bin left as it was; run the command again to read the range\n$/,
    );
    expect(fs.readFileSync(out, 'utf8')).toBe('the previous contents\n');
    expect(fs.readdirSync(sub).sort()).toEqual(listing);
  });

  test('a successful read replaces a longer file whole, keeping its permissions', () => {
    const p = prepared();
    fs.writeFileSync(p.out, Buffer.alloc(8 << 20, 0xee));
    fs.chmodSync(p.out, 0o640);
    ok(['snapshot-read', p.origin, p.cow, '-o', p.out]);
    const expectedView = Buffer.concat(Array.from({ length: 1024 }, (_, b) => baseBlock('BASE', b)));
    expect(fs.statSync(p.out).size).toBe(expectedView.length);
    expect(sha256File(p.out)).toBe(sha256(expectedView));
    expect(fs.statSync(p.out).mode & 0o777).toBe(0o640);
  });
});

describeLoop('dmtool snapshot-* on loop devices', () => {
  // Other suites may attach loop devices at the same time: check that none of ours is left.
  afterAll(() => {
    detachAll();
    expect(execFileSync('losetup', ['-a'], { encoding: 'utf8' })).not.toContain(dir);
  });

  test('kernel COW on loop devices: status, view, merge give the kernel results', () => {
    const sub = fs.mkdtempSync(path.join(dir, 'loop-'));
    const input = unpackFixture('snapshot-cow-chunk16', sub);
    const m = unpackFixture('snapshot-merge-chunk16', sub).manifest;
    const originLoop = attachLoop(path.join(input.dir, 'origin.img'));
    const cowLoop = attachLoop(path.join(input.dir, 'cow.img'));
    try {
      expect(ok(['snapshot-status', cowLoop.path, '--origin', originLoop.path])).toBe('8528/32768 48\n');
      const view = path.join(sub, 'view.img');
      ok(['snapshot-read', originLoop.path, cowLoop.path, '-o', view]);
      expect(sha256File(view)).toBe(input.manifest.expected.snapshot_view_sha256);
      const same = dmtool(['snapshot-merge', cowLoop.path, cowLoop.path]);
      expect(same.status).toBe(2);
      expect(same.stderr).toMatch(/is the same device as/);
      const r = JSON.parse(ok(['snapshot-merge', originLoop.path, cowLoop.path, '--json']));
      expect(`0 131072 snapshot-merge ${r.status}`).toBe(m.kernel_reported.status_merge_final[0]);
    } finally {
      originLoop.detach();
      cowLoop.detach();
    }
    expect(sha256File(path.join(input.dir, 'origin.img'))).toBe(m.outputs['origin.img_sha256']);
    expect(sha256File(path.join(input.dir, 'cow.img'))).toBe(m.outputs['cow.img_sha256']);
  });

  test('fresh snapshot on loop devices: origin writes copy out, snapshot view is the old data', () => {
    const sub = fs.mkdtempSync(path.join(dir, 'loop-'));
    const originFile = path.join(sub, 'origin.img');
    const cowFile = path.join(sub, 'cow.img');
    makeBaseOrigin(originFile, 8 << 20);
    makeZeroFile(cowFile, 2 << 20);
    const before = sha256File(originFile);
    const o = attachLoop(originFile);
    const c = attachLoop(cowFile);
    try {
      ok(['snapshot-create', o.path, c.path, '--chunk-size', '16']);
      ok(['snapshot-write', o.path, c.path, '--target', 'origin', '--offset', '1000', '-i', file('big', writeData('LOOP', 1000, 300))]);
      expect(ok(['snapshot-status', c.path])).toBe(`${(2 + 20) * 16}/4096 32\n`);
      const view = path.join(sub, 'view.img');
      ok(['snapshot-read', o.path, c.path, '-o', view]);
      expect(sha256File(view)).toBe(before);
      ok(['snapshot-merge', o.path, c.path]);
    } finally {
      o.detach();
      c.detach();
    }
    expect(sha256File(originFile)).toBe(before);
  });

  test('the view read into a block device is written in place, the device node left alone', () => {
    const sub = fs.mkdtempSync(path.join(dir, 'loop-'));
    const p = { origin: path.join(sub, 'origin.img'), cow: path.join(sub, 'cow.img') };
    makeBaseOrigin(p.origin, 4 << 20);
    makeZeroFile(p.cow, 1 << 20);
    ok(['snapshot-create', p.origin, p.cow, '--chunk-size', '8']);
    ok(['snapshot-write', p.origin, p.cow, '--target', 'origin', '--offset', '0', '-i', file('blk', Buffer.alloc(8192, 7))]);
    const target = path.join(sub, 'target.img');
    makeZeroFile(target, 8 << 20);
    const t = attachLoop(target);
    try {
      ok(['snapshot-read', p.origin, p.cow, '-o', t.path]);
      expect(fs.statSync(t.path).isBlockDevice()).toBe(true);
      expect(fs.readdirSync(path.dirname(t.path)).filter((f) => f.endsWith('.partial'))).toEqual([]);
    } finally {
      t.detach();
    }
    const expectedView = Buffer.concat(Array.from({ length: 1024 }, (_, b) => baseBlock('BASE', b)));
    expect(sha256Range(target, 0, 4 << 20)).toBe(sha256(expectedView));
    expect(sha256Range(target, 4 << 20, 4 << 20)).toBe(sha256(Buffer.alloc(4 << 20)));
  });

  test('a block device output held by another command (or mounted) is refused like any device, and not written', () => {
    const sub = fs.mkdtempSync(path.join(dir, 'busy-'));
    const p = { origin: path.join(sub, 'origin.img'), cow: path.join(sub, 'cow.img') };
    makeBaseOrigin(p.origin, 4 << 20);
    makeZeroFile(p.cow, 1 << 20);
    ok(['snapshot-create', p.origin, p.cow, '--chunk-size', '8']);
    const target = path.join(sub, 'target.img');
    makeZeroFile(target, 8 << 20);
    const t = attachLoop(target);
    // Another process claims the device exclusively, as a mount or LVM would.
    const holder = spawn('python3', [
      '-c',
      `import os,time; fd=os.open(${JSON.stringify(t.path)}, os.O_RDWR|os.O_EXCL); print('held', flush=True); time.sleep(30)`,
    ]);
    try {
      execFileSync('bash', [
        '-c',
        'for i in $(seq 100); do [ -n "$(ls -l /proc/' + holder.pid + '/fd 2>/dev/null | grep loop)" ] && exit 0; sleep 0.05; done; exit 1',
      ]);
      const r = dmtool(['snapshot-read', p.origin, p.cow, '-o', t.path]);
      expect(r.stderr).toMatch(
        /^dmtool: EBUSY: open failed on \/dev\/loop\d+: device is mounted or in use \(refused: opened with O_EXCL\)\n$/,
      );
      expect(r.status).toBe(3);
    } finally {
      holder.kill('SIGKILL');
      t.detach();
    }
    expect(sha256File(target)).toBe(sha256(Buffer.alloc(8 << 20)));
  });
});

const describeRoot = process.getuid?.() === 0 || process.env.CI === 'true' ? describe : describe.skip;

describeRoot('snapshot-create on a full filesystem (a 1 MiB tmpfs)', () => {
  test('fails with exit 1 saying no header was written (not "invalidated"), and the COW is unchanged', () => {
    const p = pair();
    const mnt = fs.mkdtempSync(path.join(dir, 'full-'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    try {
      const cow = path.join(mnt, 'cow.img');
      fs.writeFileSync(cow, '');
      fs.truncateSync(cow, 4 << 20);
      const fill = fs.openSync(path.join(mnt, 'fill'), 'w');
      try {
        for (;;) fs.writeSync(fill, Buffer.alloc(64 * 1024));
      } catch (e) {
        expect((e as NodeJS.ErrnoException).code).toBe('ENOSPC');
      } finally {
        fs.closeSync(fill);
      }
      const before = sha256File(cow);
      const r = dmtool(['snapshot-create', p.origin, cow, '--chunk-size', '8']);
      expect(r.stderr).toBe(
        `dmtool: ENOSPC: formatting the COW failed, no snapshot header was written: ENOSPC: write failed on ${cow} at sector 8 (+8 sectors): no space left on device\n`,
      );
      expect(r.status).toBe(1);
      expect(r.stdout).toBe('');
      expect(sha256File(cow)).toBe(before);
    } finally {
      execFileSync('umount', [mnt]);
    }
  });
});
