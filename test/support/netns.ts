/**
 * Two network namespaces joined by a veth pair, for NBD over TCP between
 * "hosts": the client runs in `local`, servers in `remote`, each through
 * `ip netns exec`. Names are unique per pair (process id and a counter),
 * addresses are a private /30 chosen per pair (10.201.X.0/30), and
 * `withNetnsPair` removes the namespaces (with the veth ends in them) and
 * every process it started, whatever the test did.
 */
import { spawn, spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { CliOptions, CliResult, DMTOOL, RunningCli, startDmtool, waitFor } from './cli';
import { ServerProcess } from './nbd-servers';

export interface NetnsPair {
  /** The namespace the client runs in. */
  readonly local: string;
  /** The "remote host": servers run here. */
  readonly remote: string;
  readonly localAddress: string;
  readonly remoteAddress: string;
  /** Run a command in a namespace, bounded in time. */
  run(ns: string, cmd: string[], timeoutMs?: number): SpawnSyncReturns<string>;
  /** `dmtool ARGS` in the local namespace, waited for. */
  dmtool(args: string[], opts?: CliOptions): CliResult;
  /** `dmtool ARGS` in the local namespace as a running process. */
  startDmtool(args: string[], opts?: CliOptions): RunningCli;
  /**
   * `nbdkit ARGS` in the remote namespace, listening on remoteAddress:port;
   * resolves once it accepts connections (its pid file is written then).
   * Stopped by the pair's cleanup if the test did not stop it.
   */
  startNbdkit(args: string[], port?: number): Promise<ServerProcess>;
}

const PATH_ENV = { ...process.env, PATH: `/usr/sbin:/sbin:/usr/bin:/bin:${process.env.PATH ?? ''}` };
let pairs = 0;

function ip(args: string[]): SpawnSyncReturns<string> {
  return spawnSync('ip', args, { encoding: 'utf8', env: PATH_ENV, timeout: 10000 });
}

function ipOrThrow(args: string[]): void {
  const r = ip(args);
  if (r.status !== 0) throw new Error(`ip ${args.join(' ')} failed: ${r.stderr || r.error?.message || `exit ${r.status}`}`);
}

/**
 * Whether namespaces can be made here (root, iproute2, a kernel that allows
 * it). When not, the caller's tests are skipped with a message; under
 * CI=true they fail instead (.ci/run installs iproute2 and runs as root).
 */
export function haveNetns(): boolean {
  const probe = `dmtool-probe-${process.pid}`;
  const made = ip(['netns', 'add', probe]);
  const ok = made.status === 0;
  if (ok) ip(['netns', 'del', probe]);
  if (!ok) {
    const why = made.error?.message ?? made.stderr.trim();
    if (process.env.CI === 'true') {
      test('ip netns is permitted', () => {
        throw new Error(`cannot create a network namespace (${why}); CI runs as root with iproute2 (.ci/run installs it)`);
      });
    } else {
      console.warn(`skipping the network namespace tests: ip netns add is not permitted here (${why})`);
    }
  }
  return ok;
}

/** Create a pair, run `fn`, and remove the namespaces, the veth pair and every server started, even when `fn` throws. */
export async function withNetnsPair<T>(fn: (pair: NetnsPair) => Promise<T>): Promise<T> {
  const n = pairs++;
  const id = `${process.pid.toString(36)}${n.toString(36)}`;
  const local = `dmtool-l-${id}`;
  const remote = `dmtool-r-${id}`;
  // Interface names have at most 15 characters.
  const localIf = `dmv${id}l`;
  const remoteIf = `dmv${id}r`;
  const subnet = 1 + ((process.pid * 7 + n) % 254);
  const localAddress = `10.201.${subnet}.1`;
  const remoteAddress = `10.201.${subnet}.2`;
  const servers: ServerProcess[] = [];
  const scratch = fs.mkdtempSync(path.join(fs.realpathSync('/tmp'), 'dmtool-netns-'));
  try {
    ipOrThrow(['netns', 'add', local]);
    ipOrThrow(['netns', 'add', remote]);
    ipOrThrow(['link', 'add', localIf, 'type', 'veth', 'peer', 'name', remoteIf]);
    ipOrThrow(['link', 'set', localIf, 'netns', local]);
    ipOrThrow(['link', 'set', remoteIf, 'netns', remote]);
    ipOrThrow(['-n', local, 'addr', 'add', `${localAddress}/30`, 'dev', localIf]);
    ipOrThrow(['-n', remote, 'addr', 'add', `${remoteAddress}/30`, 'dev', remoteIf]);
    for (const [ns, dev] of [
      [local, localIf],
      [remote, remoteIf],
      [local, 'lo'],
      [remote, 'lo'],
    ]) {
      ipOrThrow(['-n', ns, 'link', 'set', dev, 'up']);
    }
    const pair: NetnsPair = {
      local,
      remote,
      localAddress,
      remoteAddress,
      run: (ns, cmd, timeoutMs = 60000) =>
        spawnSync('ip', ['netns', 'exec', ns, ...cmd], { encoding: 'utf8', env: PATH_ENV, timeout: timeoutMs, maxBuffer: 64 << 20 }),
      dmtool(args, opts = {}) {
        const env: NodeJS.ProcessEnv = { ...PATH_ENV, ...opts.env };
        delete env.DMTOOL_FAULTS;
        const r = spawnSync('ip', ['netns', 'exec', local, process.execPath, DMTOOL, ...args], {
          encoding: 'utf8',
          env,
          timeout: opts.timeoutMs ?? 120000,
          maxBuffer: 64 << 20,
        });
        return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
      },
      startDmtool: (args, opts = {}) => startDmtool(args, { ...opts, command: ['ip', 'netns', 'exec', local, process.execPath, DMTOOL] }),
      async startNbdkit(args, port = 10809) {
        const s = await startNbdkitIn(remote, remoteAddress, port, args, path.join(scratch, `nbdkit-${servers.length}.pid`));
        servers.push(s);
        return s;
      },
    };
    return await fn(pair);
  } finally {
    for (const s of servers) await s.stop('SIGKILL');
    ip(['netns', 'del', local]);
    ip(['netns', 'del', remote]);
    // Only left in the root namespace if the pair failed half-made.
    if (ip(['link', 'show', localIf]).status === 0) ip(['link', 'del', localIf]);
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

/** `ip netns exec NS nbdkit -f -i ADDRESS -p PORT -P PIDFILE ARGS`; ready when nbdkit has written its pid file. */
async function startNbdkitIn(ns: string, address: string, port: number, args: string[], pidFile: string): Promise<ServerProcess> {
  fs.rmSync(pidFile, { force: true });
  // `ip netns exec` execs nbdkit, so the child is nbdkit itself: a signal reaches it directly.
  const child = spawn(
    'ip',
    ['netns', 'exec', ns, 'nbdkit', '-f', '--exit-with-parent', '-i', address, '-p', String(port), '-P', pidFile, ...args],
    {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: PATH_ENV,
    },
  );
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  let running = true;
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  void exited.then(() => (running = false));
  const stop = async (signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10000) => {
    if (running) child.kill(signal);
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    await exited;
    clearTimeout(timer);
  };
  // nbdkit writes the pid file once it accepts connections.
  const ready = await waitFor(() => !running || (fs.existsSync(pidFile) && fs.readFileSync(pidFile, 'utf8').trim() !== ''), 10000);
  if (!ready || !running) {
    await stop('SIGKILL');
    throw new Error(`nbdkit did not start in namespace ${ns}: ${stderr}`);
  }
  return { pid: child.pid as number, socketPath: '', stderr: () => stderr, stop };
}
