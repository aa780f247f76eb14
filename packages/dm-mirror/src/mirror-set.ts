import { BlockDevice, DeviceError, SECTOR_BYTES, WriteOptions } from '@dmtool/devices';
import { DirtyLog } from './dirty-log';
import { MirrorError, sectorRange } from './errors';
import { RegionHash, RegionState } from './region-hash';

/** Error kinds a leg records (dm-raid1.c): flush, write, sync (recovery), read. */
export type LegErrorKind = 'F' | 'D' | 'S' | 'R';
/** Health character of a leg in the status line. */
export type LegHealth = 'A' | LegErrorKind | 'U';

export interface LegSpec {
  device: BlockDevice;
  /** Start sector of the mirror on this device. */
  offsetSectors?: number;
  /** Name shown in status lines (default: the device path). */
  name?: string;
}

export class Leg {
  readonly device: BlockDevice;
  readonly offsetSectors: number;
  readonly name: string;
  errorCount = 0;
  readonly errorKinds = new Set<LegErrorKind>();
  readonly errors: Error[] = [];

  constructor(spec: LegSpec) {
    this.device = spec.device;
    this.offsetSectors = spec.offsetSectors ?? 0;
    this.name = spec.name ?? spec.device.path;
  }

  get failed(): boolean {
    return this.errorCount > 0;
  }

  /** A, or the first of F D S R that this leg has recorded (U: errors of no known kind). */
  get health(): LegHealth {
    if (this.errorCount === 0) return 'A';
    for (const k of ['F', 'D', 'S', 'R'] as const) if (this.errorKinds.has(k)) return k;
    return 'U';
  }
}

export interface MirrorSetOptions {
  legs: LegSpec[];
  log: DirtyLog;
  lengthSectors: number;
  handleErrors?: boolean;
  keepLog?: boolean;
}

export interface LegStatus {
  index: number;
  path: string;
  offsetSectors: number;
  health: LegHealth;
  errors: string[];
}

export interface MirrorStatus {
  lengthSectors: number;
  regionSize: number;
  regions: number;
  inSyncRegions: number;
  inSync: boolean;
  /** Regions whose log bit says dirty / out of sync. */
  dirtyRegions: number;
  defaultLeg: number;
  legs: LegStatus[];
  log: { type: 'core' | 'disk'; path?: string; health: string; syncMode: string };
  handleErrors: boolean;
  keepLog: boolean;
  /** `dmsetup status` line: `0 <len> mirror <INFO>`. */
  info: string;
  /** `dmsetup table` line: `0 <len> mirror <TABLE>`. */
  table: string;
}

export const MAX_LEGS = 9;

/**
 * A mirror set (dm-raid1.c) over 2..9 legs and a dirty log: writes go to
 * every leg of a region in sync, after the log recorded the region dirty;
 * reads come from the default leg; failures are recorded per leg.
 */
export class MirrorSet {
  readonly legs: Leg[];
  readonly log: DirtyLog;
  readonly rh: RegionHash;
  readonly lengthSectors: number;
  readonly handleErrors: boolean;
  readonly keepLog: boolean;
  private defaultIndex = 0;

  constructor(opts: MirrorSetOptions) {
    if (opts.legs.length < 2 || opts.legs.length > MAX_LEGS) {
      throw new MirrorError('EINVAL', 'leg-count', `a mirror needs 2..${MAX_LEGS} legs (got ${opts.legs.length})`);
    }
    if (opts.keepLog && !opts.handleErrors) throw new MirrorError('EINVAL', 'bad-option', 'keep_log requires handle_errors');
    this.legs = opts.legs.map((l) => new Leg(l));
    this.log = opts.log;
    this.lengthSectors = opts.lengthSectors;
    this.handleErrors = opts.handleErrors === true;
    this.keepLog = opts.keepLog === true;
    const regions = Math.ceil(opts.lengthSectors / opts.log.regionSize);
    if (regions !== opts.log.regionCount) {
      throw new MirrorError(
        'EINVAL',
        'region-count-mismatch',
        `log has ${opts.log.regionCount} regions, a mirror of ${opts.lengthSectors} sectors with region size ${opts.log.regionSize} has ${regions}`,
      );
    }
    if (opts.log.regionSize > opts.lengthSectors) {
      throw new MirrorError(
        'EINVAL',
        'bad-region-size',
        `region size ${opts.log.regionSize} is larger than the mirror (${opts.lengthSectors} sectors)`,
      );
    }
    for (const leg of this.legs) {
      if (leg.device.sizeSectors < leg.offsetSectors + opts.lengthSectors) {
        throw new MirrorError(
          'EINVAL',
          'leg-too-small',
          `leg ${leg.device.path} is too small: the mirror needs ${sectorRange(leg.offsetSectors, opts.lengthSectors)}, the device has ${leg.device.sizeSectors} sectors`,
          { path: leg.device.path, sector: leg.offsetSectors, sectors: opts.lengthSectors },
        );
      }
    }
    this.rh = new RegionHash(opts.log, opts.lengthSectors);
    this.log.setFlushCallback(() => this.flushLegs());
  }

  get regionSize(): number {
    return this.log.regionSize;
  }

  get regionCount(): number {
    return this.log.regionCount;
  }

  get defaultLeg(): number {
    return this.defaultIndex;
  }

  get inSync(): boolean {
    return this.log.getSyncCount() === this.regionCount;
  }

  /** Record an error on a leg; with handle_errors a failed default leg hands over when in sync. */
  failLeg(index: number, kind: LegErrorKind, error?: Error): void {
    const leg = this.legs[index];
    leg.errorCount++;
    leg.errorKinds.add(kind);
    if (error) leg.errors.push(error);
    if (index !== this.defaultIndex || !this.handleErrors) return;
    if (!this.inSync) return; // the default stays: reads may fail
    const next = this.legs.findIndex((l) => !l.failed);
    if (next >= 0) this.defaultIndex = next;
  }

  /**
   * The log's flush callback, before regions are recorded clean: an empty
   * flush on every leg that has not failed a flush (a leg that failed a
   * write or a copy is flushed too, as the kernel does: what it took may be
   * recorded clean). A leg whose flush fails is marked `F`. The callback
   * rejects while any leg has failed a flush (here or in a FLUSH through the
   * mirror), so the regions of this log flush stay dirty
   * (docs/mirror-log-format.md#flush-order).
   */
  async flushLegs(): Promise<void> {
    const failed = await this.flushLegsWhere((leg) => !leg.errorKinds.has('F'));
    const unflushable = this.legs.find((leg) => leg.errorKinds.has('F'));
    if (unflushable)
      throw failed[0] ?? unflushable.errors.at(-1) ?? new MirrorError('EIO', 'no-leg', `leg ${unflushable.name} failed a flush`);
  }

  /** Flush the legs `which` selects; a leg whose flush fails is marked `F`. Returns the errors. */
  private async flushLegsWhere(which: (leg: Leg) => boolean): Promise<Error[]> {
    const results = await Promise.all(
      this.legs.map((leg, i) =>
        !which(leg)
          ? Promise.resolve(undefined)
          : leg.device.flush().then(
              () => undefined,
              (e: Error) => {
                this.failLeg(i, 'F', e);
                return e;
              },
            ),
      ),
    );
    return results.filter((e): e is Error => e !== undefined);
  }

  /** Persist the log and clean regions whose writes have ended. */
  async settle(): Promise<void> {
    await this.rh.update();
  }

  private checkRange(sector: number, sectors: number, buf: Buffer): void {
    if (
      !Number.isSafeInteger(sector) ||
      !Number.isSafeInteger(sectors) ||
      sector < 0 ||
      sectors <= 0 ||
      sector + sectors > this.lengthSectors
    ) {
      throw new MirrorError(
        'ERANGE',
        'out-of-range',
        `${sectorRange(sector, sectors)} is outside the mirror (${this.lengthSectors} sectors)`,
        { sector, sectors },
      );
    }
    if (buf.length < sectors * SECTOR_BYTES) throw new RangeError(`buffer of ${buf.length} bytes is too small for ${sectors} sectors`);
  }

  private pieces(sector: number, sectors: number): { region: number; sector: number; sectors: number; bufOffset: number }[] {
    const out = [];
    for (let s = sector; s < sector + sectors;) {
      const region = this.rh.regionOf(s);
      const end = Math.min(sector + sectors, (region + 1) * this.regionSize);
      out.push({ region, sector: s, sectors: end - s, bufOffset: (s - sector) * SECTOR_BYTES });
      s = end;
    }
    return out;
  }

  /**
   * Write `sectors` sectors at `sector` (split at region boundaries): mark
   * the regions dirty and flush the log first, then write every leg of a
   * region in sync (the default leg only where out of sync). Regions are
   * cleaned on the next settle(). With `fua` every leg's write is FUA, as
   * dm-raid1 passes the flag on to each leg; the log needs nothing more, its
   * dirty marks being flushed before any leg is written.
   */
  async write(buf: Buffer, sector: number, sectors: number, opts?: WriteOptions): Promise<void> {
    this.checkRange(sector, sectors, buf);
    const pieces = this.pieces(sector, sectors);
    const states: RegionState[] = [];
    for (const p of pieces) states.push(await this.rh.beginWrite(p.region));
    let ended = false;
    try {
      await this.rh.update();
      const outcomes = await Promise.all(pieces.map((p, i) => this.writePiece(buf, p, states[i], opts)));
      ended = true;
      pieces.forEach((p, i) => this.rh.endWrite(p.region, outcomes[i].legFailed));
      const lost = outcomes.find((o) => o.noLegWritten);
      if (lost) throw lost.error;
    } finally {
      if (!ended) pieces.forEach((p) => this.rh.endWrite(p.region, true));
    }
  }

  private async writePiece(
    buf: Buffer,
    p: { region: number; sector: number; sectors: number; bufOffset: number },
    state: RegionState,
    opts: WriteOptions | undefined,
  ): Promise<{ legFailed: boolean; noLegWritten: boolean; error?: Error }> {
    const targets = state === 'NOSYNC' ? [this.defaultIndex] : this.legs.map((_, i) => i);
    const bytes = p.sectors * SECTOR_BYTES;
    const errors = await Promise.all(
      targets.map((i) => {
        const leg = this.legs[i];
        return leg.device.write(buf, p.bufOffset, bytes, (leg.offsetSectors + p.sector) * SECTOR_BYTES, opts).then(
          () => undefined,
          (e: Error) => {
            if (!(e instanceof DeviceError)) throw e;
            this.failLeg(i, 'D', e);
            return e;
          },
        );
      }),
    );
    const failedCount = errors.filter((e) => e).length;
    return { legFailed: failedCount > 0, noLegWritten: failedCount === targets.length, error: errors.find((e) => e) };
  }

  /**
   * Read from the default leg; a region in sync may be read from the next
   * error-free leg (counting down, wrapping) when the default has failed or
   * the read fails.
   */
  async read(buf: Buffer, sector: number, sectors: number): Promise<void> {
    this.checkRange(sector, sectors, buf);
    for (const p of this.pieces(sector, sectors)) {
      const inSync = this.log.inSync(p.region) && this.rh.state(p.region) !== 'NOSYNC';
      const order = this.readOrder(inSync);
      let lastError: Error | undefined;
      let done = false;
      for (const i of order) {
        const leg = this.legs[i];
        try {
          await leg.device.read(buf, p.bufOffset, p.sectors * SECTOR_BYTES, (leg.offsetSectors + p.sector) * SECTOR_BYTES);
          done = true;
          break;
        } catch (e) {
          if (!(e instanceof DeviceError)) throw e;
          this.failLeg(i, 'R', e);
          lastError = e;
        }
      }
      if (!done) {
        throw (
          lastError ??
          new MirrorError(
            'EIO',
            'no-leg',
            `no leg can serve ${sectorRange(p.sector, p.sectors)} (region ${p.region} is out of sync and the default leg has failed)`,
            {
              sector: p.sector,
              sectors: p.sectors,
            },
          )
        );
      }
    }
  }

  private readOrder(inSync: boolean): number[] {
    const d = this.defaultIndex;
    if (!inSync) return this.legs[d].failed && this.legs[d].errorKinds.has('D') ? [] : [d];
    const n = this.legs.length;
    const order: number[] = [];
    if (!this.legs[d].failed) order.push(d);
    for (let k = 1; k < n; k++) {
      const i = (d - k + n) % n;
      if (!this.legs[i].failed) order.push(i);
    }
    if (order.length === 0) order.push(d);
    return order;
  }

  /**
   * A FLUSH through the mirror: settle the log, flush every leg that has not
   * failed. As in the kernel without handle_errors, a leg failing the flush
   * is marked `F` and the flush succeeds while some leg has not failed.
   */
  async flush(): Promise<void> {
    await this.settle();
    const errors = await this.flushLegsWhere((leg) => !leg.failed);
    if (this.legs.every((l) => l.failed))
      throw errors[0] ?? this.legs[0].errors[0] ?? new MirrorError('EIO', 'no-leg', 'every leg has failed');
  }

  /** INFO status (without the `0 <len> mirror` prefix), as dm-raid1.c prints it. */
  statusInfo(): string {
    const names = this.legs.map((l) => l.name).join(' ');
    const chars = this.legs.map((l) => l.health).join('');
    return `${this.legs.length} ${names} ${this.log.getSyncCount()}/${this.regionCount} 1 ${chars} ${this.log.statusInfo()}`;
  }

  /** TABLE status (without the `0 <len> mirror` prefix). */
  statusTable(): string {
    let s = `${this.log.statusTable()}${this.legs.length}`;
    for (const l of this.legs) s += ` ${l.name} ${l.offsetSectors}`;
    const features = (this.handleErrors ? 1 : 0) + (this.keepLog ? 1 : 0);
    if (features > 0) s += ` ${features}${this.handleErrors ? ' handle_errors' : ''}${this.keepLog ? ' keep_log' : ''}`;
    return s;
  }

  status(): MirrorStatus {
    const log = this.log;
    return {
      lengthSectors: this.lengthSectors,
      regionSize: this.regionSize,
      regions: this.regionCount,
      inSyncRegions: log.getSyncCount(),
      inSync: this.inSync,
      dirtyRegions: log.dirtyRegions().length,
      defaultLeg: this.defaultIndex,
      legs: this.legs.map((l, index) => ({
        index,
        path: l.device.path,
        offsetSectors: l.offsetSectors,
        health: l.health,
        errors: l.errors.map((e) => e.message),
      })),
      log: {
        type: log.type,
        path: 'device' in log ? (log as unknown as { device: BlockDevice }).device.path : undefined,
        health: log.health,
        syncMode: log.syncMode,
      },
      handleErrors: this.handleErrors,
      keepLog: this.keepLog,
      info: `0 ${this.lengthSectors} mirror ${this.statusInfo()}`,
      table: `0 ${this.lengthSectors} mirror ${this.statusTable()}`,
    };
  }

  /** Some leg has recorded an error. */
  get degraded(): boolean {
    return this.legs.some((l) => l.failed);
  }

  close(): void {
    const seen = new Set<BlockDevice>();
    for (const d of [...this.legs.map((l) => l.device)]) {
      if (seen.has(d)) continue;
      seen.add(d);
      if (d.isOpen) d.close();
    }
    this.log.close();
  }
}
