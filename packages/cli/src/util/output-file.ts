import * as fs from 'fs';
import * as path from 'path';
import { writeStdout } from './stdio';

/**
 * A file a command writes its result to, seen only once complete: a regular
 * file (or one not there yet) is written under a temporary name beside it
 * and renamed over it by `commit`, so a failure part-way leaves the previous
 * file as it was. Devices, pipes and stdout ("-" or no path) are written in
 * place: there is nothing to rename over them.
 */
export class OutputFile {
  private closed = false;

  private constructor(
    readonly fd: number,
    private readonly sync: boolean,
    private readonly temp?: { path: string; target: string },
  ) {}

  static open(target: string | undefined): OutputFile {
    if (target === undefined || target === '-') return new OutputFile(1, false);
    let existing: fs.Stats | undefined;
    try {
      existing = fs.statSync(target);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (existing && !existing.isFile()) return new OutputFile(fs.openSync(target, 'w'), existing.isBlockDevice());
    // Through a symlink: replace the file it names, not the link.
    const final = existing ? fs.realpathSync(target) : target;
    const tempPath = path.join(path.dirname(final), `.${path.basename(final)}.${process.pid}.partial`);
    const fd = fs.openSync(tempPath, 'wx', existing ? existing.mode & 0o7777 : 0o666);
    if (existing) fs.fchmodSync(fd, existing.mode & 0o7777);
    return new OutputFile(fd, true, { path: tempPath, target: final });
  }

  /** True when the target is replaced only by `commit` (a regular file). */
  get replacesWhole(): boolean {
    return this.temp !== undefined;
  }

  async write(data: Buffer): Promise<void> {
    if (this.fd === 1) return writeStdout(data);
    for (let done = 0; done < data.length;) done += fs.writeSync(this.fd, data, done, data.length - done);
  }

  /** Make the output durable and put it in place. */
  commit(): void {
    if (this.fd === 1) return;
    if (this.sync) fs.fsyncSync(this.fd);
    this.closed = true;
    fs.closeSync(this.fd);
    if (this.temp) fs.renameSync(this.temp.path, this.temp.target);
  }

  /** Give up: a temporary file is removed, the target is left as it was. */
  discard(): void {
    if (this.fd === 1) return;
    try {
      if (!this.closed) fs.closeSync(this.fd);
      this.closed = true;
    } finally {
      if (this.temp) fs.rmSync(this.temp.path, { force: true });
    }
  }
}
