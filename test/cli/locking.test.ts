import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { dmtool, startDmtool } from '../support/cli';
import { unpackFixture } from '../support/fixtures';
import { makeImage, sha256File } from '../support/images';
import { flocksOn, waitForLock } from '../support/locks';
import { attachLoop, describeLoop, detachAll, removeDir, tempDir } from '../support/loop';

/**
 * Two real dmtool processes on the same files: a command that writes holds
 * an exclusive lock for its whole run, readers a shared one, and the second
 * writer is refused (exit 3) with a line naming the holder.
 */
const MiB = 1 << 20;

function ok(args: string[]): string {
  const r = dmtool(args);
  if (r.status !== 0) throw new Error(`dmtool ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
}

/** The kernel-made COW (chunk 8, 310 exceptions) and its origin, with the snapshot view saved aside. */
function kernelSnapshot(dir: string): { origin: string; cow: string; viewSha: string } {
  const fx = unpackFixture('snapshot-cow-chunk8', dir);
  const origin = path.join(fx.dir, 'origin.img');
  const cow = path.join(fx.dir, 'cow.img');
  const view = path.join(dir, 'view.img');
  ok(['snapshot-read', origin, cow, '-o', view]);
  const viewSha = sha256File(view);
  fs.rmSync(view);
  return { origin, cow, viewSha };
}

function exceptions(cow: string): number {
  return JSON.parse(ok(['snapshot-list', cow, '--json'])).exceptions;
}

describe('image files are locked while a command uses them', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir('dmtool-lock-');
  });
  afterEach(() => removeDir(dir));

  it('snapshot-write to the origin during a snapshot-merge is refused; the merge completes with the snapshot data', async () => {
    const k = kernelSnapshot(dir);
    const data = path.join(dir, 'data.bin');
    makeImage(data, 4096, 'NEW');
    const merge = startDmtool(['snapshot-merge', k.origin, k.cow, '--rate', '400k']);
    try {
      await waitForLock(k.cow, merge.pid);
      const w = dmtool(['snapshot-write', k.origin, k.cow, '--target', 'origin', '--offset', '0', '-i', data]);
      expect(w.stdout).toBe('');
      expect(w.stderr).toMatch(
        new RegExp(
          `^dmtool: EWOULDBLOCK: open failed on .*origin\\.img: locked by pid ${merge.pid} \\(dmtool snapshot-merge .*origin\\.img .*cow\\.img --rate 400k\\)\\n$`,
        ),
      );
      expect(w.status).toBe(3);
    } finally {
      const m = await merge.done;
      expect(m.stderr).toBe('');
      expect(m.status).toBe(0);
    }
    expect(sha256File(k.origin)).toBe(k.viewSha);
    expect(exceptions(k.cow)).toBe(0);
  });

  it('mirror-create --force on the log of a running mirror-resync is refused; the resync completes', async () => {
    const legs = [0, 1].map((i) => path.join(dir, `leg${i}.img`));
    legs.forEach((p, i) => makeImage(p, 4 * MiB, `LEG${i}`));
    const log = path.join(dir, 'log.img');
    makeImage(log, 64 * 1024);
    ok(['mirror-create', '--log', log, '--region-size', '256', ...legs]);
    const resync = startDmtool(['mirror-resync', '--log', log, ...legs, '--rate', '1M', '--parallel', '1']);
    try {
      await waitForLock(log, resync.pid);
      // Other legs, the same log: the refusal is the log's lock.
      const otherLegs = [0, 1].map((i) => path.join(dir, `other${i}.img`));
      otherLegs.forEach((p) => makeImage(p, 4 * MiB, 'OTHER'));
      const c = dmtool(['mirror-create', '--log', log, '--force', '--region-size', '256', ...otherLegs]);
      expect(c.stderr).toMatch(
        new RegExp(
          `^dmtool: EWOULDBLOCK: open failed on .*log\\.img: locked by pid ${resync.pid} \\(dmtool mirror-resync --log .*log\\.img .*leg0\\.img .*leg1\\.img --rate 1M --parallel 1\\)\\n$`,
        ),
      );
      expect(c.status).toBe(3);
    } finally {
      const r = await resync.done;
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
    }
    expect(sha256File(legs[1])).toBe(sha256File(legs[0]));
    expect(ok(['mirror-status', '--log', log, ...legs])).toContain('32/32 regions in sync');
  });

  it('readers share: snapshot-status runs beside a snapshot-read, snapshot-merge is refused naming the reader', async () => {
    const k = kernelSnapshot(dir);
    const originSha = sha256File(k.origin);
    const cowSha = sha256File(k.cow);
    const fifo = path.join(dir, 'view.fifo');
    execFileSync('mkfifo', [fifo]);
    // The reader holds its devices open while it waits for someone to read the FIFO.
    const reader = startDmtool(['snapshot-read', k.origin, k.cow, '--length', '8', '-o', fifo]);
    let cat: ReturnType<typeof spawn> | undefined;
    try {
      expect(await waitForLock(k.cow, reader.pid)).toBe(true);
      expect(flocksOn(k.origin)).toEqual([{ pid: reader.pid, mode: 'READ' }]);
      const st = dmtool(['snapshot-status', k.cow]);
      expect(st.stderr).toBe('');
      expect(st.status).toBe(0);
      const m = dmtool(['snapshot-merge', k.origin, k.cow]);
      expect(m.stderr).toMatch(
        new RegExp(
          `^dmtool: EWOULDBLOCK: open failed on .*origin\\.img: locked by pid ${reader.pid} \\(dmtool snapshot-read .*origin\\.img .*cow\\.img --length 8 -o .*view\\.fifo\\)\\n$`,
        ),
      );
      expect(m.status).toBe(3);
    } finally {
      cat = spawn('cat', [fifo], { stdio: ['ignore', 'pipe', 'ignore'] });
      const chunks: Buffer[] = [];
      cat.stdout!.on('data', (d: Buffer) => chunks.push(d));
      const r = await reader.done;
      await new Promise((res) => (cat!.exitCode !== null ? res(null) : cat!.on('exit', res)));
      expect(r.status).toBe(0);
      expect(Buffer.concat(chunks).length).toBe(4096);
    }
    expect(sha256File(k.origin)).toBe(originSha);
    expect(sha256File(k.cow)).toBe(cowSha);
    expect(flocksOn(k.origin)).toEqual([]);
  });
});

describeLoop('a loop device and its backing file share one lock', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir('dmtool-lock-loop-');
  });
  afterEach(() => {
    detachAll();
    removeDir(dir);
  });

  it('copy to a loop device backed by the origin a snapshot-merge is writing is refused', async () => {
    const k = kernelSnapshot(dir);
    const src = path.join(dir, 'src.img');
    makeImage(src, MiB, 'SRC');
    const loop = attachLoop(k.origin);
    const merge = startDmtool(['snapshot-merge', k.origin, k.cow, '--rate', '400k']);
    try {
      await waitForLock(k.cow, merge.pid);
      const c = dmtool(['copy', src, loop.path]);
      expect(c.stderr).toMatch(
        new RegExp(
          `^dmtool: EWOULDBLOCK: open failed on ${loop.path}: backing file .*origin\\.img is locked by pid ${merge.pid} \\(dmtool snapshot-merge .*\\)\\n$`,
        ),
      );
      expect(c.status).toBe(3);
    } finally {
      const m = await merge.done;
      expect(m.status).toBe(0);
    }
    loop.detach();
    expect(sha256File(k.origin)).toBe(k.viewSha);
  });

  it('snapshot-merge on the file is refused while a copy writes through its loop device', async () => {
    const k = kernelSnapshot(dir);
    const originSha = sha256File(k.origin);
    const loop = attachLoop(k.origin);
    const src = path.join(dir, 'src.img');
    fs.copyFileSync(k.origin, src);
    const copy = startDmtool(['copy', src, loop.path, '--length', '4M', '--rate', '2M']);
    try {
      await waitForLock(k.origin, copy.pid);
      const m = dmtool(['snapshot-merge', k.origin, k.cow]);
      expect(m.stderr).toMatch(
        new RegExp(
          `^dmtool: EWOULDBLOCK: open failed on .*origin\\.img: locked by pid ${copy.pid} \\(dmtool copy .*src\\.img ${loop.path} --length 4M --rate 2M\\)\\n$`,
        ),
      );
      expect(m.status).toBe(3);
    } finally {
      const c = await copy.done;
      expect(c.status).toBe(0);
    }
    loop.detach();
    expect(sha256File(k.origin)).toBe(originSha);
    expect(exceptions(k.cow)).toBe(310);
  });
});
