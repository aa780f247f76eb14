import * as fs from 'fs';
import * as path from 'path';
import { BlockDevice } from '@dmtool/devices';
import { openDevice } from './open-device';
import { writeStdout } from './stdio';

/**
 * Where a command writes its result, seen only once complete where that can
 * be done: a regular file (or one not there yet) is written under a
 * temporary name beside it and renamed over it by `commit`, so a failure
 * part-way leaves the previous file as it was. A block device is opened as
 * every device is (O_EXCL, an exclusive lock) and written in place; pipes,
 * character devices and stdout ("-" or no path) are written in place.
 */
export class OutputFile {
  private closed = false;
  private deviceByte = 0;

  private constructor(
    private readonly sink:
      | { kind: 'stdout' }
      | { kind: 'fd'; fd: number }
      | { kind: 'device'; device: BlockDevice }
      | { kind: 'temp'; fd: number; path: string; target: string },
  ) {}

  static async open(target: string | undefined): Promise<OutputFile> {
    if (target === undefined || target === '-') return new OutputFile({ kind: 'stdout' });
    let existing: fs.Stats | undefined;
    try {
      existing = fs.statSync(target);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (existing?.isBlockDevice()) return new OutputFile({ kind: 'device', device: await openDevice(target, { write: true }) });
    if (existing && !existing.isFile()) return new OutputFile({ kind: 'fd', fd: fs.openSync(target, 'w') });
    // Through a symlink: replace the file it names, not the link.
    const final = existing ? fs.realpathSync(target) : target;
    const tempPath = path.join(path.dirname(final), `.${path.basename(final)}.${process.pid}.partial`);
    const fd = fs.openSync(tempPath, 'wx', existing ? existing.mode & 0o7777 : 0o666);
    if (existing) fs.fchmodSync(fd, existing.mode & 0o7777);
    return new OutputFile({ kind: 'temp', fd, path: tempPath, target: final });
  }

  /** True when the target is replaced only by `commit` (a regular file). */
  get replacesWhole(): boolean {
    return this.sink.kind === 'temp';
  }

  async write(data: Buffer): Promise<void> {
    const s = this.sink;
    if (s.kind === 'stdout') return writeStdout(data);
    if (s.kind === 'device') {
      await s.device.write(data, 0, data.length, this.deviceByte);
      this.deviceByte += data.length;
      return;
    }
    for (let done = 0; done < data.length;) done += fs.writeSync(s.fd, data, done, data.length - done);
  }

  /** Make the output durable and put it in place. */
  async commit(): Promise<void> {
    const s = this.sink;
    if (s.kind === 'stdout') return;
    this.closed = true;
    if (s.kind === 'device') {
      try {
        await s.device.flush();
      } finally {
        s.device.close();
      }
      return;
    }
    if (s.kind === 'temp') fs.fsyncSync(s.fd);
    fs.closeSync(s.fd);
    if (s.kind !== 'temp') return;
    fs.renameSync(s.path, s.target);
    // The rename is durable only once the directory holding it is.
    const dir = fs.openSync(path.dirname(s.target), 'r');
    try {
      fs.fsyncSync(dir);
    } finally {
      fs.closeSync(dir);
    }
  }

  /** Give up: a temporary file is removed, the target is left as it was. */
  discard(): void {
    const s = this.sink;
    if (s.kind === 'stdout' || this.closed) return;
    this.closed = true;
    if (s.kind === 'device') {
      s.device.close();
      return;
    }
    try {
      fs.closeSync(s.fd);
    } finally {
      if (s.kind === 'temp') fs.rmSync(s.path, { force: true });
    }
  }
}
