import * as fs from 'fs';

/** The flock(2) entries /proc/locks lists for a file: holder pid and mode. */
export function flocksOn(file: string): { pid: number; mode: 'READ' | 'WRITE' }[] {
  const st = fs.statSync(file, { bigint: true });
  const dev = st.dev;
  const major = Number(((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn));
  const minor = Number((dev & 0xffn) | ((dev >> 12n) & ~0xffn));
  const key = `${major.toString(16).padStart(2, '0')}:${minor.toString(16).padStart(2, '0')}:${st.ino}`;
  const found: { pid: number; mode: 'READ' | 'WRITE' }[] = [];
  for (const line of fs.readFileSync('/proc/locks', 'utf8').split('\n')) {
    const m = /^\d+:\s+FLOCK\s+\S+\s+(READ|WRITE)\s+(\d+)\s+(\S+)\s/.exec(line);
    if (m && m[3] === key) found.push({ pid: Number(m[2]), mode: m[1] as 'READ' | 'WRITE' });
  }
  return found;
}

/**
 * Wait until process `pid` holds a flock on `file` (it has opened its
 * devices and started work); false after `timeoutMs` without one.
 */
export async function waitForLock(file: string, pid: number, timeoutMs = 5000): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (flocksOn(file).some((l) => l.pid === pid)) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}
