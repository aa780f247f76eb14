import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { dmtool, DMTOOL } from '../support/cli';
import { makeImage, patternBytes } from '../support/images';
import { removeDir, tempDir } from '../support/loop';

/** --progress[=FD] lines ("progress DONE TOTAL PERCENT"), --quiet, and the bar's rate and ETA. */
const KiB = 1024;
const MiB = 1 << 20;
const LINE = /^progress (\d+) (\d+) (\d+)$/;

function parseLines(text: string): [number, number, number][] {
  const lines = text.trim().split('\n');
  for (const l of lines) expect(l).toMatch(LINE);
  return lines.map((l) => LINE.exec(l)!.slice(1).map(Number) as [number, number, number]);
}

describe('progress', () => {
  let dir: string;
  let src: string;
  let dst: string;
  beforeEach(() => {
    dir = tempDir('dmtool-progress-');
    src = path.join(dir, 'src.img');
    dst = path.join(dir, 'dst.img');
    makeImage(src, MiB, 'SRC');
    makeImage(dst, MiB);
  });
  afterEach(() => removeDir(dir));

  it('--progress writes lines on stderr when it is not a terminal: the first at 0, the last at the total', () => {
    const r = dmtool(['copy', src, dst, '--progress']);
    expect(r.status).toBe(0);
    const lines = parseLines(r.stderr);
    expect(lines[0]).toEqual([0, MiB, 0]);
    expect(lines.at(-1)).toEqual([MiB, MiB, 100]);
    expect(r.stdout).toMatch(/^copied 2048 sectors from .* to 1 destination: 1\.0 MiB in \d+\.\d\d s \([\d.]+ (KiB|MiB|GiB)\/s\)\n$/);
  });

  it('--progress=FD writes the lines to that descriptor and nothing on stderr', () => {
    const file = path.join(dir, 'progress.log');
    const fd = fs.openSync(file, 'w');
    try {
      const r = spawnSync(process.execPath, [DMTOOL, 'zero', dst, '--progress=3'], {
        stdio: ['ignore', 'pipe', 'pipe', fd],
        encoding: 'utf8',
        timeout: 60000,
      });
      expect([r.status, r.stderr]).toEqual([0, '']);
      expect(fs.readFileSync(file, 'utf8')).toBe(`progress 0 ${MiB} 0\nprogress ${MiB} ${MiB} 100\n`);
    } finally {
      fs.closeSync(fd);
    }
  });

  it('--quiet prints no progress, only the result; --quiet with --progress and a closed FD are refused', () => {
    const q = dmtool(['copy', src, dst, '--quiet']);
    expect([q.status, q.stderr]).toEqual([0, '']);
    const both = dmtool(['copy', src, dst, '--quiet', '--progress']);
    expect([both.status, both.stderr]).toEqual([2, 'dmtool: --quiet and --progress exclude each other\n']);
    const closed = dmtool(['copy', src, dst, '--progress=99']);
    expect([closed.status, closed.stderr]).toEqual([
      2,
      'dmtool: --progress=99: file descriptor 99 is not open (redirect it, e.g. 3>progress.log)\n',
    ]);
    const bad = dmtool(['copy', src, dst, '--progress=x']);
    expect([bad.status, bad.stderr]).toEqual([2, 'dmtool: --progress: takes a file descriptor number: --progress or --progress=FD\n']);
  });

  it('a bare --progress never takes the next argument as its FD', () => {
    const r = dmtool(['copy', '--progress', src, dst]);
    expect(r.status).toBe(0);
    expect(parseLines(r.stderr).at(-1)).toEqual([MiB, MiB, 100]);
  });

  it('snapshot-merge shows copied bytes before its first batch is retired', () => {
    const origin = path.join(dir, 'origin.img');
    const cow = path.join(dir, 'cow.img');
    const data = path.join(dir, 'data.bin');
    makeImage(origin, 4 * MiB, 'ORIGIN');
    makeImage(cow, 2 * MiB);
    fs.writeFileSync(data, patternBytes('NEW', 0, 1024));
    expect(dmtool(['snapshot-create', origin, cow, '--chunk-size', '8']).status).toBe(0);
    expect(dmtool(['snapshot-write', origin, cow, '--target', 'origin', '--offset', '0', '-i', data]).status).toBe(0);
    // 512 KiB in one batch at 128 KiB/s: four paced pieces over about 4 s, so the
    // once-a-second lines at 2 s and 3 s fall inside the batch whatever the load.
    const r = dmtool(['snapshot-merge', origin, cow, '--rate', '128k', '--progress'], { timeoutMs: 30000 });
    expect(r.status).toBe(0);
    const lines = parseLines(r.stderr);
    expect(lines[0]).toEqual([0, 512 * KiB, 0]);
    expect(lines.some(([done]) => done > 0 && done < 512 * KiB)).toBe(true);
    expect(lines.at(-1)).toEqual([512 * KiB, 512 * KiB, 100]);
    expect(r.stdout).toMatch(/in 1 batch, /);
  });

  const haveScript = spawnSync('script', ['--version']).status === 0;
  (haveScript ? it : it.skip)('the bar on a terminal shows a rate within --rate and an ETA in seconds from the first update', () => {
    const big = path.join(dir, 'big.img');
    const out = path.join(dir, 'big-copy.img');
    makeImage(big, 8 * MiB, 'BIG');
    makeImage(out, 8 * MiB);
    const r = spawnSync('script', ['-qec', `${process.execPath} ${DMTOOL} copy ${big} ${out} --rate 4M`, '/dev/null'], {
      encoding: 'utf8',
      timeout: 30000,
    });
    expect(r.status).toBe(0);
    const updates = r.stdout.split(new RegExp(`\r|${String.fromCharCode(27)}\\[1G`)).filter((s) => s.startsWith('copy ['));
    expect(updates.length).toBeGreaterThanOrEqual(2);
    for (const u of updates) {
      const m = /\| ([\d.]+ [KMG]iB|0 B) of 8\.0 MiB \| (-|([\d.]+) (B|KiB|MiB)\/s) \| eta (-|\d+s|\d+m\d\ds)/.exec(u);
      expect(m).not.toBeNull();
      if (m![3] !== undefined && m![4] === 'MiB') expect(Number(m![3])).toBeLessThanOrEqual(4);
    }
  });
});
