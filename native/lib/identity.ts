import * as fs from 'fs';

/** Major and minor number of a dev_t, as glibc encodes them. */
export function majorMinor(dev: bigint): [number, number] {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return [Number(major), Number(minor)];
}

/** The file a loop device is attached to (sysfs), or undefined for any other block device. */
export function loopBackingFile(rdev: bigint): string | undefined {
  const [major, minor] = majorMinor(rdev);
  try {
    const file = fs.readFileSync(`/sys/dev/block/${major}:${minor}/loop/backing_file`, 'utf8').trim();
    return file.length > 0 ? file : undefined;
  } catch {
    return undefined;
  }
}

export interface StatIds {
  isBlockDevice: boolean;
  dev: bigint;
  ino: bigint;
  rdev: bigint;
}

const MAX_LOOP_DEPTH = 8;

/**
 * One string per underlying storage: two paths of one file, or of one block
 * device, compare equal, and a loop device counts as the file (or device)
 * it is attached to. A backing file that was deleted leaves the loop device
 * its own identity.
 */
export function storageIdentity(ids: StatIds, depth = 0): string {
  if (!ids.isBlockDevice) return `file:${ids.dev}:${ids.ino}`;
  const backing = depth < MAX_LOOP_DEPTH ? loopBackingFile(ids.rdev) : undefined;
  if (backing !== undefined) {
    try {
      const st = fs.statSync(backing, { bigint: true });
      if (st.isFile() || st.isBlockDevice()) return storageIdentity(statIds(st), depth + 1);
    } catch {
      // "(deleted)" or not visible here: the loop device stands for itself
    }
  }
  return `block:${ids.rdev}`;
}

export function statIds(st: fs.BigIntStats): StatIds {
  return { isBlockDevice: st.isBlockDevice(), dev: st.dev, ino: st.ino, rdev: st.rdev };
}
