import { spawn, spawnSync } from 'child_process';
import * as path from 'path';

/** The built CLI entry point; `npm test` builds the packages before jest runs. */
export const DMTOOL = path.resolve(__dirname, '../../packages/cli/bin/dmtool.js');

export interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string>;
  input?: Buffer | string;
  /** A fault plan for the child (DMTOOL_FAULTS); without it any inherited plan is removed. */
  faults?: object;
  timeoutMs?: number;
  cwd?: string;
}

function childEnv(opts: CliOptions): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...opts.env };
  if (opts.faults) env.DMTOOL_FAULTS = JSON.stringify(opts.faults);
  else if (!opts.env?.DMTOOL_FAULTS) delete env.DMTOOL_FAULTS;
  return env;
}

/** Run the CLI in a child process and wait for it. */
export function dmtool(args: string[], opts: CliOptions = {}): CliResult {
  const r = spawnSync(process.execPath, [DMTOOL, ...args], {
    encoding: 'utf8',
    env: childEnv(opts),
    input: opts.input,
    cwd: opts.cwd,
    timeout: opts.timeoutMs ?? 120000,
    maxBuffer: 256 << 20,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Start the CLI and SIGKILL it after `ms` milliseconds (or when it ends first). */
export function dmtoolKilledAfter(args: string[], ms: number, opts: CliOptions = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [DMTOOL, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv(opts) });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), ms);
    child.on('exit', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
}

export interface RunningCli {
  pid: number;
  /** Send a signal; returns the time it was sent (ms, Date.now()). */
  signal(sig: NodeJS.Signals): number;
  /** Resolves when the process ends; `endedAt` is Date.now() at exit. */
  done: Promise<CliResult & { endedAt: number }>;
  /** stderr so far. */
  stderr(): string;
}

/**
 * Start the CLI (or another entry point: `command`, e.g. the installed sh
 * wrapper) as a real process, to signal it while it runs. It is SIGKILLed
 * after `opts.timeoutMs` (default 30 s) so no test waits forever.
 */
export function startDmtool(args: string[], opts: CliOptions & { command?: string[] } = {}): RunningCli {
  const [file, ...pre] = opts.command ?? [process.execPath, DMTOOL];
  const child = spawn(file, [...pre, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: childEnv(opts), cwd: opts.cwd });
  if (opts.input !== undefined) child.stdin.end(opts.input);
  else child.stdin.end();
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30000);
  const done = new Promise<CliResult & { endedAt: number }>((resolve) => {
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr, endedAt: Date.now() });
    });
  });
  return {
    pid: child.pid as number,
    signal(sig) {
      child.kill(sig);
      return Date.now();
    },
    done,
    stderr: () => stderr,
  };
}

/** Wait (at most `timeoutMs`, polling every 20 ms) until `cond()` holds; false if it never did. */
export async function waitFor(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return cond();
}
