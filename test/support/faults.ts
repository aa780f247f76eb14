import { BlockDevice, DeviceResolver, FaultInjector, FaultPlan, withFaults } from '@dmtool/devices';
import { FileDevice, fileResolver, OpenOptions } from '@dmtool/native';

/**
 * In-process fault injection for tests: devices opened here are wrapped in
 * the fault decorators and follow whatever plan `setFaultPlan` installs,
 * even after they were opened. Child processes get theirs through the
 * CLI's DMTOOL_FAULTS (see `dmtool(args, { faults })` in ./cli).
 */
export const faults = new FaultInjector();

export function setFaultPlan(plan: FaultPlan | undefined): void {
  faults.setPlan(plan);
}

/** A file or block device behind the fault decorators. */
export function openFaulty(path: string, opts: OpenOptions = {}): BlockDevice {
  return withFaults(FileDevice.open(path, opts), faults);
}

/** A resolver whose devices are behind the fault decorators (for openMirror). */
export const faultyResolver: DeviceResolver = {
  identify: (name, role) => fileResolver.identify(name, role),
  open: (name, opts) => openFaulty(name, opts),
};
