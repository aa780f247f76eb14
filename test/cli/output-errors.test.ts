import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { DMTOOL, dmtool } from '../support/cli';
import { makeImage, sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';

/**
 * stdout that cannot be written (a full disk, /dev/full, a closed pipe):
 * one line on stderr and an exit code that says whether the work was done;
 * never a stack trace. A reader that closes the pipe early (`| head`) is
 * not an error.
 */
const MiB = 1 << 20;

function toDevFull(args: string[]) {
  const full = fs.openSync('/dev/full', 'w');
  try {
    const r = spawnSync(process.execPath, [DMTOOL, ...args], { stdio: ['ignore', full, 'pipe'], encoding: 'utf8', timeout: 60000 });
    return { status: r.status, stderr: r.stderr };
  } finally {
    fs.closeSync(full);
  }
}

function sh(script: string) {
  const r = spawnSync('bash', ['-c', script], {
    encoding: 'utf8',
    timeout: 60000,
    env: { ...process.env, DMTOOL: `${process.execPath} ${DMTOOL}` },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const CANNOT_WRITE = /^dmtool: cannot write output: ENOSPC: no space left on device, write\n$/;

describe('output errors', () => {
  let dir: string;
  let origin: string;
  let cow: string;
  beforeEach(() => {
    dir = tempDir('dmtool-out-');
    origin = path.join(dir, 'origin.img');
    cow = path.join(dir, 'cow.img');
    makeImage(origin, 8 * MiB, 'ORIGIN');
    makeImage(cow, 4 * MiB);
  });
  afterEach(() => removeDir(dir));

  it('snapshot-create > /dev/full: the COW is made, one line, exit 1', () => {
    const r = toDevFull(['snapshot-create', origin, cow, '--chunk-size', '8']);
    expect(r).toEqual({ status: 1, stderr: expect.stringMatching(CANNOT_WRITE) });
    expect(dmtool(['snapshot-status', cow]).stdout).toBe('16/8192 16\n');
  });

  it('snapshot-status and snapshot-list > /dev/full: one line, exit 1', () => {
    expect(dmtool(['snapshot-create', origin, cow, '--chunk-size', '8']).status).toBe(0);
    expect(toDevFull(['snapshot-status', cow])).toEqual({ status: 1, stderr: expect.stringMatching(CANNOT_WRITE) });
    expect(toDevFull(['snapshot-list', cow, '--json'])).toEqual({ status: 1, stderr: expect.stringMatching(CANNOT_WRITE) });
  });

  it('a failed command keeps its own line and exit code when stdout is full too', () => {
    const before = sha256File(cow);
    const r = toDevFull(['snapshot-status', cow]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^dmtool: EINVAL: COW has no snapshot header[^\n]*\n$/);
    expect(sha256File(cow)).toBe(before);
  });

  it('snapshot-read > /dev/full: one line, exit 1', () => {
    expect(dmtool(['snapshot-create', origin, cow, '--chunk-size', '8']).status).toBe(0);
    expect(toDevFull(['snapshot-read', origin, cow])).toEqual({ status: 1, stderr: expect.stringMatching(CANNOT_WRITE) });
  });

  it('snapshot-read into a slow pipe delivers every byte; | head exits 0 quietly', () => {
    expect(dmtool(['snapshot-create', origin, cow, '--chunk-size', '8']).status).toBe(0);
    const slow = sh(`set -o pipefail; $DMTOOL snapshot-read ${origin} ${cow} | (sleep 0.3; sha256sum)`);
    expect(slow).toEqual({ status: 0, stdout: `${sha256File(origin)}  -\n`, stderr: '' });
    const head = sh(`$DMTOOL snapshot-read ${origin} ${cow} | head -c 4096 | wc -c; echo "status \${PIPESTATUS[0]}"`);
    expect(head).toEqual({ status: 0, stdout: '4096\nstatus 0\n', stderr: '' });
    const list = sh(`$DMTOOL snapshot-list ${cow} | head -1 >/dev/null; echo "status \${PIPESTATUS[0]}"`);
    expect(list).toEqual({ status: 0, stdout: 'status 0\n', stderr: '' });
  });
});
