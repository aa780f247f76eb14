import { BlockDevice } from '@dmtool/devices';
import { LvmError } from './errors';
import { mapLvDevice, openLogicalVolume } from './lv-device';
import { readPhysicalVolume, PhysicalVolume } from './read-pv';
import { originSnapshots, snapshotSegmentOf } from './relations';
import { findVolumeGroup, groupVolumeGroups, requireAllPvs, VolumeGroup } from './scan';
import { LvMetadata, SnapshotSegment } from './vg-metadata';

/** `PV[,PV...]:VG/LV`: the PVs (image files or block devices) and the LV among them. */
export interface VolumeOperand {
  pvs: string[];
  vg: string;
  lv: string;
}

const LVM_NAME = '[A-Za-z0-9+_.][A-Za-z0-9+_.-]*';
const OPERAND = new RegExp(`^(.+):(${LVM_NAME})/(${LVM_NAME})$`);

/** The operand's parts, or undefined when `name` does not have its shape (an ordinary path). */
export function parseVolumeOperand(name: string): VolumeOperand | undefined {
  const m = OPERAND.exec(name);
  if (!m) return undefined;
  const pvs = m[1].split(',');
  if (pvs.some((p) => p.length === 0))
    throw new LvmError('bad-operand', `${JSON.stringify(name)}: an empty PV name in ${JSON.stringify(m[1])}`);
  if (new Set(pvs).size !== pvs.length) throw new LvmError('bad-operand', `${JSON.stringify(name)}: a PV is listed twice`);
  return { pvs, vg: m[2], lv: m[3] };
}

export interface OpenVolumeOptions {
  write: boolean;
  /** openSnapshotParts: map the origin LV writable (default: `write`). */
  writeOrigin?: boolean;
  /** Opens one PV (read-only unless `write`); the caller's resolver, so locks and fault plans apply. */
  openPv(path: string, write: boolean): BlockDevice;
}

export function operandName(o: VolumeOperand): string {
  return `${o.pvs.join(',')}:${o.vg}/${o.lv}`;
}

/** The operand's PVs, opened and read, and its VG; `close()` closes the PVs. */
export interface OpenedVolumeGroup {
  vg: VolumeGroup;
  pvs: PhysicalVolume[];
  close(): void;
}

/** The committed text of the VG's newest metadata copy (the one `vg.metadata` was read from). */
export function newestMetadataText(opened: OpenedVolumeGroup): string {
  const meta = opened.vg.metadata;
  for (const pv of opened.pvs) {
    for (const c of pv.copies) if (c.vg.uuid === meta.uuid && c.vg.seqno === meta.seqno) return c.text;
  }
  throw new LvmError('no-metadata', `no metadata copy of VG ${meta.name} at seqno ${meta.seqno}`);
}

/** Open every PV of the operand and read its metadata; a failure closes whatever was opened. */
export async function openVolumeGroup(operand: VolumeOperand, opts: OpenVolumeOptions): Promise<OpenedVolumeGroup> {
  const devices: BlockDevice[] = [];
  const close = () => {
    for (const d of devices) if (d.isOpen) d.close();
  };
  try {
    for (const p of operand.pvs) devices.push(opts.openPv(p, opts.write));
    const pvs: PhysicalVolume[] = [];
    for (const d of devices) pvs.push(await readPhysicalVolume(d));
    const vg = findVolumeGroup(groupVolumeGroups(pvs), operand.vg);
    requireAllPvs(vg);
    return { vg, pvs, close };
  } catch (e) {
    close();
    throw e;
  }
}

/**
 * Open the PVs of an operand, read their metadata and return the LV as a
 * device (what `/dev/VG/LV` shows). Closing it closes the PVs; a failure
 * closes whatever was opened.
 */
export async function openVolume(operand: VolumeOperand, opts: OpenVolumeOptions): Promise<BlockDevice> {
  const opened = await openVolumeGroup(operand, opts);
  try {
    return await openLogicalVolume(opened.vg, operand.lv, { write: opts.write, name: operandName(operand), onClose: opened.close });
  } catch (e) {
    opened.close();
    throw e;
  }
}

/** A snapshot LV's two parts, each mapped from its segments, over PVs opened once. */
export interface SnapshotParts extends OpenedVolumeGroup {
  segment: SnapshotSegment;
  /** The origin LV's own bytes (no copy-on-write into its snapshots). */
  origin: BlockDevice;
  /** The COW LV. */
  cow: BlockDevice;
  /** The origin's other snapshots (their COW LV names). */
  otherSnapshots: string[];
}

/**
 * For the snapshot commands: `PV...:VG/SNAP` names a snapshot (its COW LV,
 * or lvm2's internal `snapshotN`); find its origin LV and COW LV in the
 * snapshot segment and map both. Any other LV is refused.
 */
export async function openSnapshotParts(operand: VolumeOperand, opts: OpenVolumeOptions): Promise<SnapshotParts> {
  const opened = await openVolumeGroup(operand, opts);
  try {
    const meta = opened.vg.metadata;
    const lv = meta.lvs.find((l) => l.name === operand.lv);
    if (!lv) throw new LvmError('unknown-lv', `VG ${meta.name} has no LV ${JSON.stringify(operand.lv)}`);
    const segment = snapshotSegmentOf(meta, lv.name);
    if (!segment) {
      throw new LvmError(
        'not-a-snapshot',
        `${meta.name}/${lv.name} is not a snapshot (${lvKind(meta.lvs, lv)}); name a snapshot LV, or give ORIGIN and COW`,
      );
    }
    const byName = (n: string) => meta.lvs.find((l) => l.name === n) as LvMetadata;
    const name = operandName(operand);
    return {
      ...opened,
      segment,
      origin: mapLvDevice(opened.vg, byName(segment.origin), {
        write: opts.write && opts.writeOrigin !== false,
        name: `${name} origin ${segment.origin}`,
      }),
      cow: mapLvDevice(opened.vg, byName(segment.cow), { write: opts.write, name: `${name} COW ${segment.cow}` }),
      otherSnapshots: originSnapshots(meta, segment.origin)
        .filter((s) => s !== segment)
        .map((s) => s.cow),
    };
  } catch (e) {
    opened.close();
    throw e;
  }
}

function lvKind(all: LvMetadata[], lv: LvMetadata): string {
  const types = [...new Set(lv.segments.map((s) => (s.type === 'other' ? s.segtype : s.type === 'striped' ? 'linear/striped' : s.type)))];
  const isOrigin = all.some((l) => l.segments.some((s) => s.type === 'snapshot' && s.origin === lv.name));
  return `${isOrigin ? 'the origin of a snapshot, ' : ''}a ${types.join('+')} LV`;
}

/**
 * A COW operand: `PV...:VG/SNAP` naming a snapshot opens its COW LV (the
 * exception store the snapshot commands read); any other LV opens as
 * `openVolume` opens it.
 */
export async function openCowVolume(operand: VolumeOperand, opts: OpenVolumeOptions): Promise<BlockDevice> {
  const opened = await openVolumeGroup(operand, opts);
  try {
    const meta = opened.vg.metadata;
    const segment = snapshotSegmentOf(meta, operand.lv);
    const name = operandName(operand);
    if (!segment) return await openLogicalVolume(opened.vg, operand.lv, { write: opts.write, name, onClose: opened.close });
    const cow = meta.lvs.find((l) => l.name === segment.cow) as LvMetadata;
    return mapLvDevice(opened.vg, cow, { write: opts.write, name: `${name} COW ${segment.cow}`, onClose: opened.close });
  } catch (e) {
    opened.close();
    throw e;
  }
}
