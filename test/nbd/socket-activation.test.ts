/**
 * `dmtool serve` under systemd socket activation: started by
 * systemd-socket-activate on the first connection, it serves on the
 * inherited descriptor 3 (a unix socket or TCP), and refuses --socket or
 * --tcp with it.
 */
import { ChildProcess, spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { DMTOOL } from '../support/cli';
import { havePeer, nbdUri, peer, randomFile, sha256 } from './serve-process';

jest.setTimeout(60000);

const IMAGE_BYTES = 8 << 20;
const nbdinfo = havePeer('nbdinfo');
const nbdcopy = havePeer('nbdcopy');
const activate = havePeer('systemd-socket-activate', ['--version']);
const when = (ok: boolean) => (ok ? test : test.skip);

let dir: string;
let image: string;
const children: ChildProcess[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-nbd-activate-'));
  image = path.join(dir, 'disk.img');
  randomFile(image, IMAGE_BYTES, 7);
});

afterEach(async () => {
  for (const c of children.splice(0)) {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGKILL');
      await new Promise((resolve) => c.once('close', resolve));
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Activated {
  child: ChildProcess;
  stdout(): string;
  exited: Promise<{ status: number | null; signal: NodeJS.Signals | null }>;
}

/** systemd-socket-activate listening on `address`, running `dmtool serve ARGS` on the first connection. */
async function activated(address: string, args: string[], waitForPath?: string): Promise<Activated> {
  const child = spawn('systemd-socket-activate', ['-l', address, process.execPath, DMTOOL, 'serve', ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let stdout = '';
  child.stdout!.on('data', (d) => (stdout += d));
  child.stderr!.on('data', () => undefined);
  const exited = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (status, signal) => resolve({ status, signal })),
  );
  // systemd-socket-activate binds before it waits for a connection; wait for that (at most 10 s).
  for (let i = 0; i < 200 && waitForPath && !fs.existsSync(waitForPath); i++) await new Promise((r) => setTimeout(r, 50));
  return { child, stdout: () => stdout, exited };
}

async function stop(a: Activated): Promise<{ status: number | null; signal: NodeJS.Signals | null }> {
  a.child.kill('SIGTERM');
  const timer = setTimeout(() => a.child.kill('SIGKILL'), 15000);
  const r = await a.exited;
  clearTimeout(timer);
  return r;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen({ host: '127.0.0.1', port: 0 }, () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

const table = () => `0 ${IMAGE_BYTES / 512} linear ${image} 0`;

when(activate && nbdinfo && nbdcopy)('a unix socket passed as descriptor 3: served, copied byte-exact, stopped cleanly', async () => {
  const socket = path.join(dir, 'activated.sock');
  const a = await activated(socket, ['--dev', 'disk', table(), '--read-only', 'disk'], socket);
  // The first connection starts dmtool; the client waits in the socket's backlog meanwhile.
  const size = peer('nbdinfo', ['--size', nbdUri(socket, 'disk')]);
  expect(size.stderr).toBe('');
  expect(size.stdout).toBe(`${IMAGE_BYTES}\n`);
  const out = path.join(dir, 'copy.img');
  const c = peer('nbdcopy', [nbdUri(socket, 'disk'), out]);
  expect(c.stderr).toBe('');
  expect(sha256(out)).toBe(sha256(image));
  expect(await stop(a)).toEqual({ status: 0, signal: null });
  expect(a.stdout()).toBe(
    [
      `export disk: ${IMAGE_BYTES} bytes, read-only`,
      'listening on descriptor 3 (socket activation) (SIGINT or SIGTERM stops)',
      `status disk: 0 ${IMAGE_BYTES / 512} linear `,
      'stopped; every device flushed',
      '',
    ].join('\n'),
  );
  // The socket belongs to whoever passed it: left in place.
  expect(fs.lstatSync(socket).isSocket()).toBe(true);
});

when(activate && nbdinfo)('a TCP socket passed as descriptor 3: its address is printed and served', async () => {
  const port = await freePort();
  const a = await activated(`127.0.0.1:${port}`, ['--dev', 'disk', table()]);
  // Bounded: systemd-socket-activate binds right after it starts.
  let size = peer('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/disk`]);
  for (let i = 0; i < 50 && size.status !== 0; i++) {
    await new Promise((r) => setTimeout(r, 100));
    size = peer('nbdinfo', ['--size', `nbd://127.0.0.1:${port}/disk`]);
  }
  expect(size.stdout).toBe(`${IMAGE_BYTES}\n`);
  expect(await stop(a)).toEqual({ status: 0, signal: null });
  expect(a.stdout().split('\n').slice(0, 2)).toEqual([
    `export disk: ${IMAGE_BYTES} bytes, read-write: nbd://127.0.0.1:${port}/disk`,
    `listening on nbd://127.0.0.1:${port} (SIGINT or SIGTERM stops)`,
  ]);
});

test('--socket or --tcp with socket activation: one line, exit 2; LISTEN_PID of another process is ignored', () => {
  // sh execs dmtool, so $$ is dmtool's pid: activated, and nothing was passed, which the refusal comes before.
  for (const [option, value] of [
    ['--socket', path.join(dir, 'x.sock')],
    ['--tcp', '127.0.0.1:10809'],
  ]) {
    const r = spawnSync(
      'sh',
      ['-c', `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, process.execPath, DMTOOL, 'serve', option, value, '--dev', 'disk', table()],
      { encoding: 'utf8', timeout: 30000 },
    );
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`dmtool: ${option} cannot be used with systemd socket activation (LISTEN_FDS): the socket is passed in\n`);
    expect(r.status).toBe(2);
  }
  expect(fs.existsSync(path.join(dir, 'x.sock'))).toBe(false);
  // Variables meant for another process (the pid of this test) are not activation: no refusal of --socket;
  // dmtool goes on to open the (missing) device and fails there, exit 3.
  const socket = path.join(dir, 'own.sock');
  const r = spawnSync(process.execPath, [DMTOOL, 'serve', '--socket', socket, '--dev', 'disk', '0 1 linear /nonexistent 0'], {
    encoding: 'utf8',
    env: { ...process.env, LISTEN_PID: String(process.pid), LISTEN_FDS: '1' },
    timeout: 30000,
  });
  expect(r.stderr).not.toContain('socket activation');
  expect(r.status).toBe(3);
});
