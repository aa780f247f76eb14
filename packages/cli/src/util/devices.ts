import { BlockDevice, OpenOptions, SECTOR_BYTES } from '@dmtool/kcopyd';
import * as fs from 'fs';
import { openCowDevice, openDevice, resolver } from './open-device';
import { CliError } from './errors';

export interface DeviceSpec {
  path: string;
  role: string;
  write: boolean;
}

/**
 * Open every device a command needs, or none (a device in the role `COW`
 * given as an LVM snapshot `PV...:VG/SNAP` is its COW LV): the same file or block device
 * given twice is refused, and a failure to open one closes the others.
 * Block devices are opened with O_EXCL, so a mounted or busy one is refused.
 */
export async function openAll(specs: DeviceSpec[], opts: Omit<OpenOptions, 'write'> = {}): Promise<BlockDevice[]> {
  refusePartialSectors(specs);
  const identities = specs.map((s) => resolver.identify(s.path));
  identities.forEach((id, i) => {
    const twin = identities.indexOf(id);
    if (twin < i)
      throw new CliError('same-device', `${specs[i].role} ${specs[i].path} is the same device as ${specs[twin].role} ${specs[twin].path}`);
  });
  const opened: BlockDevice[] = [];
  try {
    for (const spec of specs) {
      const open = spec.role === 'COW' ? openCowDevice : openDevice;
      opened.push(await open(spec.path, { ...opts, write: spec.write }));
    }
    return opened;
  } catch (e) {
    closeAll(opened);
    throw e;
  }
}

/**
 * Refuse an image file whose size is not a whole number of 512-byte
 * sectors: every range is in sectors, so its tail could be neither read nor
 * written (a loop device drops it too). Block devices always pass; a path
 * that cannot be examined is left for the open to report.
 */
export function refusePartialSectors(specs: { path: string; role: string }[]): void {
  for (const spec of specs) {
    let sizeBytes: number;
    try {
      const st = fs.statSync(spec.path);
      if (!st.isFile()) continue;
      sizeBytes = st.size;
    } catch {
      continue;
    }
    if (sizeBytes % SECTOR_BYTES !== 0) {
      throw new CliError(
        'partial-sector',
        `${spec.role} ${spec.path} is ${sizeBytes} bytes, not a whole number of ${SECTOR_BYTES}-byte sectors; pad or truncate it to a multiple of ${SECTOR_BYTES} bytes`,
      );
    }
  }
}

export function closeAll(devices: BlockDevice[]): void {
  for (const d of devices) {
    try {
      d.close();
    } catch {
      // closing is best effort once an error is being reported
    }
  }
}
