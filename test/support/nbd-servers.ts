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

function canConnect(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ path: socketPath });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

async function startServer(cmd: string, args: string[], socketPath: string, timeoutMs = 10000): Promise<ServerProcess> {
  fs.rmSync(socketPath, { force: true });
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
      throw new Error(`${cmd} did not start listening on ${socketPath}: ${stderr}`);
    }
    if (fs.existsSync(socketPath) && (await canConnect(socketPath))) break;
    await new Promise((r) => setTimeout(r, 20));
  }
  return { pid: child.pid as number, socketPath, stderr: () => stderr, stop };
}

/** `nbdkit -f -U SOCKET ARGS...` (plugin, its parameters, filters). */
export function startNbdkit(args: string[], socketPath: string): Promise<ServerProcess> {
  return startServer('nbdkit', ['-f', '--exit-with-parent', '-U', socketPath, ...args], socketPath);
}

/** `qemu-nbd -k SOCKET --persistent ARGS...` */
export function startQemuNbd(args: string[], socketPath: string): Promise<ServerProcess> {
  return startServer('qemu-nbd', ['-k', socketPath, '--persistent', ...args], socketPath);
}
