import { execFileSync } from 'child_process';
import * as net from 'net';
import * as path from 'path';
import { DMTOOL, startDmtool, waitFor } from '../support/cli';
import { makeImage, readRange, sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';

/**
 * Node's inspector runs any code it is sent. dmtool runs as root, so no
 * signal and no environment variable may leave an inspector port open:
 * SIGUSR1 prints a progress line (as dd does), the installed command drops
 * NODE_OPTIONS, and the JavaScript entry refuses to run with an inspector open.
 */
const MiB = 1 << 20;
/** The installed command (package.json "bin"). */
const INSTALLED = path.resolve(__dirname, '../../packages/cli/bin/dmtool');

/** TCP ports the process `pid` listens on. */
function listeningPorts(pid: number): number[] {
  const out = execFileSync('ss', ['-Hltnp'], { encoding: 'utf8' });
  return out
    .split('\n')
    .filter((l) => l.includes(`pid=${pid},`))
    .map((l) => Number(/:(\d+)\s/.exec(l.split(/\s+/)[3] + ' ')?.[1]));
}

/** Whether a TCP connect to 127.0.0.1:port is accepted (bounded to 2 s). */
function accepts(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => finish(false), 2000);
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      s.destroy();
      resolve(ok);
    };
    s.on('connect', () => finish(true));
    s.on('error', () => finish(false));
  });
}

describe('no inspector, SIGUSR1 prints progress', () => {
  let dir: string;
  let src: string;
  let dst: string;
  beforeEach(() => {
    dir = tempDir('dmtool-usr1-');
    src = path.join(dir, 'src.img');
    dst = path.join(dir, 'dst.img');
    makeImage(src, MiB, 'SRC');
    makeImage(dst, MiB);
  });
  afterEach(() => removeDir(dir));

  const firstPieceLanded = () => readRange(dst, 0, 512).some((b) => b !== 0);

  it('kill -USR1 prints one progress line on stderr and opens no port; the copy goes on', async () => {
    const child = startDmtool(['copy', src, dst, '--rate', '4k'], { timeoutMs: 15000 });
    try {
      expect(await waitFor(firstPieceLanded, 5000)).toBe(true);
      // The progress shown is what was flushed, about once a second.
      await new Promise((r) => setTimeout(r, 1200));
      child.signal('SIGUSR1');
      expect(await waitFor(() => child.stderr().length > 0, 2000)).toBe(true);
      await new Promise((r) => setTimeout(r, 300));
      expect(listeningPorts(child.pid)).toEqual([]);
      if (await accepts(9229))
        expect(execFileSync('ss', ['-Hltnp', 'sport = :9229'], { encoding: 'utf8' })).not.toContain(`pid=${child.pid},`);
      const m = /^copy: (\d+) of 1048576 bytes \([\d.]+ (?:B|KiB) of 1\.0 MiB, (\d+)%\) done in [\d.]+ s, [\d.]+ (?:B|KiB|MiB)\/s\n$/.exec(
        child.stderr(),
      );
      expect(m).not.toBeNull();
      // At least the first 4 KiB piece was flushed and reported; the copy is far from done.
      expect(Number(m![1])).toBeGreaterThanOrEqual(4096);
      expect(Number(m![2])).toBeLessThan(50);
    } finally {
      child.signal('SIGTERM');
    }
    const r = await child.done;
    expect(r.status).toBe(143);
    expect(r.stderr).not.toMatch(/Debugger listening|inspector/i);
  });

  it.each(['--inspect=127.0.0.1:0', '--inspect-brk=127.0.0.1:0', '--inspect-port=127.0.0.1:0'])(
    'the installed command runs with NODE_OPTIONS=%s and no port open, and SIGUSR1 opens none',
    async (nodeOptions) => {
      const child = startDmtool(['copy', src, dst, '--rate', '4k'], {
        command: [INSTALLED],
        env: { NODE_OPTIONS: nodeOptions },
        timeoutMs: 15000,
      });
      try {
        expect(await waitFor(firstPieceLanded, 5000)).toBe(true);
        expect(listeningPorts(child.pid)).toEqual([]);
        child.signal('SIGUSR1');
        await new Promise((r) => setTimeout(r, 300));
        expect(listeningPorts(child.pid)).toEqual([]);
      } finally {
        child.signal('SIGTERM');
      }
      const r = await child.done;
      expect(r.status).toBe(143);
      expect(r.stderr).not.toMatch(/Debugger listening/);
    },
  );

  it('the JavaScript entry refuses to run with an inspector open, writes nothing and leaves no port', async () => {
    const before = sha256File(dst);
    const child = startDmtool(['copy', src, dst], {
      command: [process.execPath, DMTOOL],
      env: { NODE_OPTIONS: '--inspect=127.0.0.1:0' },
      timeoutMs: 15000,
    });
    const r = await child.done;
    expect(r.status).toBe(2);
    expect(listeningPorts(child.pid)).toEqual([]);
    const lines = r.stderr.trim().split('\n');
    expect(lines[lines.length - 1]).toMatch(
      /^dmtool: refusing to run: the Node\.js inspector was open \(NODE_OPTIONS=--inspect, or SIGUSR1 while starting\) and runs any code sent to it$/,
    );
    expect(sha256File(dst)).toBe(before);
  });
});
