import { BlockDevice, OpenOptions, SECTOR_BYTES } from '@dmtool/kcopyd';
import * as fs from 'fs';
import * as path from 'path';
import { looksLikeNbdUri, parseVolumeOperand } from './lazy-packages';
import { openCowDevice, openDevice, resolver } from './open-device';
import { CliError } from './errors';
import { syncFolder } from './sync-folder';

export interface DeviceSpec {
  path: string;
  role: string;
  write: boolean;
  /**
   * A path that does not exist becomes a new regular file of this many
   * bytes, computed from the devices opened before it in the list.
   */
  create?: (opened: readonly BlockDevice[]) => number;
}

/** What openAll opened, and which of the paths it created (they are removed again if opening fails). */
export interface Opened {
  devices: BlockDevice[];
  created: string[];
}

/**
 * Open every device a command needs, or none (a device in the role `COW`
 * given as an LVM snapshot `PV...:VG/SNAP` is its COW LV): the same file or block device
 * given twice is refused, and a failure to open one closes the others.
 * Block devices are opened with O_EXCL, so a mounted or busy one is refused.
 */
export async function openAll(specs: DeviceSpec[], opts: Omit<OpenOptions, 'write'> = {}): Promise<BlockDevice[]> {
  return (await openOrCreateAll(specs, opts)).devices;
}

/** openAll, creating the destinations that have `create` and do not exist yet (never on a dry run). */
export async function openOrCreateAll(specs: DeviceSpec[], opts: Omit<OpenOptions, 'write'> & { dryRun?: boolean } = {}): Promise<Opened> {
  refusePartialSectors(specs);
  const toCreate = specs.map((s) => s.create !== undefined && isNewFile(s));
  const identities = specs.map((s, i) => (toCreate[i] ? `new:${path.resolve(s.path)}` : resolver.identify(s.path)));
  identities.forEach((id, i) => {
    const twin = identities.indexOf(id);
    if (twin < i)
      throw new CliError('same-device', `${specs[i].role} ${specs[i].path} is the same device as ${specs[twin].role} ${specs[twin].path}`);
  });
  const opened: Opened = { devices: [], created: [] };
  try {
    for (const [i, spec] of specs.entries()) {
      const open = spec.role === 'COW' ? openCowDevice : openDevice;
      if (!toCreate[i]) {
        opened.devices.push(await open(spec.path, { ...opts, write: spec.write }));
        continue;
      }
      const sizeBytes = (spec.create as NonNullable<DeviceSpec['create']>)(opened.devices);
      if (opts.dryRun) continue;
      opened.devices.push(await openDevice(spec.path, { ...opts, write: true, create: { sizeBytes } }));
      opened.created.push(spec.path);
      // Flushing the file makes its data durable, not its name: without this a crash could lose the whole copy.
      syncFolder(spec.path);
    }
    return opened;
  } catch (e) {
    closeAll(opened.devices);
    removeCreated(opened.created);
    throw e;
  }
}

/** A name of a local file or device (not an NBD URI or an LVM volume). */
export function namesLocalPath(name: string): boolean {
  return !looksLikeNbdUri(name) && !parseVolumeOperand(name);
}

/**
 * A path to create: a local name (not an NBD URI or an LVM volume) where nothing exists,
 * not even a dangling symlink. Its folder must exist: a missing one is bad
 * input, not something to make.
 */
function isNewFile(spec: DeviceSpec): boolean {
  if (!namesLocalPath(spec.path)) return false;
  try {
    fs.lstatSync(spec.path);
    return false;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return false;
  }
  const dir = path.dirname(path.resolve(spec.path));
  let isDir = false;
  try {
    isDir = fs.statSync(dir).isDirectory();
  } catch {
    // reported below
  }
  if (!isDir) throw new CliError('usage', `${spec.role} ${spec.path}: folder ${dir} does not exist; create it first`);
  return true;
}

/** Remove files this command created, so nothing that looks like a copy is left behind. */
export function removeCreated(paths: readonly string[]): void {
  for (const p of paths) {
    try {
      fs.unlinkSync(p);
    } catch {
      // best effort: the error that led here is the one reported
    }
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
