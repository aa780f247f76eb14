import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { DMTOOL, dmtool } from '../support/cli';
import { makeImage, patternBytes, readRange, sha256, sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';

/**
 * snapshot-write reads its input with a bound: never more than the target
 * range holds (64 MiB at most from a pipe or device), and input longer than
 * that is refused before anything is written.
 */
const MiB = 1 << 20;

/**
 * Run snapshot-write with stdin fed from a generator of up to `limitBytes`
 * bytes; returns the result and how many bytes the process took in.
 */
function writeFromPipe(args: string[], limitBytes: number): Promise<{ status: number | null; stderr: string; fedBytes: number }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [DMTOOL, ...args], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    let fedBytes = 0;
    let closed = false;
    child.stderr.on('data', (d) => (stderr += d));
    const block = Buffer.alloc(MiB, 0x5a);
    const feed = () => {
      while (!closed && fedBytes < limitBytes) {
        fedBytes += block.length;
        if (!child.stdin.write(block)) return void child.stdin.once('drain', feed);
      }
      if (!closed) child.stdin.end();
    };
    child.stdin.on('error', () => (closed = true));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
    child.on('close', (status) => {
      closed = true;
      clearTimeout(timer);
      resolve({ status, stderr, fedBytes });
    });
    feed();
  });
}

describe('snapshot-write input bounds', () => {
  let dir: string;
  let origin: string;
  let cow: string;
  beforeEach(() => (dir = tempDir('dmtool-input-')));
  afterEach(() => removeDir(dir));

  function pair(originBytes: number): void {
    origin = path.join(dir, 'origin.img');
    cow = path.join(dir, 'cow.img');
    makeImage(origin, originBytes, 'ORIGIN');
    makeImage(cow, 4 * MiB);
    expect(dmtool(['snapshot-create', origin, cow, '--chunk-size', '8']).status).toBe(0);
  }

  it('a pipe longer than 64 MiB is refused after at most 64 MiB is read; nothing written', async () => {
    pair(256 * MiB);
    const before = [sha256File(origin), sha256File(cow)];
    const r = await writeFromPipe(['snapshot-write', origin, cow, '--target', 'origin', '--offset', '0'], 512 * MiB);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^dmtool: --input -: more than 64 MiB from a pipe or device; write it to a file and give that$/m);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    // What was fed includes what sat in the pipe when the process stopped reading.
    expect(r.fedBytes).toBeLessThan(80 * MiB);
    expect([sha256File(origin), sha256File(cow)]).toEqual(before);
  });

  it('a pipe longer than the range to the end of the origin is refused; nothing written', async () => {
    pair(8 * MiB);
    const before = [sha256File(origin), sha256File(cow)];
    const r = await writeFromPipe(['snapshot-write', origin, cow, '--target', 'origin', '--offset', '8192'], 9 * MiB);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(
      /^dmtool: origin write to .*origin\.img at sector 8192: input - is longer than the 8192 sectors from there to the end of the 16384-sector origin\n$/,
    );
    expect([sha256File(origin), sha256File(cow)]).toEqual(before);
  });

  it('a file is written in pieces: a 3 MiB write at an unaligned sector gives the bytes and status of one write', () => {
    pair(8 * MiB);
    const data = path.join(dir, 'data.bin');
    fs.writeFileSync(data, patternBytes('NEW', 0, 6144));
    const r = dmtool(['snapshot-write', origin, cow, '--target', 'origin', '--offset', '1001', '-i', data]);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe('wrote 6144 sectors to the origin at sector 1001; status 6192/8192 40\n');
    expect(sha256(readRange(origin, 1001 * 512, 3 * MiB))).toBe(sha256(patternBytes('NEW', 0, 6144)));
    const view = dmtool(['snapshot-read', origin, cow, '--offset', '1000', '--length', '6146', '-o', path.join(dir, 'view.bin')]);
    expect(view.status).toBe(0);
    expect(sha256File(path.join(dir, 'view.bin'))).toBe(sha256(patternBytes('ORIGIN', 1000, 6146)));
  });
});
