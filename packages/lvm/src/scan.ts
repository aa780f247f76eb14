import { BlockDevice } from '@dmtool/devices';
import { LvmError } from './errors';
import { MetadataCopy, PhysicalVolume, readPhysicalVolume, readPhysicalVolumeSync } from './read-pv';
import { VgMetadata } from './vg-metadata';

/** A VG as found on the given devices: its newest metadata and the device of each of its PVs that was given. */
export interface VolumeGroup {
  metadata: VgMetadata;
  /** The copy the metadata came from (the highest seqno; the first device's on a tie). */
  source: { path: string; areaByte: number };
  /** How many metadata copies were read, and how many of them carry `metadata.seqno`. */
  copies: number;
  currentCopies: number;
  /** PV key (`pv0`) → the device holding it. */
  devices: Map<string, BlockDevice>;
  /** PV keys of the metadata that none of the given devices holds. */
  missing: string[];
}

/**
 * Read every device as a PV and group them into VGs. Across all metadata
 * copies of a VG (every area of every PV) the highest `seqno` wins, as in
 * lvm2's scan. A device without an LVM2 label is refused.
 */
export async function scanVolumeGroups(devices: readonly BlockDevice[], opts: ScanOptions = {}): Promise<VolumeGroup[]> {
  const pvs: PhysicalVolume[] = [];
  for (const d of devices) pvs.push(await readPhysicalVolume(d));
  return groupVolumeGroups(pvs, opts);
}

export interface ScanOptions {
  /**
   * Leave out PVs that belong to no VG found (a PV not yet in a VG, or one
   * without metadata areas whose VG's other PVs were not given), as `lvs`
   * does; by default they are refused, naming the device.
   */
  ignoreOrphans?: boolean;
}

/** `scanVolumeGroups` with synchronous reads (see `readPhysicalVolumeSync`). */
export function scanVolumeGroupsSync(
  devices: readonly BlockDevice[],
  readSync: (device: BlockDevice) => (buf: Buffer, byteOffset: number) => void,
): VolumeGroup[] {
  return groupVolumeGroups(devices.map((d) => readPhysicalVolumeSync(d, readSync(d))));
}

/** Group PVs into VGs by the metadata they carry; the highest seqno of each VG wins. */
export function groupVolumeGroups(pvs: readonly PhysicalVolume[], opts: ScanOptions = {}): VolumeGroup[] {
  const newest = new Map<string, { copy: MetadataCopy; pv: PhysicalVolume; copies: MetadataCopy[] }>();
  for (const pv of pvs) {
    for (const copy of pv.copies) {
      const seen = newest.get(copy.vg.uuid);
      if (!seen) newest.set(copy.vg.uuid, { copy, pv, copies: [copy] });
      else {
        seen.copies.push(copy);
        if (copy.vg.seqno > seen.copy.vg.seqno) Object.assign(seen, { copy, pv });
      }
    }
  }
  const groups: VolumeGroup[] = [];
  const claimed = new Set<PhysicalVolume>();
  for (const { copy, pv, copies } of newest.values()) {
    const vg = copy.vg;
    const byUuid = new Map(pvs.map((p) => [p.uuid, p]));
    const found = new Map<string, BlockDevice>();
    const missing: string[] = [];
    for (const meta of vg.pvs) {
      const holder = byUuid.get(meta.uuid);
      if (holder) {
        found.set(meta.key, holder.device);
        claimed.add(holder);
      } else missing.push(meta.key);
    }
    groups.push({
      metadata: vg,
      source: { path: pv.device.path, areaByte: copy.areaByte },
      copies: copies.length,
      currentCopies: copies.filter((c) => c.vg.seqno === vg.seqno).length,
      devices: found,
      missing,
    });
  }
  const orphan = pvs.find((p) => !claimed.has(p));
  if (orphan && !opts.ignoreOrphans) {
    throw new LvmError('no-metadata', `PV ${orphan.uuid} belongs to no VG whose metadata was found on the given devices`, {
      path: orphan.device.path,
    });
  }
  return groups.sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : a.metadata.name > b.metadata.name ? 1 : 0));
}

/** Refuse a VG some of whose PVs were not given. */
export function requireAllPvs(vg: VolumeGroup): void {
  if (vg.missing.length === 0) return;
  const names = vg.missing.map((key) => {
    const pv = vg.metadata.pvs.find((p) => p.key === key);
    return `${key} (${pv?.uuid}${pv?.deviceHint ? `, last seen as ${pv.deviceHint}` : ''})`;
  });
  throw new LvmError(
    'missing-pv',
    `VG ${vg.metadata.name} is missing ${vg.missing.length === 1 ? 'PV' : 'PVs'} ${names.join(', ')}: give every PV of the VG`,
  );
}

export function findVolumeGroup(vgs: readonly VolumeGroup[], name: string): VolumeGroup {
  const vg = vgs.find((v) => v.metadata.name === name);
  if (!vg) {
    throw new LvmError(
      'unknown-vg',
      `no VG ${JSON.stringify(name)} on the given PVs (found: ${vgs.map((v) => v.metadata.name).join(', ') || 'none'})`,
    );
  }
  return vg;
}
