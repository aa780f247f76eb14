import { BlockDevice, DeviceResolver, FaultInjector, withFaults } from '@dmtool/devices';
import { fileResolver, OpenOptions } from '@dmtool/native';

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

/** The one place the CLI turns names into devices. */
export const resolver: DeviceResolver = {
  identify: (name, role) => fileResolver.identify(name, role),
  open: (name, opts) => openDevice(name, opts),
};

export function openDevice(name: string, opts: OpenOptions & { write: boolean }): BlockDevice {
  const device = fileResolver.open(name, opts);
  return faults ? withFaults(device, faults) : device;
}
