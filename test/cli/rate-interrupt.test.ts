import * as fs from 'fs';
import * as path from 'path';
import { dmtool, startDmtool, waitFor } from '../support/cli';
import { makeImage, patternBytes, readRange, sha256, sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';

/**
 * A rate-limited job stops within a second of SIGINT/SIGTERM (the throttle
 * sleeps are abortable), what it wrote is flushed, and pacing starts with
 * the first byte.
 */
const KiB = 1024;
const MiB = 1 << 20;
/** How long after the signal the process may take to exit. */
const EXIT_WITHIN_MS = 1000;

function ok(args: string[], input?: Buffer): string {
  const r = dmtool(args, { input });
  if (r.status !== 0) throw new Error(`dmtool ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

describe('rate-limited jobs and interrupts', () => {
  let dir: string;
  beforeEach(() => (dir = tempDir('dmtool-rate-')));
  afterEach(() => removeDir(dir));

  it.each([
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const)('copy --rate 4k exits within a second of %s (exit %d), with what it wrote flushed', async (sig, code) => {
    const src = path.join(dir, 'src.img');
    const dst = path.join(dir, 'dst.img');
    makeImage(src, MiB, 'SRC');
    makeImage(dst, MiB);
    const child = startDmtool(['copy', src, dst, '--rate', '4k'], { timeoutMs: 8000 });
    // Wait for the first paced piece to land (one 4 KiB piece a second).
    expect(await waitFor(() => readRange(dst, 0, 512).some((b) => b !== 0), 5000)).toBe(true);
    const sentAt = child.signal(sig);
    const r = await child.done;
    expect({ status: r.status, signal: r.signal }).toEqual({ status: code, signal: null });
    expect(r.endedAt - sentAt).toBeLessThan(EXIT_WITHIN_MS);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    const m = new RegExp(
      `^dmtool: interrupted by ${sig}: (\\d+) of 2048 sectors copied and flushed; run the command again to copy the whole range$`,
    ).exec(lines[0]);
    expect(m).not.toBeNull();
    const done = Number(m![1]);
    expect(done).toBeGreaterThan(0);
    expect(done).toBeLessThan(2048);
    expect(sha256(readRange(dst, 0, done * 512))).toBe(sha256(patternBytes('SRC', 0, done)));
    expect(readRange(dst, done * 512, MiB - done * 512).every((b) => b === 0)).toBe(true);
  });

  it('snapshot-merge --rate 100k exits 130 within a second of SIGINT; running it again finishes the merge', async () => {
    const origin = path.join(dir, 'origin.img');
    const cow = path.join(dir, 'cow.img');
    const data = path.join(dir, 'data.bin');
    makeImage(origin, 8 * MiB, 'ORIGIN');
    makeImage(cow, 4 * MiB);
    fs.writeFileSync(data, patternBytes('NEW', 0, 2048));
    const before = sha256File(origin);
    ok(['snapshot-create', origin, cow, '--chunk-size', '8']);
    ok(['snapshot-write', origin, cow, '--target', 'origin', '--offset', '0', '-i', data]);
    // 1 MiB to merge at 100 KiB/s: about 10 s.
    const child = startDmtool(['snapshot-merge', origin, cow, '--rate', '100k'], { timeoutMs: 20000 });
    await new Promise((r) => setTimeout(r, 1500));
    const sentAt = child.signal('SIGINT');
    const r = await child.done;
    expect({ status: r.status, signal: r.signal }).toEqual({ status: 130, signal: null });
    expect(r.endedAt - sentAt).toBeLessThan(EXIT_WITHIN_MS);
    expect(r.stderr).toBe(
      'dmtool: interrupted by SIGINT: 256 exceptions left to merge, the merged ones flushed and retired; ' +
        'run the command again to finish the merge (it resumes where it stopped)\n',
    );
    expect(ok(['snapshot-merge', origin, cow])).toMatch(/^merged \d+ exceptions .*; status 16\/8192 16\n$/);
    expect(sha256File(origin)).toBe(before);
  });

  it('paces from the first byte: 64 KiB at 32k takes at least 2 s', () => {
    const src = path.join(dir, 'src.img');
    const dst = path.join(dir, 'dst.img');
    makeImage(src, 64 * KiB, 'SRC');
    makeImage(dst, 64 * KiB);
    const r = dmtool(['copy', src, dst, '--rate', '32k', '--json'], { timeoutMs: 20000 });
    expect(r.status).toBe(0);
    const bytes = 64 * KiB;
    const rate = 32 * KiB;
    const burstBytes = 0;
    // Timers may fire a few milliseconds early; nothing more.
    expect(JSON.parse(r.stdout).seconds).toBeGreaterThanOrEqual((bytes - burstBytes) / rate - 0.02);
    expect(sha256File(dst)).toBe(sha256File(src));
  });
});
