import * as fs from 'fs';
import { majorMinor } from './identity';

const MAX_COMMAND_CHARS = 200;

/**
 * Who holds a flock on `path`, from /proc/locks (matched by the file's
 * device and inode) and the holder's /proc/PID/cmdline, e.g.
 * "pid 1234 (dmtool snapshot-merge origin.img cow.img)". Best effort: the
 * holder may have exited meanwhile, or live in another pid namespace.
 */
export function lockHolder(path: string): string {
  try {
    const st = fs.statSync(path, { bigint: true });
    const [major, minor] = majorMinor(st.dev);
    const holders: { pid: number; write: boolean }[] = [];
    for (const line of fs.readFileSync('/proc/locks', 'utf8').split('\n')) {
      const m = /^\d+:\s+FLOCK\s+\S+\s+(READ|WRITE)\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line);
      if (!m || parseInt(m[3], 16) !== major || parseInt(m[4], 16) !== minor || BigInt(m[5]) !== st.ino) continue;
      const pid = Number(m[2]);
      if (pid > 0) holders.push({ pid, write: m[1] === 'WRITE' });
    }
    const holder = holders.find((h) => h.write) ?? holders[0];
    if (holder) return `pid ${holder.pid}${commandOf(holder.pid)}`;
  } catch {
    // fall through: no /proc, or the file vanished
  }
  return 'another process';
}

/** " (dmtool merge ...)" for a dmtool run by node, " (argv...)" otherwise, "" if unreadable. */
function commandOf(pid: number): string {
  let args: string[];
  try {
    args = fs
      .readFileSync(`/proc/${pid}/cmdline`, 'utf8')
      .split('\0')
      .filter((a) => a.length > 0);
  } catch {
    return '';
  }
  if (args.length >= 2 && /(^|\/)node$/.test(args[0]) && /(^|\/)dmtool(\.js)?$/.test(args[1])) args = ['dmtool', ...args.slice(2)];
  if (args.length === 0) return '';
  const text = args.join(' ');
  return ` (${text.length > MAX_COMMAND_CHARS ? `${text.slice(0, MAX_COMMAND_CHARS - 3)}...` : text})`;
}
