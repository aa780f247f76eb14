import * as fs from 'fs';
import * as tty from 'tty';
import { CliError } from './errors';
import { ProgressMode } from './progress';

/**
 * The progress a command shows: --quiet, none; --progress[=FD], a bar if
 * the descriptor is stderr on a terminal and lines otherwise; by default a
 * bar when stderr is a terminal and the output is not JSON, else nothing.
 */
export function progressModeFor(o: { progress?: string; quiet: boolean; json?: boolean }): ProgressMode {
  if (o.quiet && o.progress !== undefined) throw new CliError('usage', '--quiet and --progress exclude each other');
  if (o.quiet) return { kind: 'off' };
  if (o.progress === undefined) return process.stderr.isTTY === true && !o.json ? { kind: 'bar' } : { kind: 'off' };
  const fd = o.progress === '' ? 2 : Number(o.progress);
  checkInheritedFd(fd);
  return fd === 2 && tty.isatty(fd) ? { kind: 'bar' } : { kind: 'lines', fd };
}

/**
 * Refuse a descriptor that was not handed to dmtool: one that is not open,
 * or one Node itself holds (its event loop's epoll and eventfd, and the
 * self-pipes whose read end it holds too). Writing into those would break
 * the process.
 */
function checkInheritedFd(fd: number): void {
  const refuse = (why: string) => new CliError('usage', `--progress=${fd}: file descriptor ${fd} ${why}`);
  let target: string;
  try {
    target = fs.readlinkSync(`/proc/self/fd/${fd}`);
  } catch {
    throw refuse('is not open (redirect it, e.g. 3>progress.log)');
  }
  if (target.startsWith('anon_inode:')) throw refuse('is not a file, pipe, socket or terminal');
  if (!writable(fd)) throw refuse('is not open for writing');
  if (/^(pipe|socket):/.test(target)) {
    const twins = fs.readdirSync('/proc/self/fd').filter((n) => {
      try {
        return Number(n) !== fd && fs.readlinkSync(`/proc/self/fd/${n}`) === target && readable(Number(n));
      } catch {
        return false;
      }
    });
    if (twins.length > 0) throw refuse('is used by dmtool itself');
  }
}

/** The descriptor's access mode (O_RDONLY 0, O_WRONLY 1, O_RDWR 2), from /proc/self/fdinfo. */
function accessMode(fd: number): number {
  const m = /^flags:\s*([0-7]+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return m === null ? -1 : parseInt(m[1], 8) & 3;
}

function readable(fd: number): boolean {
  const mode = accessMode(fd);
  return mode === 0 || mode === 2;
}

function writable(fd: number): boolean {
  const mode = accessMode(fd);
  return mode === 1 || mode === 2;
}
