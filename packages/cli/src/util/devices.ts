import { BlockDevice, OpenOptions } from '@dmtool/kcopyd';
import { openDevice, resolver } from './open-device';
import { CliError } from './errors';

export interface DeviceSpec {
  path: string;
  role: string;
  write: boolean;
}

/**
 * Open every device a command needs, or none: the same file or block device
 * given twice is refused, and a failure to open one closes the others.
 * Block devices are opened with O_EXCL, so a mounted or busy one is refused.
 */
export function openAll(specs: DeviceSpec[], opts: Omit<OpenOptions, 'write'> = {}): BlockDevice[] {
  const identities = specs.map((s) => resolver.identify(s.path));
  identities.forEach((id, i) => {
    const twin = identities.indexOf(id);
    if (twin < i) throw new CliError(`${specs[i].role} ${specs[i].path} is the same device as ${specs[twin].role} ${specs[twin].path}`);
  });
  const opened: BlockDevice[] = [];
  try {
    for (const spec of specs) opened.push(openDevice(spec.path, { ...opts, write: spec.write }));
    return opened;
  } catch (e) {
    closeAll(opened);
    throw e;
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

/** An AbortSignal fired by SIGINT/SIGTERM, so long work stops cleanly. */
export function interruptSignal(): { signal: AbortSignal; dispose(): void } {
  const ctl = new AbortController();
  const onSignal = () => ctl.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return {
    signal: ctl.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
