import { ExportTable, NbdServer } from '@dmtool/nbd';
import { MirrorDevice, SnapshotMergeDevice, SuspendableDevice, TargetSet } from '@dmtool/targets';
import { parseBytes } from '../util/units';
import { ControlError, ControlRequest } from './protocol';

/** What a `rate` message takes: a rate such as 10M (bytes per second), or 0 for no cap. */
function rateOf(text: string | undefined): number | undefined {
  if (text === undefined) throw new ControlError('bad-input', 'rate takes a value: bytes per second (e.g. 10M), or 0 for no cap');
  let bytes: number;
  try {
    bytes = parseBytes(text);
  } catch (e) {
    throw new ControlError('bad-input', (e as Error).message);
  }
  if (bytes === 0) return undefined;
  if (bytes < 4096) throw new ControlError('bad-input', `rate must be 0 or at least 4096 bytes per second (got ${bytes})`);
  return bytes;
}

/**
 * The devices a `dmtool serve` runs, as its control socket sees them:
 * each export's device sits behind a SuspendableDevice, so that it can be
 * suspended as device-mapper suspends a mapped device.
 */
export class ServedDevices {
  constructor(
    private readonly targets: TargetSet,
    private readonly exports: ExportTable,
    private readonly gates: Map<string, SuspendableDevice>,
    private readonly server: () => NbdServer | undefined,
  ) {}

  /** Resume every suspended device: requests held there are answered before serving ends. */
  resumeAll(): void {
    for (const [name, g] of this.gates) {
      g.resume();
      const d = this.targets.devices.get(name);
      if (d instanceof SnapshotMergeDevice) d.resumeMerge();
    }
  }

  readonly handle = async (r: ControlRequest): Promise<string[]> => {
    switch (r.command) {
      case 'status':
        return this.names(r.device).map((n) => `${n}: ${this.targets.statusLine(n)}`);
      case 'table':
        return this.names(r.device).map((n) => `${n}: ${this.targets.tableLine(n)}`);
      case 'suspend': {
        const gate = this.gate(r.device);
        const d = this.targets.devices.get(r.device);
        await gate.suspend();
        // A merge stops after its batch under way while the device is suspended, as the kernel's.
        if (d instanceof SnapshotMergeDevice) await d.pauseMerge();
        return [`${r.device}: suspended`];
      }
      case 'resume': {
        const d = this.targets.devices.get(r.device);
        this.gate(r.device).resume();
        if (d instanceof SnapshotMergeDevice) d.resumeMerge();
        return [`${r.device}: resumed`];
      }
      case 'message':
        return [this.message(r.device, r.args)];
      case 'remove':
        return [await this.remove(r.device, r.force === true)];
    }
  };

  private names(device: string | undefined): string[] {
    if (device === undefined) return [...this.gates.keys()];
    this.gate(device);
    return [device];
  }

  private gate(device: string): SuspendableDevice {
    const g = this.gates.get(device);
    if (!g) throw new ControlError('bad-input', `no device named ${device}`);
    return g;
  }

  private message(device: string, args: string[]): string {
    this.gate(device);
    const d = this.targets.devices.get(device);
    const [verb, value, ...rest] = args;
    if (verb !== 'rate' || rest.length > 0)
      throw new ControlError('bad-input', `${device}: unknown message "${args.join(' ')}" (messages: rate BYTES_PER_SECOND)`);
    const rate = rateOf(value);
    if (d instanceof MirrorDevice) {
      if (!d.setResyncRate(rate)) throw new ControlError('bad-input', `${device}: no resync is running`);
    } else if (d instanceof SnapshotMergeDevice) {
      if (!d.setMergeRate(rate)) throw new ControlError('bad-input', `${device}: the merge has ended`);
    } else throw new ControlError('bad-input', `${device}: a rate applies to a mirror's resync or a snapshot-merge only`);
    return `${device}: rate ${rate === undefined ? 'unlimited' : `${rate} bytes/s`}`;
  }

  private async remove(device: string, force: boolean): Promise<string> {
    const g = this.gate(device);
    const server = this.server();
    const clients = server?.connectionsTo(device) ?? 0;
    if (clients > 0 && !force)
      throw new ControlError('device-refused', `${device}: ${clients} client(s) connected; give --force to disconnect them`);
    // Out of the export list first, so that no new client reaches it while the others are drained.
    this.exports.remove(device);
    this.gates.delete(device);
    g.resume();
    await server?.disconnectExport(device);
    await this.targets.remove(device);
    return `${device}: removed`;
  }
}
