import { BlockDevice, DeviceDecorator, DeviceResolver } from '@dmtool/devices';
import { Origin, Snapshot } from '@dmtool/dm-snapshot';
import { openMirror } from '@dmtool/dm-mirror';
import {
  BorrowedDevice,
  ConcatDevice,
  LinearDevice,
  MirrorDevice,
  SnapshotDevice,
  SnapshotOriginDevice,
  StripedDevice,
} from '@dmtool/targets';
import { LvmError } from './errors';
import { mapLogicalVolume } from './lv-map';
import { originSnapshots, snapshotSegmentOf } from './relations';
import { requireAllPvs, VolumeGroup } from './scan';
import { LvMetadata, MirrorSegment, SnapshotSegment } from './vg-metadata';

export interface LvDeviceOptions {
  write: boolean;
  /** Shown in messages (default `VG/LV`). */
  name?: string;
  /** Runs once when the LV device is closed (e.g. closes the PVs). */
  onClose?: () => void;
}

/**
 * An LV as a device, as the kernel maps `/dev/VG/LV` when the VG is active:
 * linear and striped segments as LinearDevices (StripedDevices of them),
 * concatenated; a snapshot (its COW LV or lvm2's internal `snapshotN`) as
 * the snapshot view over the origin LV and the COW LV; a mirror as a
 * MirrorDevice over its `_mimage_N` legs and `_mlog` log; the origin of
 * snapshots, opened for writing, as a snapshot-origin that copies every
 * chunk it changes into each snapshot first.
 */
export async function openLogicalVolume(vg: VolumeGroup, lvName: string, opts: LvDeviceOptions): Promise<BlockDevice> {
  const meta = vg.metadata;
  const lv = meta.lvs.find((l) => l.name === lvName);
  if (!lv) throw new LvmError('unknown-lv', `VG ${meta.name} has no LV ${JSON.stringify(lvName)}`);
  requireAllPvs(vg);
  const name = opts.name ?? `${meta.name}/${lv.name}`;
  const snapshot = snapshotSegmentOf(meta, lv.name);
  if (snapshot) return openSnapshotView(vg, snapshot, { ...opts, name });
  const mirror = lv.segments.find((s): s is MirrorSegment => s.type === 'mirror');
  if (mirror) return openMirrorLv(vg, lv, mirror, { ...opts, name });
  const snapshots = originSnapshots(meta, lv.name);
  if (opts.write && snapshots.length > 0) return openWritableOrigin(vg, lv, snapshots, { ...opts, name });
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

/** An LV by name, mapped (linear/striped only). */
function mapLvByName(vg: VolumeGroup, lvName: string, opts: LvDeviceOptions): BlockDevice {
  const lv = vg.metadata.lvs.find((l) => l.name === lvName) as LvMetadata;
  return mapLvDevice(vg, lv, { write: opts.write, name: `${vg.metadata.name}/${lvName}` });
}

/** A target device whose close() also ends what it was built from (the snapshot, origin, mirror, PVs). */
class VolumeDevice extends DeviceDecorator {
  private closed = false;

  constructor(
    inner: BlockDevice,
    private readonly name: string,
    private readonly cleanup: () => void,
  ) {
    super(inner);
  }

  override get path(): string {
    return this.name;
  }

  override close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.inner.close();
    } finally {
      this.cleanup();
    }
  }
}

/**
 * The COW LV of a snapshot is written by the kernel's snapshot target;
 * its origin LV through snapshot-origin. Both are refused for writing
 * while lvm2 records a merge (merging_store): only the merge may write them.
 */
function refuseWriteWhileMerging(vg: VolumeGroup, seg: SnapshotSegment, what: string): void {
  if (seg.merging) {
    throw new LvmError(
      'unsupported-lv',
      `${vg.metadata.name}/${what}: the merge of ${seg.cow} into ${seg.origin} is pending (merging_store); finish it with snapshot-merge before writing`,
    );
  }
}

async function openSnapshotView(vg: VolumeGroup, seg: SnapshotSegment, opts: LvDeviceOptions & { name: string }): Promise<BlockDevice> {
  if (opts.write) refuseWriteWhileMerging(vg, seg, seg.cow);
  const originDev = mapLvByName(vg, seg.origin, { write: false });
  const cowDev = mapLvByName(vg, seg.cow, { write: opts.write });
  const origin = new Origin(originDev);
  let snap: Snapshot | undefined;
  try {
    snap = await Snapshot.open(origin, cowDev, { chunkSectors: seg.chunkSectors });
    const view = new SnapshotDevice(snap, { name: opts.name, readOnly: !opts.write });
    return new VolumeDevice(view, opts.name, () => {
      void origin.close();
      opts.onClose?.();
    });
  } catch (e) {
    snap?.close();
    void origin.close();
    throw e;
  }
}

async function openWritableOrigin(
  vg: VolumeGroup,
  lv: LvMetadata,
  snapshots: SnapshotSegment[],
  opts: LvDeviceOptions & { name: string },
): Promise<BlockDevice> {
  for (const s of snapshots) refuseWriteWhileMerging(vg, s, lv.name);
  const origin = new Origin(mapLvDevice(vg, lv, { write: true, name: opts.name }));
  const snaps: Snapshot[] = [];
  const end = () => {
    for (const s of snaps) s.close();
    void origin.close();
  };
  try {
    for (const s of snapshots) {
      snaps.push(await Snapshot.open(origin, mapLvByName(vg, s.cow, { write: true }), { chunkSectors: s.chunkSectors }));
    }
    const device = new SnapshotOriginDevice(origin, { name: opts.name });
    return new VolumeDevice(device, opts.name, () => {
      end();
      opts.onClose?.();
    });
  } catch (e) {
    end();
    throw e;
  }
}

async function openMirrorLv(
  vg: VolumeGroup,
  lv: LvMetadata,
  seg: MirrorSegment,
  opts: LvDeviceOptions & { name: string },
): Promise<BlockDevice> {
  const meta = vg.metadata;
  if (lv.segments.length !== 1) {
    throw new LvmError(
      'unsupported-lv',
      `${meta.name}/${lv.name} has ${lv.segments.length} segments; a mirror LV of one segment can be opened`,
    );
  }
  // The legs and the log are LVs of their own: each mapped once, handed to openMirror by name.
  const parts = new Map<string, BlockDevice>();
  for (const p of [...seg.legs.map((l) => l.lv), ...(seg.log === undefined ? [] : [seg.log])]) {
    parts.set(p, mapLvByName(vg, p, { write: opts.write }));
  }
  const resolver: DeviceResolver = {
    identify: (n) => (parts.get(n) as BlockDevice).identity,
    open: (n) => new BorrowedDevice(parts.get(n) as BlockDevice),
  };
  const closeParts = () => {
    for (const d of parts.values()) d.close();
  };
  try {
    const mirror = await openMirror(
      {
        lengthSectors: seg.extentCount * meta.extentSectors,
        regionSize: seg.regionSectors,
        log: seg.log === undefined ? { type: 'core' } : { type: 'disk', path: seg.log },
        legs: seg.legs.map((l) => ({ path: l.lv, offsetSectors: l.startExtent * meta.extentSectors })),
      },
      resolver,
      { writeLegs: opts.write },
    );
    // No background resync: the device serves one command's reads and writes, which wait for nothing else.
    const device = new MirrorDevice(mirror, { name: opts.name, readOnly: !opts.write, resync: false });
    return new VolumeDevice(device, opts.name, () => {
      mirror.close();
      closeParts();
      opts.onClose?.();
    });
  } catch (e) {
    closeParts();
    throw e;
  }
}
