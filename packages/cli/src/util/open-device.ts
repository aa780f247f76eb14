import type { BlockDevice, DeviceResolver, FaultInjector } from '@dmtool/devices';
import type { VolumeOperand } from '@dmtool/lvm';
import type { OpenOptions } from '@dmtool/native';
import type { NbdDeviceOptions } from '@dmtool/nbd';
import * as fs from 'fs';
import { devicesPackage, looksLikeNbdUri, lvmPackage, nativePackage, nbdPackage, parseVolumeOperand } from './lazy-packages';

let faults: FaultInjector | undefined;
let nbdOptions: Omit<NbdDeviceOptions, 'write'> = {};

/**
 * Arm a fault plan (the DMTOOL_FAULTS JSON) for every device this process
 * opens from now on. Only the CLI entry point calls this: the libraries
 * never read the environment.
 */
export function armFaults(planJson: string | undefined): void {
  faults = planJson ? devicesPackage().FaultInjector.parse(planJson) : undefined;
  faults?.armCrashPoints();
}

const NBD_ENV = {
  DMTOOL_NBD_TIMEOUT_MS: 'requestTimeoutMs',
  DMTOOL_NBD_RECONNECT_ATTEMPTS: 'reconnectAttempts',
  DMTOOL_NBD_RECONNECT_DELAY_MS: 'reconnectDelayMs',
  DMTOOL_NBD_CONNECTIONS: 'connections',
} as const;

/** Connections per NBD device when the server allows several (multi-conn) and DMTOOL_NBD_CONNECTIONS is unset. */
export const DEFAULT_NBD_CONNECTIONS = 4;
const MAX_NBD_CONNECTIONS = 16;

/**
 * The NBD client's request timeout, reconnection policy and connections
 * per device from the environment (whole numbers; unset keeps the library's defaults). Only the
 * CLI entry point calls this.
 */
export function configureNbd(env: NodeJS.ProcessEnv): void {
  const opts: Record<string, number> = { connections: DEFAULT_NBD_CONNECTIONS };
  for (const [name, key] of Object.entries(NBD_ENV)) {
    const v = env[name];
    if (v === undefined || v === '') continue;
    if (!/^\d{1,9}$/.test(v) || (key !== 'reconnectAttempts' && Number(v) === 0)) {
      throw new Error(`${name} must be a whole number${key === 'reconnectAttempts' ? '' : ' above 0'} (got ${JSON.stringify(v)})`);
    }
    if (key === 'connections' && Number(v) > MAX_NBD_CONNECTIONS)
      throw new Error(`${name} must be at most ${MAX_NBD_CONNECTIONS} (got ${v})`);
    opts[key] = Number(v);
  }
  nbdOptions = opts;
}

/**
 * The one place the CLI turns names into devices: NBD URIs become
 * NbdDevices, LVM volumes `PV[,PV...]:VG/LV` (a name that is not an existing
 * path and has that shape) devices over their PVs, anything else a file or
 * block device.
 */
export const resolver: DeviceResolver = {
  identify: (name, role) => {
    if (looksLikeNbdUri(name)) return nbdPackage().nbdIdentity(nbdPackage().parseNbdUri(name, process.cwd()));
    const { fileResolver } = nativePackage();
    const volume = volumeOperand(name);
    if (!volume) return fileResolver.identify(name, role);
    return `lvm:${volume.pvs.map((pv) => fileResolver.identify(pv, role)).join(',')}:${volume.vg}/${volume.lv}`;
  },
  open: (name, opts) => openDevice(name, opts),
};

export async function openDevice(name: string, opts: OpenOptions & { write: boolean }): Promise<BlockDevice> {
  if (looksLikeNbdUri(name)) {
    const device = await nbdPackage().NbdDevice.open(name, { ...nbdOptions, write: opts.write });
    return withArmedFaults(device);
  }
  const volume = volumeOperand(name);
  if (volume) return lvmPackage().openVolume(volume, { write: opts.write, openPv: (pv, write) => openFile(pv, { ...opts, write }) });
  return openFile(name, opts);
}

/** A COW operand: a snapshot LV `PV...:VG/SNAP` opens its COW LV; anything else as openDevice. */
export async function openCowDevice(name: string, opts: OpenOptions & { write: boolean }): Promise<BlockDevice> {
  const volume = volumeOperand(name);
  if (volume) return lvmPackage().openCowVolume(volume, { write: opts.write, openPv: openPvFile(opts) });
  return openDevice(name, opts);
}

function openFile(name: string, opts: OpenOptions & { write: boolean }): BlockDevice {
  return withArmedFaults(nativePackage().FileDevice.open(name, opts));
}

function withArmedFaults(device: BlockDevice): BlockDevice {
  return faults ? devicesPackage().withFaults(device, faults) : device;
}

/** The PV opener for volume operands: the same files, locks and fault plans as any device. */
export function openPvFile(opts: OpenOptions): (pv: string, write: boolean) => BlockDevice {
  return (pv, write) => openFile(pv, { ...opts, write });
}

export function volumeOperand(name: string): VolumeOperand | undefined {
  return fs.existsSync(name) ? undefined : parseVolumeOperand(name);
}
