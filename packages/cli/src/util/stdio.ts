import type { CliError } from './errors';

/**
 * Write errors on stdout and stderr (a full disk, /dev/full, a closed pipe),
 * handled in one place: a reader that closed the pipe (`| head`) ends the
 * process quietly with the exit code so far; any other stdout error is
 * reported once, as one line, when the work is over.
 */
let stdoutError: Error | undefined;
let stderrBroken = false;

function readerClosed(): never {
  process.exit(process.exitCode || 0);
}

export function watchStdio(): void {
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') readerClosed();
    stdoutError ??= e;
  });
  process.stderr.on('error', () => (stderrBroken = true));
  // A write error is emitted after the write returns, possibly after the
  // command's promise settled: decide the exit code at the very end.
  process.on('exit', (code) => {
    process.exitCode = exitCodeAfterOutput(code);
  });
}

/**
 * The exit code once the work has ended with `workCode`. If the work
 * succeeded but its output was lost, that is the failure (exit 1); a failed
 * work keeps its own code and error line.
 */
function exitCodeAfterOutput(workCode: number): number {
  if (!stdoutError || workCode !== 0) return workCode;
  if (!stderrBroken) process.stderr.write(`dmtool: cannot write output: ${stdoutError.message}\n`);
  return 1;
}

/** Write data to stdout and wait until it is taken (a pipe may be slow). */
export function writeStdout(data: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    process.stdout.write(data, (e?: NodeJS.ErrnoException | null) => {
      if (!e) return resolve();
      if (e.code === 'EPIPE') readerClosed();
      reject(outputFailed(e));
    });
  });
}

/**
 * The error of a failed stdout write. The entry point loads this module
 * first of all, before the error classes (and @dmtool/devices and zod with
 * them) are needed: they are required here only when a write fails.
 */
function outputFailed(e: Error): CliError {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { CliError } = require('./errors') as typeof import('./errors');
  return new CliError('output-failed', `cannot write output: ${e.message}`);
}
