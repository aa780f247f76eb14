import { BlockDevice } from '@dmtool/devices';
import { LvmError } from './errors';
import { openLogicalVolume } from './lv-device';
import { findVolumeGroup, scanVolumeGroups, scanVolumeGroupsSync } from './scan';
import { readDeviceSync } from './sync-read';

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
  /** Opens one PV (read-only unless `write`); the caller's resolver, so locks and fault plans apply. */
  openPv(path: string, write: boolean): BlockDevice;
}

/**
 * `openVolume` for callers that must open synchronously (a DeviceResolver):
 * the metadata is read with `readDeviceSync`.
 */
export function openVolumeSync(operand: VolumeOperand, opts: OpenVolumeOptions): BlockDevice {
  const pvs: BlockDevice[] = [];
  const closePvs = () => {
    for (const d of pvs) d.close();
  };
  try {
    for (const p of operand.pvs) pvs.push(opts.openPv(p, opts.write));
    const vg = findVolumeGroup(
      scanVolumeGroupsSync(pvs, (d) => (buf, at) => readDeviceSync(d, buf, at)),
      operand.vg,
    );
    return openLogicalVolume(vg, operand.lv, { write: opts.write, name: operandName(operand), onClose: closePvs });
  } catch (e) {
    closePvs();
    throw e;
  }
}

function operandName(o: VolumeOperand): string {
  return `${o.pvs.join(',')}:${o.vg}/${o.lv}`;
}

/**
 * Open the PVs of an operand, read their metadata and return the LV as a
 * device. Closing it closes the PVs; a failure closes whatever was opened.
 */
export async function openVolume(operand: VolumeOperand, opts: OpenVolumeOptions): Promise<BlockDevice> {
  const pvs: BlockDevice[] = [];
  const closePvs = () => {
    for (const d of pvs) d.close();
  };
  try {
    for (const p of operand.pvs) pvs.push(opts.openPv(p, opts.write));
    const vg = findVolumeGroup(await scanVolumeGroups(pvs), operand.vg);
    return openLogicalVolume(vg, operand.lv, {
      write: opts.write,
      name: operandName(operand),
      onClose: closePvs,
    });
  } catch (e) {
    closePvs();
    throw e;
  }
}
