import { BlockDevice, DeviceResolver, FaultInjector, withFaults } from '@dmtool/devices';
import { openVolumeSync, parseVolumeOperand, VolumeOperand } from '@dmtool/lvm';
import { fileResolver, OpenOptions } from '@dmtool/native';
import * as fs from 'fs';

let faults: FaultInjector | undefined;

/**
 * Arm a fault plan (the DMTOOL_FAULTS JSON) for every device this process
 * opens from now on. Only the CLI entry point calls this: the libraries
 * never read the environment.
 */
export function armFaults(planJson: string | undefined): void {
  faults = planJson ? FaultInjector.parse(planJson) : undefined;
  faults?.armCrashPoints();
}

/**
 * The one place the CLI turns names into devices: paths of files and block
 * devices, and LVM volumes `PV[,PV...]:VG/LV` (a name that is not an
 * existing path and has that shape).
 */
export const resolver: DeviceResolver = {
  identify: (name, role) => {
    const volume = volumeOperand(name);
    if (!volume) return fileResolver.identify(name, role);
    return `lvm:${volume.pvs.map((pv) => fileResolver.identify(pv, role)).join(',')}:${volume.vg}/${volume.lv}`;
  },
  open: (name, opts) => openDevice(name, opts),
};

export function openDevice(name: string, opts: OpenOptions & { write: boolean }): BlockDevice {
  const volume = volumeOperand(name);
  if (volume) return openVolumeSync(volume, { write: opts.write, openPv: (pv, write) => openFile(pv, { ...opts, write }) });
  return openFile(name, opts);
}

function openFile(name: string, opts: OpenOptions & { write: boolean }): BlockDevice {
  const device = fileResolver.open(name, opts);
  return faults ? withFaults(device, faults) : device;
}

function volumeOperand(name: string): VolumeOperand | undefined {
  return fs.existsSync(name) ? undefined : parseVolumeOperand(name);
}
