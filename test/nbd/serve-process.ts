/**
 * `dmtool serve` as a real process for the NBD tests, and the peers
 * (nbdinfo, nbdcopy, nbdsh, qemu-img) they run against it.
 */
import { spawn, spawnSync, SpawnSyncReturns } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { DMTOOL } from '../support/cli';

export interface ServeProcess {
  pid: number;
  socketPath: string;
  stdout(): string;
  stderr(): string;
  /** SIGTERM, then wait for the exit (SIGKILL after `timeoutMs`). */
  stop(timeoutMs?: number): Promise<{ status: number | null; signal: NodeJS.Signals | null }>;
}

/**
 * Start `dmtool serve ARGS --socket SOCKET` (environment `env`; after
 * `prefix`, e.g. `ip netns exec NS`, which must exec it) and wait until it
 * listens; killed if that takes over `timeoutMs`.
 */
export async function startServe(
  args: string[],
  socketPath: string,
  timeoutMs = 15000,
  env: NodeJS.ProcessEnv = process.env,
  prefix: string[] = [],
): Promise<ServeProcess> {
  const [cmd, ...pre] = [...prefix, process.execPath];
  const child = spawn(cmd, [...pre, DMTOOL, 'serve', ...args, '--socket', socketPath], { stdio: ['ignore', 'pipe', 'pipe'], env });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const exited = new Promise<{ status: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('close', (status, signal) => resolve({ status, signal })),
  );
  const until = Date.now() + timeoutMs;
  while (!stdout.includes('listening on')) {
    const done = await Promise.race([exited, new Promise((r) => setTimeout(() => r(undefined), 20))]);
    if (done || Date.now() > until) {
      child.kill('SIGKILL');
      await exited;
      throw new Error(`dmtool serve did not start: ${stderr || stdout}`);
    }
  }
  return {
    pid: child.pid as number,
    socketPath,
    stdout: () => stdout,
    stderr: () => stderr,
    async stop(stopTimeoutMs = 15000) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), stopTimeoutMs);
      const r = await exited;
      clearTimeout(timer);
      return r;
    },
  };
}

export function nbdUri(socketPath: string, name: string): string {
  return `nbd+unix:///${name}?socket=${socketPath}`;
}

/** The system python3 holds libnbd's module; a python3 earlier in PATH may not. */
const PEER_ENV = { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}`, LIBNBD_DEBUG: '0' };

/** Run a peer tool, bounded in time. */
export function peer(cmd: string, args: string[], opts: { input?: string; timeoutMs?: number } = {}): SpawnSyncReturns<string> {
  return spawnSync(cmd, args, {
    encoding: 'utf8',
    env: PEER_ENV,
    input: opts.input,
    timeout: opts.timeoutMs ?? 60000,
    maxBuffer: 64 << 20,
  });
}

function installed(cmd: string, args: string[]): boolean {
  const r = spawnSync(cmd, args, { env: PEER_ENV, stdio: 'ignore', timeout: 10000 });
  return r.status === 0;
}

/**
 * Whether a peer tool can run. Missing, its tests are skipped with a
 * message; under CI=true a missing tool fails instead (CI installs them).
 */
export function havePeer(name: string, probe: string[] = ['--version']): boolean {
  const ok = installed(name, probe);
  if (!ok) {
    if (process.env.CI === 'true') {
      test(`${name} is installed`, () => {
        throw new Error(`${name} is missing; .ci/run installs it (apt-get install nbdkit libnbd-bin python3-libnbd qemu-utils)`);
      });
    } else {
      console.warn(`skipping the tests that need ${name}: it is not installed (apt-get install libnbd-bin python3-libnbd qemu-utils)`);
    }
  }
  return ok;
}

export function sha256(file: string, startBytes = 0, bytes?: number): string {
  const fd = fs.openSync(file, 'r');
  try {
    const h = createHash('sha256');
    const size = bytes ?? fs.fstatSync(fd).size - startBytes;
    const buf = Buffer.alloc(1 << 20);
    for (let done = 0; done < size;) {
      const n = fs.readSync(fd, buf, 0, Math.min(buf.length, size - done), startBytes + done);
      if (n === 0) throw new Error(`${file} ends before byte ${startBytes + size}`);
      h.update(buf.subarray(0, n));
      done += n;
    }
    return h.digest('hex');
  } finally {
    fs.closeSync(fd);
  }
}

export function randomFile(file: string, bytes: number, seed: number): void {
  const buf = Buffer.alloc(bytes);
  let s = seed >>> 0;
  for (let i = 0; i < bytes; i += 4) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    buf.writeUInt32LE(s, i);
  }
  fs.writeFileSync(file, buf);
}

/** A temporary folder per test and the `dmtool serve` processes a test starts in it. */
export interface ServeSandbox {
  /** This test's folder (new for each test). */
  readonly dir: string;
  /** Start `dmtool serve ARGS` on `nbd.sock` in the folder; stopped after the test unless forgotten. */
  serve(args: string[], env?: NodeJS.ProcessEnv): Promise<ServeProcess>;
  /** The test stops (or killed) this one itself. */
  forget(s: ServeProcess): void;
}

/**
 * Register beforeEach/afterEach hooks that give each test a fresh folder
 * (named from `prefix`) and stop every serve process it left running, then
 * remove the folder.
 */
export function serveSandbox(prefix: string): ServeSandbox {
  let dir = '';
  const servers: ServeProcess[] = [];
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  });
  afterEach(async () => {
    try {
      for (const s of servers.splice(0)) await s.stop();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
  return {
    get dir() {
      return dir;
    },
    async serve(args, env) {
      const s = await startServe(args, path.join(dir, 'nbd.sock'), 15000, env);
      servers.push(s);
      return s;
    },
    forget(s) {
      const i = servers.indexOf(s);
      if (i >= 0) servers.splice(i, 1);
    },
  };
}
