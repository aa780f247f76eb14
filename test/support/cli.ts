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

export interface StartedCli {
  pid: number;
  done: Promise<CliResult>;
}

/** Start the CLI in a child process and return at once; `done` settles when it exits. */
export function dmtoolStart(args: string[], opts: CliOptions = {}): StartedCli {
  const child = spawn(process.execPath, [DMTOOL, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: childEnv(opts), cwd: opts.cwd });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const done = new Promise<CliResult>((resolve) => child.on('exit', (status, signal) => resolve({ status, signal, stdout, stderr })));
  return { pid: child.pid ?? -1, done };
}
