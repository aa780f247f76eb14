import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ByteReader, SnapshotError } from '@dmtool/dm-snapshot';
import { CliError } from './errors';
import { formatBytes } from './units';

/** Reads from a file are made in pieces of at least this much. */
const READ_AHEAD_BYTES = 1 << 20;

function readAt(fd: number, buf: Buffer, offset: number, bytes: number, position: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, offset, bytes, position, (e, n) => (e ? reject(e) : resolve(n))));
}

/** A regular file (or a spool file) read from its start, with read-ahead so small reads cost no system call each. */
class FileReader implements ByteReader {
  private readonly ahead = Buffer.alloc(READ_AHEAD_BYTES);
  private aheadStart = 0;
  private aheadEnd = 0;
  private position = 0;

  constructor(private readonly fd: number) {}

  async read(buf: Buffer, bytes: number): Promise<number> {
    let n = 0;
    while (n < bytes) {
      if (this.aheadStart === this.aheadEnd) {
        if (bytes - n >= READ_AHEAD_BYTES) {
          const got = await readAt(this.fd, buf, n, bytes - n, this.position);
          if (got === 0) break;
          this.position += got;
          n += got;
          continue;
        }
        const got = await readAt(this.fd, this.ahead, 0, READ_AHEAD_BYTES, this.position);
        if (got === 0) break;
        this.position += got;
        this.aheadStart = 0;
        this.aheadEnd = got;
      }
      const take = Math.min(bytes - n, this.aheadEnd - this.aheadStart);
      this.ahead.copy(buf, n, this.aheadStart, this.aheadStart + take);
      this.aheadStart += take;
      n += take;
    }
    return n;
  }
}

/** A pipe, read as it comes; the stream pauses while nothing is asked of it. */
class PipeReader implements ByteReader {
  private readonly it: AsyncIterator<Buffer>;
  private pending: Buffer = Buffer.alloc(0);
  private ended = false;

  /** `signal` ends a read that waits on a writer gone quiet: an interrupt must not wait for the pipe. */
  constructor(
    stream: NodeJS.ReadableStream,
    private readonly signal?: AbortSignal,
  ) {
    this.it = (stream as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
  }

  /**
   * The next piece, or the interrupt. One listener per read, removed once it
   * settles (a race against one long-lived promise would keep every piece
   * read alive through its reactions).
   */
  private next(): Promise<IteratorResult<Buffer>> {
    const signal = this.signal;
    if (!signal) return this.it.next();
    const stopped = () => new SnapshotError('ECANCELED', 'aborted', 'stopped while reading the stream');
    if (signal.aborted) return Promise.reject(stopped());
    return new Promise((resolve, reject) => {
      const onAbort = () => reject(stopped());
      signal.addEventListener('abort', onAbort, { once: true });
      this.it.next().then(
        (r) => {
          signal.removeEventListener('abort', onAbort);
          resolve(r);
        },
        (e: unknown) => {
          signal.removeEventListener('abort', onAbort);
          reject(e);
        },
      );
    });
  }

  async read(buf: Buffer, bytes: number): Promise<number> {
    let n = 0;
    while (n < bytes) {
      if (this.pending.length === 0) {
        if (this.ended) break;
        const r = await this.next();
        if (r.done) {
          this.ended = true;
          break;
        }
        this.pending = r.value;
      }
      const take = Math.min(bytes - n, this.pending.length);
      this.pending.copy(buf, n, 0, take);
      this.pending = this.pending.subarray(take);
      n += take;
    }
    return n;
  }
}

/** Everything read through it is also written to `fd` (the spool file). */
class TeeReader implements ByteReader {
  constructor(
    private readonly source: ByteReader,
    private readonly fd: number,
    private readonly spoolPath: string,
  ) {}

  async read(buf: Buffer, bytes: number): Promise<number> {
    const n = await this.source.read(buf, bytes);
    try {
      for (let done = 0; done < n;) done += fs.writeSync(this.fd, buf, done, n - done);
    } catch (e) {
      throw new CliError('output-failed', `cannot spool the stream in ${this.spoolPath}: ${(e as Error).message}`);
    }
    return n;
  }
}

/**
 * snapshot-apply's input: a regular file (read twice, to check and then to
 * write) or a pipe (read once, checked as it is spooled).
 */
export interface StreamInput {
  name: string;
  /** A regular file: `reopen` reads it again from the start. */
  seekable: boolean;
  /** The identity of the file, to refuse it as the target. */
  stat: fs.Stats;
  /** A reader from the start; a pipe's read ends when `signal` fires. */
  reader(signal?: AbortSignal): ByteReader;
  close(): void;
}

export function openStreamInput(name: string): StreamInput {
  let fd: number;
  if (name === '-') fd = 0;
  else {
    try {
      fd = fs.openSync(name, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new CliError('bad-input-data', `--input ${name}: ${code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
    }
  }
  const stat = fs.fstatSync(fd);
  const close = () => {
    if (fd !== 0) fs.closeSync(fd);
  };
  if (stat.isDirectory()) {
    close();
    throw new CliError('bad-input-data', `--input ${name}: is a folder`);
  }
  if (stat.isFile()) return { name, seekable: true, stat, reader: () => new FileReader(fd), close };
  let stream: (NodeJS.ReadableStream & { destroy(): void }) | undefined;
  return {
    name,
    seekable: false,
    stat,
    reader: (signal) => {
      if (stream) throw new Error('a pipe is read once');
      stream = fd === 0 ? process.stdin : fs.createReadStream('', { fd, autoClose: false });
      return new PipeReader(stream, signal);
    },
    close: () => {
      // A pipe left open would keep the process waiting for a writer that may never come.
      stream?.destroy();
      close();
    },
  };
}

/**
 * A spool for a piped stream: an unlinked file in `dir` (so nothing is left
 * behind, whatever happens), after checking the folder has room for the
 * whole stream.
 */
export class Spool {
  private constructor(
    readonly fd: number,
    readonly dir: string,
  ) {}

  static create(dir: string, streamBytes: number): Spool {
    let st: fs.StatsFs;
    try {
      if (!fs.statSync(dir).isDirectory()) throw new CliError('usage', `--spool-dir ${dir} is not a folder`);
      st = fs.statfsSync(dir);
    } catch (e) {
      if (e instanceof CliError) throw e;
      throw new CliError('usage', `--spool-dir ${dir}: ${(e as Error).message}`);
    }
    const freeBytes = st.bavail * st.bsize;
    if (freeBytes < streamBytes) {
      throw new CliError(
        'no-spool-space',
        `not enough space to spool the stream in ${dir}: it needs ${formatBytes(streamBytes)} (${streamBytes} bytes), ${formatBytes(freeBytes)} are free; give --spool-dir DIR with room, or --no-verify-first`,
      );
    }
    const file = path.join(dir, `.dmtool-apply.${process.pid}.${Date.now()}.spool`);
    let fd: number;
    try {
      fd = fs.openSync(file, 'wx+', 0o600);
    } catch (e) {
      throw new CliError('usage', `--spool-dir ${dir}: cannot create a spool file: ${(e as Error).message}`);
    }
    fs.unlinkSync(file);
    return new Spool(fd, dir);
  }

  /** A reader of `source` that spools what it reads. */
  tee(source: ByteReader): ByteReader {
    return new TeeReader(source, this.fd, this.dir);
  }

  /** The spooled stream, from its start. */
  reader(): ByteReader {
    return new FileReader(this.fd);
  }

  close(): void {
    fs.closeSync(this.fd);
  }
}

/** The folder a spool goes in by default: the target's, when it is an image file, else $TMPDIR. */
export function defaultSpoolDir(target: string): string {
  try {
    if (fs.statSync(target).isFile()) return path.dirname(path.resolve(target));
  } catch {
    // not a path (an NBD URI, an LVM operand): the temporary folder
  }
  return os.tmpdir();
}

/** A reader that first gives back bytes already read (the header), then the rest of `source`. */
export function replay(prefix: Buffer, source: ByteReader): ByteReader {
  let left = prefix;
  return {
    async read(buf, bytes) {
      const take = Math.min(bytes, left.length);
      left.copy(buf, 0, 0, take);
      left = left.subarray(take);
      if (take === bytes) return take;
      return take + (await source.read(buf.subarray(take), bytes - take));
    },
  };
}
