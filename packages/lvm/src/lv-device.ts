import { BlockDevice } from '@dmtool/devices';
import { ConcatDevice, LinearDevice, StripedDevice } from '@dmtool/targets';
import { LvmError } from './errors';
import { mapLogicalVolume } from './lv-map';
import { isSnapshotCarrier, originSnapshots, snapshotOfCow } from './relations';
import { requireAllPvs, VolumeGroup } from './scan';
import { LvMetadata } from './vg-metadata';

export interface LvDeviceOptions {
  write: boolean;
  /** Shown in messages (default `VG/LV`). */
  name?: string;
  /** Runs once when the LV device is closed (e.g. closes the PVs). */
  onClose?: () => void;
}

/**
 * An LV of linear and striped segments as a device, as the kernel maps it:
 * one segment is a LinearDevice (or a StripedDevice of LinearDevices), more
 * are concatenated. An origin with snapshots is opened read-only only: a
 * write would bypass their copy-on-write.
 */
export function openLogicalVolume(vg: VolumeGroup, lvName: string, opts: LvDeviceOptions): BlockDevice {
  const meta = vg.metadata;
  const lv = meta.lvs.find((l) => l.name === lvName);
  if (!lv) throw new LvmError('unknown-lv', `VG ${meta.name} has no LV ${JSON.stringify(lvName)}`);
  requireAllPvs(vg);
  const snapshots = originSnapshots(meta, lv.name);
  if (opts.write && snapshots.length > 0) {
    throw new LvmError(
      'unsupported-lv',
      `${meta.name}/${lv.name} is the origin of ${snapshots.map((s) => s.cow).join(', ')}: writing it without copy-on-write would corrupt them`,
    );
  }
  if (snapshotOfCow(meta, lv.name) || isSnapshotCarrier(meta, lv.name)) {
    throw new LvmError('unsupported-lv', `${meta.name}/${lv.name} is a snapshot; its view cannot be opened as a device yet`);
  }
  return mapLvDevice(vg, lv, opts);
}

/** The device of an LV's linear and striped segments, with no rule about what the LV is used for. */
export function mapLvDevice(vg: VolumeGroup, lv: LvMetadata, opts: LvDeviceOptions): BlockDevice {
  const meta = vg.metadata;
  requireAllPvs(vg);
  const name = opts.name ?? `${meta.name}/${lv.name}`;
  const segments = mapLogicalVolume(meta, lv).map((seg, i) => {
    const legs = seg.stripes.map(
      (r) => new LinearDevice(vg.devices.get(r.pv) as BlockDevice, r.byteOffset, r.sizeBytes, { name: `${name}:seg${i + 1}:${r.pv}` }),
    );
    return legs.length === 1 ? legs[0] : new StripedDevice(legs, seg.stripeBytes, { name: `${name}:seg${i + 1}` });
  });
  return new ConcatDevice(segments, { name, readOnly: !opts.write, onClose: opts.onClose });
}
