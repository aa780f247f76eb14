import { spawn, spawnSync, SpawnSyncReturns } from 'child_process';
import * as path from 'path';

export const DMTOOL = path.resolve(__dirname, '../../packages/cli/bin/dmtool.js');

export interface CliResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Run the built CLI (npx tsc -b first) in a child process. */
export function dmtool(args: string[], opts: { env?: Record<string, string>; input?: Buffer } = {}): CliResult {
  const r: SpawnSyncReturns<string> = spawnSync(process.execPath, [DMTOOL, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
    input: opts.input as unknown as string,
    maxBuffer: 256 << 20,
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

/** Start the CLI and SIGKILL it after `ms` milliseconds (or when it ends first). */
export function dmtoolKilledAfter(args: string[], ms: number): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [DMTOOL, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
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
