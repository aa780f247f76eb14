import * as fs from 'fs';
import { StringDecoder } from 'string_decoder';
import { CliError } from './errors';

/** A pipe that gives nothing for this long is given up on. */
const STDIN_IDLE_LIMIT_MS = 60_000;

/** Read fd 0 synchronously; a non-blocking pipe (EAGAIN) is waited on in 5 ms steps, for a bounded time. */
function readStdin(buf: Buffer): number {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  for (let waitedMs = 0; ; waitedMs += 5) {
    try {
      return fs.readSync(0, buf, 0, buf.length, null);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EOF') return 0;
      if (code !== 'EAGAIN') throw e;
      if (waitedMs >= STDIN_IDLE_LIMIT_MS)
        throw new CliError('bad-input-data', `--input -: nothing read for ${STDIN_IDLE_LIMIT_MS / 1000} s`);
      Atomics.wait(pause, 0, 0, 5);
    }
  }
}

/** The dump file (or stdin, "-"), read synchronously in pieces by the parser. */
export function openDumpFile(name: string): { read: (buf: Buffer) => number; close(): void } {
  if (name === '-') return { read: readStdin, close: () => undefined };
  let fd: number;
  try {
    fd = fs.openSync(name, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new CliError('bad-input-data', `--input ${name}: ${code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  if (fs.fstatSync(fd).isDirectory()) {
    fs.closeSync(fd);
    throw new CliError('bad-input-data', `--input ${name}: is a folder`);
  }
  return { read: (buf) => fs.readSync(fd, buf, 0, buf.length, null), close: () => fs.closeSync(fd) };
}

/** The lines of a dump (without their newlines), read in 1 MiB pieces; a line longer than 64 KiB is refused. */
export function* dumpLines(input: { read: (buf: Buffer) => number }): Generator<string> {
  const buf = Buffer.alloc(1 << 20);
  const decoder = new StringDecoder('utf8');
  let pending = '';
  for (let n = input.read(buf); n > 0; n = input.read(buf)) {
    const parts = (pending + decoder.write(buf.subarray(0, n))).split('\n');
    pending = parts.pop() ?? '';
    if (pending.length > 64 * 1024) throw new CliError('bad-input-data', 'a line of the dump is longer than 64 KiB');
    yield* parts;
  }
  if (pending !== '') yield pending;
}
