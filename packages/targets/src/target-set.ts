import { BlockDevice, DeviceResolver } from '@dmtool/devices';
import { Origin, PersistentStore, probeHeader, Snapshot } from '@dmtool/dm-snapshot';
import { configFromTable, MirrorTable, openMirror, parseMirrorTable } from '@dmtool/dm-mirror';
import { BorrowedDevice } from './borrowed-device';
import { LinearDevice } from './linear-device';
import { MirrorDevice, MirrorDeviceOptions } from './mirror-device';
import { SnapshotDevice, SnapshotOriginDevice } from './snapshot-devices';
import { SnapshotMergeDevice } from './snapshot-merge-device';
import { linearArgs, parseTableLine, snapshotArgs, snapshotOriginArgs, SnapshotArgs, TableError } from './table-line';

/** One device to build: a name and a one-line table starting at sector 0. */
export interface TargetSpec {
  name: string;
  table: string;
  readOnly?: boolean;
}

export type TargetDevice = LinearDevice | SnapshotOriginDevice | SnapshotDevice | SnapshotMergeDevice | MirrorDevice;

export interface TargetSetOptions {
  /** Options for every mirror device (clean delay, background resync). */
  mirror?: MirrorDeviceOptions;
  /** Average merge rate cap of every snapshot-merge device, bytes per second (default none). */
  mergeRateBytesPerSecond?: number;
}

/** A parsed table line: what `TargetSet` builds for one device. */
export type TargetPlan =
  | { kind: 'linear'; spec: TargetSpec; lengthSectors: number; device: string; offsetSectors: number }
  | { kind: 'snapshot-origin'; spec: TargetSpec; lengthSectors: number; origin: string }
  | ({ kind: 'snapshot'; spec: TargetSpec; lengthSectors: number } & SnapshotArgs)
  | ({ kind: 'snapshot-merge'; spec: TargetSpec; lengthSectors: number } & SnapshotArgs)
  | { kind: 'mirror'; spec: TargetSpec; table: MirrorTable };

type Role = 'linear base' | 'origin' | 'merging origin' | 'COW' | 'mirror leg' | 'mirror log';
/** Roles several exports may give one device. */
const SHARABLE: ReadonlySet<Role> = new Set(['linear base', 'origin']);

interface Use {
  path: string;
  role: Role;
  spec: TargetSpec;
  write: boolean;
}

/** A table line refused before anything was opened; `exportName` names the device it belongs to. */
export class TargetSpecError extends TableError {
  constructor(
    readonly exportName: string,
    message: string,
  ) {
    super(message);
    this.name = 'TargetSpecError';
  }
}

function planOne(spec: TargetSpec): TargetPlan {
  const t = parseTableLine(spec.table);
  if (t.startSectors !== 0) throw new TableError('a device is one table line starting at sector 0');
  switch (t.target) {
    case 'linear':
      return { kind: 'linear', spec, lengthSectors: t.lengthSectors, ...linearArgs(t) };
    case 'snapshot-origin':
      return { kind: 'snapshot-origin', spec, lengthSectors: t.lengthSectors, ...snapshotOriginArgs(t) };
    case 'snapshot':
      return { kind: 'snapshot', spec, lengthSectors: t.lengthSectors, ...snapshotArgs(t) };
    case 'snapshot-merge': {
      const args = snapshotArgs(t);
      if (args.type !== 'P') throw new TableError('snapshot-merge takes a persistent COW (P)');
      return { kind: 'snapshot-merge', spec, lengthSectors: t.lengthSectors, ...args };
    }
    case 'mirror':
      try {
        return { kind: 'mirror', spec, table: parseMirrorTable(spec.table) };
      } catch (e) {
        throw new TableError(e instanceof Error ? e.message : String(e));
      }
    default:
      throw new TableError(`target ${t.target} cannot be served (linear, snapshot-origin, snapshot, snapshot-merge and mirror can)`);
  }
}

/** Parse every table line; one error naming the device for the first bad one. */
export function planTargets(specs: readonly TargetSpec[]): TargetPlan[] {
  const names = new Set<string>();
  return specs.map((spec) => {
    if (names.has(spec.name)) throw new TargetSpecError(spec.name, 'the name is given twice');
    names.add(spec.name);
    try {
      return planOne(spec);
    } catch (e) {
      throw new TargetSpecError(spec.name, e instanceof Error ? e.message : String(e));
    }
  });
}

/**
 * Devices built from table lines, as device-mapper builds them: every
 * underlying device is opened once (for writing if any device writes to
 * it) and shared, and every `snapshot-origin` and `snapshot` line naming
 * the same origin shares one Origin, so a write to the origin copies into
 * every snapshot of it.
 */
export class TargetSet {
  readonly devices = new Map<string, TargetDevice>();
  private readonly opened = new Map<string, BlockDevice>();
  /** The identities of the devices each named device was built on. */
  private readonly usedBy = new Map<string, Set<string>>();
  private readonly origins = new Map<string, Origin>();
  private stopping?: Promise<void>;
  private closing?: Promise<void>;

  private constructor() {}

  /**
   * Open and build every device. Nothing is written before every line was
   * parsed and every device opened, except what the kernel also writes
   * when a table is loaded: a fresh persistent COW gets its header, a
   * mirror's disk log is resumed.
   */
  static async open(specs: readonly TargetSpec[], resolver: DeviceResolver, opts: TargetSetOptions = {}): Promise<TargetSet> {
    const plans = planTargets(specs);
    const set = new TargetSet();
    try {
      await set.openShared(plans, resolver);
      for (const p of plans) set.devices.set(p.spec.name, await set.build(p, resolver, opts));
    } catch (e) {
      await set.close().catch(() => undefined);
      throw e;
    }
    return set;
  }

  private async openShared(plans: readonly TargetPlan[], resolver: DeviceResolver): Promise<void> {
    const uses: Use[] = [];
    const writableOrigins = new Set<string>();
    for (const p of plans) {
      if (p.kind === 'snapshot-origin' && p.spec.readOnly !== true)
        writableOrigins.add(resolver.identify(p.origin, `origin of ${p.spec.name}`));
    }
    for (const p of plans) {
      const write = p.spec.readOnly !== true;
      if (p.kind === 'linear') uses.push({ path: p.device, role: 'linear base', spec: p.spec, write });
      else if (p.kind === 'snapshot-origin') uses.push({ path: p.origin, role: 'origin', spec: p.spec, write });
      else if (p.kind === 'snapshot') {
        const originWritten = writableOrigins.has(resolver.identify(p.origin, `origin of ${p.spec.name}`));
        uses.push({ path: p.origin, role: 'origin', spec: p.spec, write: false });
        uses.push({ path: p.cow, role: 'COW', spec: p.spec, write: write || originWritten });
      } else if (p.kind === 'snapshot-merge') {
        // The merge writes both, whether or not clients may.
        uses.push({ path: p.origin, role: 'merging origin', spec: p.spec, write: true });
        uses.push({ path: p.cow, role: 'COW', spec: p.spec, write: true });
      } else {
        for (const l of p.table.legs) uses.push({ path: l.path, role: 'mirror leg', spec: p.spec, write });
        if (p.table.log.type === 'disk') uses.push({ path: p.table.log.path, role: 'mirror log', spec: p.spec, write });
      }
    }
    const byIdentity = new Map<string, Use & { write: boolean }>();
    for (const u of uses) {
      const id = resolver.identify(u.path, `${u.role} of ${u.spec.name}`);
      const used = this.usedBy.get(u.spec.name) ?? new Set<string>();
      this.usedBy.set(u.spec.name, used.add(id));
      const seen = byIdentity.get(id);
      if (!seen) {
        byIdentity.set(id, { ...u });
        continue;
      }
      const sameMirror = seen.spec === u.spec && seen.role.startsWith('mirror');
      if (!sameMirror && (seen.role !== u.role || !SHARABLE.has(u.role))) {
        throw new TargetSpecError(
          u.spec.name,
          `${u.path} is the ${u.role} of ${u.spec.name} and already the ${seen.role} of ${seen.spec.name}`,
        );
      }
      seen.write ||= u.write;
    }
    for (const [id, u] of byIdentity) {
      // Two names of one mirror's devices are refused by openMirror, with its own message.
      if (!this.opened.has(id)) this.opened.set(id, await resolver.open(u.path, { write: u.write }));
    }
  }

  /** The shared open of a device, as a handle whose close() leaves it open. */
  private borrow(resolver: DeviceResolver, path: string): BorrowedDevice {
    const d = this.opened.get(resolver.identify(path));
    if (!d) throw new Error(`${path} was not opened`);
    return new BorrowedDevice(d);
  }

  private async build(p: TargetPlan, resolver: DeviceResolver, opts: TargetSetOptions): Promise<TargetDevice> {
    const name = p.spec.name;
    const readOnly = p.spec.readOnly === true;
    const fail = (message: string) => new TargetSpecError(name, message);
    switch (p.kind) {
      case 'linear': {
        const base = this.borrow(resolver, p.device);
        try {
          return new LinearDevice(base, p.offsetSectors * 512, p.lengthSectors * 512, { name, readOnly });
        } catch (e) {
          throw fail(e instanceof Error ? e.message : String(e));
        }
      }
      case 'snapshot-origin': {
        const origin = this.originFor(resolver, p.origin);
        checkLength(p.lengthSectors, origin, fail);
        return new SnapshotOriginDevice(origin, { name, readOnly });
      }
      case 'snapshot': {
        const origin = this.originFor(resolver, p.origin);
        checkLength(p.lengthSectors, origin, fail);
        const cow = this.borrow(resolver, p.cow);
        let snap: Snapshot;
        if (p.type === 'N') snap = await Snapshot.create(origin, cow, { chunkSectors: p.chunkSectors, type: 'N' });
        else if ((await probeHeader(cow)).kind === 'fresh' && cow.writable) {
          // As the kernel does for a COW whose magic is 0: a new snapshot.
          snap = await Snapshot.create(origin, cow, { chunkSectors: p.chunkSectors, type: p.type });
        } else snap = await Snapshot.open(origin, cow, { chunkSectors: p.chunkSectors, overflow: p.type === 'PO' });
        return new SnapshotDevice(snap, { name, readOnly });
      }
      case 'snapshot-merge': {
        const origin = this.borrow(resolver, p.origin);
        if (p.lengthSectors !== origin.sizeSectors)
          throw fail(`length ${p.lengthSectors} must be the origin's size (${origin.path} has ${origin.sizeSectors} sectors)`);
        const store = await PersistentStore.open(this.borrow(resolver, p.cow), { originSectors: origin.sizeSectors, origin });
        if (store.chunkSectors !== p.chunkSectors)
          throw fail(`chunk size ${p.chunkSectors} differs from the COW header's (${store.chunkSectors} sectors)`);
        return new SnapshotMergeDevice(origin, store, { name, readOnly, rateBytesPerSecond: opts.mergeRateBytesPerSecond });
      }
      case 'mirror': {
        const shared: DeviceResolver = {
          identify: (n, role) => resolver.identify(n, role),
          open: (n) => this.borrow(resolver, n),
        };
        const mirror = await openMirror(configFromTable(p.table), shared, { writeLegs: !readOnly });
        return new MirrorDevice(mirror, { ...opts.mirror, name, readOnly });
      }
    }
  }

  private originFor(resolver: DeviceResolver, path: string): Origin {
    const id = resolver.identify(path);
    let o = this.origins.get(id);
    if (!o) {
      o = new Origin(this.borrow(resolver, path));
      this.origins.set(id, o);
    }
    return o;
  }

  /** `NAME: <dmsetup status line>` for every device. */
  statusLines(): string[] {
    return [...this.devices.keys()].map((name) => `${name}: ${this.statusLine(name)}`);
  }

  /** The `dmsetup status` line of one device (without its name). */
  statusLine(name: string): string {
    const d = this.device(name);
    return 'statusLine' in d ? d.statusLine() : `0 ${d.sizeSectors} linear `;
  }

  /** The `dmsetup table` line of one device, with paths where the kernel prints major:minor. */
  tableLine(name: string): string {
    const d = this.device(name);
    return 'tableLine' in d ? d.tableLine() : `0 ${d.sizeSectors} linear ${d.base.path} ${d.startBytes / 512}`;
  }

  private device(name: string): TargetDevice {
    const d = this.devices.get(name);
    if (!d) throw new RangeError(`no device named ${name}`);
    return d;
  }

  /**
   * Take one device out of the set, as `dmsetup remove` does: its
   * background work stops, it is flushed and closed, and so are the
   * devices underneath that no remaining device uses (their locks go with
   * them); shared ones stay open.
   */
  async remove(name: string): Promise<void> {
    const d = this.device(name);
    this.devices.delete(name);
    let failed: unknown;
    try {
      if (d instanceof MirrorDevice) await d.stop();
      else {
        if (d instanceof SnapshotMergeDevice) await d.stop();
        // Detached in the origin's turn: an origin write already copying into this snapshot finishes first,
        // and none after it does (as the kernel's snapshot_dtr waits for pending exceptions).
        if (d instanceof SnapshotDevice) await d.snapshot.origin.serialize(async () => d.close());
        if (d.writable) await d.flush();
      }
    } catch (e) {
      failed = e;
    } finally {
      d.close();
    }
    const failedLegs = d instanceof MirrorDevice ? d.mirror.legs.filter((l) => l.failed).map((l) => l.device.identity) : [];
    try {
      await this.releaseUnused(name, new Set(failedLegs));
    } catch (e) {
      failed ??= e;
    }
    if (failed !== undefined) throw failed;
  }

  /** Flush (but failed mirror legs) and close the devices only `name` used. */
  private async releaseUnused(name: string, failedLegs: ReadonlySet<string>): Promise<void> {
    const released = this.usedBy.get(name) ?? new Set<string>();
    this.usedBy.delete(name);
    for (const ids of this.usedBy.values()) for (const id of ids) released.delete(id);
    let failed: unknown;
    for (const id of released) {
      const origin = this.origins.get(id);
      this.origins.delete(id);
      const dev = this.opened.get(id);
      this.opened.delete(id);
      try {
        await origin?.close();
        if (dev?.isOpen && dev.writable && !failedLegs.has(dev.identity)) await dev.flush();
      } catch (e) {
        failed ??= e;
      } finally {
        if (dev?.isOpen) dev.close();
      }
    }
    if (failed !== undefined) throw failed;
  }

  /**
   * Stop background work (a mirror's resync) and record finished mirror
   * regions clean, so that status lines show what the devices hold when
   * serving ends. The devices stay open.
   */
  stop(): Promise<void> {
    this.stopping ??= this.stopNow();
    return this.stopping;
  }

  private async stopNow(): Promise<void> {
    let failed: unknown;
    for (const d of this.devices.values()) {
      if (d instanceof SnapshotMergeDevice) await d.stop();
      if (!(d instanceof MirrorDevice)) continue;
      try {
        await d.stop();
      } catch (e) {
        failed ??= e;
      }
      if (d.backgroundError !== undefined) failed ??= d.backgroundError;
    }
    if (failed !== undefined) throw failed;
  }

  /**
   * The identities of mirror legs marked failed. They are not flushed when
   * serving ends: the mirror records what they missed, and a leg whose
   * server is gone would only fail again.
   */
  failedLegIdentities(): string[] {
    const ids: string[] = [];
    for (const d of this.devices.values()) {
      if (d instanceof MirrorDevice) for (const l of d.mirror.legs) if (l.failed) ids.push(l.device.identity);
    }
    return ids;
  }

  /**
   * stop(), then flush every device opened for writing (but failed mirror legs) and close
   * everything. The first failure is thrown once everything was tried.
   */
  close(): Promise<void> {
    this.closing ??= this.closeNow();
    return this.closing;
  }

  private async closeNow(): Promise<void> {
    let failed: unknown;
    const attempt = async (work: () => unknown) => {
      try {
        await work();
      } catch (e) {
        failed ??= e;
      }
    };
    await attempt(() => this.stop());
    for (const d of this.devices.values()) await attempt(() => d.close());
    for (const o of this.origins.values()) await attempt(() => o.close());
    const failedLegs = new Set(this.failedLegIdentities());
    for (const d of this.opened.values()) if (d.writable && d.isOpen && !failedLegs.has(d.identity)) await attempt(() => d.flush());
    for (const d of this.opened.values()) await attempt(() => d.isOpen && d.close());
    if (failed !== undefined) throw failed;
  }
}

function checkLength(lengthSectors: number, origin: Origin, fail: (m: string) => Error): void {
  if (lengthSectors !== origin.sizeSectors) {
    throw fail(`length ${lengthSectors} must be the origin's size (${origin.device.path} has ${origin.sizeSectors} sectors)`);
  }
}
