/**
 * Third-party NBD servers (nbdkit, qemu-nbd) as child processes on a unix
 * socket, for the client tests. Starting waits (bounded) until the socket
 * accepts a connection; stopping waits for the exit. Every test stops what
 * it started in `finally`.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';

export interface ServerProcess {
  readonly pid: number;
  readonly socketPath: string;
  stderr(): string;
  /** SIGTERM (or `signal`), then wait for the exit; SIGKILL after `timeoutMs`. */
  stop(signal?: NodeJS.Signals, timeoutMs?: number): Promise<void>;
}

function canConnect(to: { path: string } | { host: string; port: number }): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(to);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function startServer(
  cmd: string,
  args: string[],
  socketPath: string,
  listening: () => Promise<boolean>,
  timeoutMs = 10000,
): Promise<ServerProcess> {
  if (socketPath) fs.rmSync(socketPath, { force: true });
  const child = spawn(cmd, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}` },
  });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  let running = true;
  void exited.then(() => (running = false));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM', stopTimeoutMs = 10000) => {
    if (running) child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs);
    await exited;
    clearTimeout(timer);
  };
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (!running || Date.now() > until) {
      await stop('SIGKILL');
      throw new Error(`${cmd} did not start listening: ${stderr}`);
    }
    if (await listening()) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return { pid: child.pid as number, socketPath, stderr: () => stderr, stop };
}

/** `nbdkit -f -U SOCKET ARGS...` (plugin, its parameters, filters). */
export function startNbdkit(args: string[], socketPath: string): Promise<ServerProcess> {
  return startServer('nbdkit', ['-f', '--exit-with-parent', '-U', socketPath, ...args], socketPath, () => unixListening(socketPath));
}

const unixListening = async (socketPath: string) => fs.existsSync(socketPath) && (await canConnect({ path: socketPath }));

/** A TCP port on 127.0.0.1 that was free a moment ago (the kernel's choice). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** `nbdkit -f -i 127.0.0.1 -p PORT ARGS...`: loopback only, on a port the kernel picked. */
export async function startNbdkitTcp(args: string[]): Promise<ServerProcess & { port: number }> {
  const port = await freePort();
  const s = await startServer('nbdkit', ['-f', '--exit-with-parent', '-i', '127.0.0.1', '-p', String(port), ...args], '', () =>
    canConnect({ host: '127.0.0.1', port }),
  );
  return { ...s, port };
}

/** `qemu-nbd -k SOCKET --persistent ARGS...` */
export function startQemuNbd(args: string[], socketPath: string): Promise<ServerProcess> {
  return startServer('qemu-nbd', ['-k', socketPath, '--persistent', ...args], socketPath, () => unixListening(socketPath));
}
