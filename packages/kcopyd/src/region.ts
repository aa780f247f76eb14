import { BlockDevice, SECTOR_BYTES } from '@dmtool/devices';
import { KcopydError } from './errors';
import { MAX_DESTINATIONS } from './flags';

/** A range of 512-byte sectors on a device. */
export interface Region {
  device: BlockDevice;
  sector: number;
  count: number;
}

/** A destination: `count`, when given, must equal the source's. */
export interface DestinationRegion {
  device: BlockDevice;
  sector: number;
  count?: number;
}

export function describe(r: { device: BlockDevice; sector: number }, count: number): string {
  return `${r.device.path} sectors ${r.sector}..${r.sector + count - 1}`;
}

function checkInside(r: { device: BlockDevice; sector: number }, count: number, role: string): void {
  if (!Number.isSafeInteger(r.sector) || r.sector < 0) {
    throw new KcopydError('bad-sector', `${role} start sector ${r.sector} is not a non-negative integer`);
  }
  if (!r.device.isOpen) throw new KcopydError('closed', `${role} ${r.device.path} is closed`, 'EBADF');
  const end = r.sector + count;
  if (end > r.device.sizeSectors) {
    throw new KcopydError(
      'out-of-range',
      `${role} ${describe(r, count)} ends beyond the device end (${r.device.sizeSectors} sectors)`,
      'ERANGE',
    );
  }
  const align = r.device.ioAlignmentBytes / SECTOR_BYTES;
  if (align > 1 && (r.sector % align !== 0 || count % align !== 0)) {
    throw new KcopydError('misaligned', `${role} ${describe(r, count)} is not aligned to ${align} sectors, as O_DIRECT requires`);
  }
}

function overlaps(a: { device: BlockDevice; sector: number }, b: { device: BlockDevice; sector: number }, count: number): boolean {
  return a.device.identity === b.device.identity && a.sector < b.sector + count && b.sector < a.sector + count;
}

/** Refuse a job before any I/O: bounds, counts, read-only or overlapping destinations. */
export function validateJob(from: Region | undefined, to: readonly DestinationRegion[], count: number): void {
  if (!Number.isSafeInteger(count) || count <= 0) {
    throw new KcopydError('bad-count', `sector count must be a positive integer (got ${count})`);
  }
  if (to.length === 0) throw new KcopydError('no-destination', 'at least one destination is needed');
  if (to.length > MAX_DESTINATIONS) {
    throw new KcopydError('too-many-destinations', `at most ${MAX_DESTINATIONS} destinations per job (got ${to.length})`);
  }
  if (from) checkInside(from, count, 'source');
  to.forEach((d, i) => {
    if (d.count !== undefined && d.count !== count) {
      throw new KcopydError('bad-count', `destination ${i} count ${d.count} differs from the source count ${count}`);
    }
    checkInside(d, count, `destination ${i}`);
    if (!d.device.writable) {
      throw new KcopydError('read-only', `destination ${i} ${d.device.path} was opened read-only`, 'EBADF');
    }
    if (from && overlaps(from, d, count)) {
      throw new KcopydError('overlap', `destination ${i} ${describe(d, count)} overlaps the source ${describe(from, count)}`);
    }
    for (let j = 0; j < i; j++) {
      if (overlaps(to[j], d, count)) {
        throw new KcopydError('overlap', `destinations ${j} and ${i} overlap on ${d.device.path}`);
      }
    }
  });
}
