import * as fs from 'fs';
import { CliError } from './errors';

/** Input from a pipe or a device has no size to check first: at most this much is held in memory. */
export const PIPE_INPUT_LIMIT_BYTES = 64 << 20;

/** Data to write: a regular file (size known before reading), or stdin / a device / a pipe. */
export interface Input {
  name: string;
  /** Known for regular files only. */
  sizeBytes?: number;
  stream(opts?: { highWaterMark?: number }): NodeJS.ReadableStream & { destroy(): void };
  close(): void;
}

/** Open `name` ("-" is stdin); a missing file is one line, not a stack. */
export function openInput(name: string): Input {
  if (name === '-') {
    const isFile = fs.fstatSync(0).isFile();
    return { name, sizeBytes: isFile ? fs.fstatSync(0).size : undefined, stream: () => process.stdin, close: () => undefined };
  }
  let fd: number;
  try {
    fd = fs.openSync(name, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    throw new CliError('bad-input-data', `--input ${name}: ${code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
  const st = fs.fstatSync(fd);
  let closed = false;
  return {
    name,
    sizeBytes: st.isFile() ? st.size : undefined,
    stream: (opts) => fs.createReadStream('', { fd, autoClose: false, start: 0, ...opts }),
    close() {
      if (!closed) fs.closeSync(fd);
      closed = true;
    },
  };
}

/** The whole input if it holds at most `maxBytes`; undefined (having read maxBytes + 1 at most) if it holds more. */
export async function readBounded(input: Input, maxBytes: number): Promise<Buffer | undefined> {
  const parts: Buffer[] = [];
  let bytes = 0;
  const stream = input.stream();
  for await (const part of stream as AsyncIterable<Buffer>) {
    bytes += part.length;
    if (bytes > maxBytes) {
      stream.destroy();
      return undefined;
    }
    parts.push(part);
  }
  return Buffer.concat(parts, bytes);
}

/** A regular file's contents in pieces: `firstBytes`, then `pieceBytes` each (the last may be shorter). */
export async function* filePieces(input: Input, firstBytes: number, pieceBytes: number): AsyncGenerator<Buffer> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  let want = firstBytes;
  for await (const part of input.stream({ highWaterMark: pieceBytes }) as AsyncIterable<Buffer>) {
    pending.push(part);
    pendingBytes += part.length;
    while (pendingBytes >= want) {
      const all = Buffer.concat(pending, pendingBytes);
      yield all.subarray(0, want);
      pending = [all.subarray(want)];
      pendingBytes -= want;
      want = pieceBytes;
    }
  }
  if (pendingBytes > 0) yield Buffer.concat(pending, pendingBytes);
}

/** A buffer in the same pieces as filePieces. */
export function* bufferPieces(data: Buffer, firstBytes: number, pieceBytes: number): Generator<Buffer> {
  for (let at = 0, want = firstBytes; at < data.length; at += want, want = pieceBytes) yield data.subarray(at, at + want);
}
