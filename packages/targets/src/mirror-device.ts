import { MirrorSet, resync, resyncClient, ResyncResult } from '@dmtool/dm-mirror';
import { DataMap, dataMapOf, SECTOR_BYTES, WriteOptions } from '@dmtool/devices';
import { shiftedDataMap } from './data-maps';
import { SectorDevice } from './sector-device';
import { TargetDeviceOptions } from './snapshot-devices';

export interface MirrorDeviceOptions extends TargetDeviceOptions {
  /**
   * How long a region stays dirty in the log after its last write ended
   * before it is recorded clean (legs flushed, then the log written), in
   * milliseconds. Writes within this time reuse the dirty mark, as the
   * kernel's mirror worker batches them (default 100).
   */
  cleanDelayMs?: number;
  /** Copy out-of-sync regions in the background while serving (default true when writable). */
  resync?: boolean;
  /** Regions the background resync copies at once (default 1, as the kernel). */
  resyncParallel?: number;
  /** Average background resync rate cap in bytes per second (default none; changeable with setResyncRate). */
  resyncRateBytesPerSecond?: number;
}

/**
 * dm-mirror's `mirror` target as a device over a MirrorSet: a write marks
 * its regions dirty in the log (and the log is durable) before it reaches
 * the legs; regions are recorded clean once their writes ended and the
 * legs were flushed. Reads come from an in-sync leg. A leg that fails a
 * write is marked with the kernel's status letter and its regions stay out
 * of sync. Out-of-sync regions are copied in the background.
 */
export class MirrorDevice extends SectorDevice {
  readonly path: string;
  readonly identity: string;
  readonly writable: boolean;
  private readonly cleanDelayMs: number;
  private cleanTimer?: NodeJS.Timeout;
  private settling: Promise<void> = Promise.resolve();
  private readonly resyncAbort = new AbortController();
  private resyncRun?: Promise<ResyncResult | undefined>;
  private resyncCopier?: ReturnType<typeof resyncClient>;
  /** The background resync's outcome once it ended (undefined while it runs or if none ran). */
  resyncResult?: ResyncResult;
  /** The first error the background work met (recording regions clean, resync). */
  backgroundError?: unknown;

  constructor(
    readonly mirror: MirrorSet,
    opts: MirrorDeviceOptions = {},
  ) {
    super();
    const legs = mirror.legs;
    this.path = opts.name ?? `mirror:${legs[0].device.path}`;
    this.identity = `mirror:${legs.map((l) => `${l.device.identity}+${l.offsetSectors}`).join(',')}`;
    this.writable = opts.readOnly !== true && legs.every((l) => l.device.writable);
    this.cleanDelayMs = opts.cleanDelayMs ?? 100;
    if (this.writable && opts.resync !== false && !mirror.inSync) {
      const parallel = opts.resyncParallel ?? 1;
      const copier = resyncClient(mirror, { parallel, rateBytesPerSecond: opts.resyncRateBytesPerSecond });
      this.resyncCopier = copier;
      this.resyncRun = resync(mirror, { parallel, client: copier, signal: this.resyncAbort.signal })
        .then(
          (r) => (this.resyncResult = r),
          (e: unknown) => {
            this.backgroundError ??= e;
            return undefined;
          },
        )
        .finally(() => copier.destroy());
    }
  }

  get sizeBytes(): number {
    return this.mirror.lengthSectors * SECTOR_BYTES;
  }

  /** The default leg's map: reads of regions out of sync come from it, and in-sync legs hold the same bytes. */
  dataMap(): DataMap | undefined {
    const leg = this.mirror.legs[this.mirror.defaultLeg];
    const map = dataMapOf(leg.device);
    return map && shiftedDataMap(map, leg.offsetSectors * SECTOR_BYTES);
  }

  /** Resolves when the background resync has ended (at once if none runs). */
  async resyncDone(): Promise<ResyncResult | undefined> {
    return this.resyncRun ? await this.resyncRun : undefined;
  }

  /** Change the background resync's rate cap while it runs (undefined: no cap); false when no resync runs. */
  setResyncRate(bytesPerSecond: number | undefined): boolean {
    if (!this.resyncCopier || this.resyncResult !== undefined) return false;
    this.resyncCopier.setRate(bytesPerSecond);
    return true;
  }

  protected readSectors(buf: Buffer, sector: number): Promise<void> {
    return this.mirror.read(buf, sector, buf.length / SECTOR_BYTES);
  }

  protected async writeSectors(buf: Buffer, sector: number, opts?: WriteOptions): Promise<void> {
    try {
      await this.mirror.write(buf, sector, buf.length / SECTOR_BYTES, opts);
    } finally {
      this.scheduleClean();
    }
  }

  private scheduleClean(): void {
    if (this.cleanTimer || this.closed) return;
    this.cleanTimer = setTimeout(() => {
      this.cleanTimer = undefined;
      this.settling = this.mirror.settle().catch((e: unknown) => {
        this.backgroundError ??= e;
      });
    }, this.cleanDelayMs);
  }

  /** A FLUSH: regions whose writes ended are recorded clean, every leg that has not failed and the log are flushed. */
  async flush(): Promise<void> {
    await this.mirror.flush();
    await this.mirror.log.sync();
  }

  statusLine(): string {
    return this.mirror.status().info;
  }

  tableLine(): string {
    return this.mirror.status().table;
  }

  /**
   * Stop the background resync (what it copied is recorded), record every
   * finished region clean, flush the legs and the log. The devices stay
   * open (their owner closes them).
   */
  async stop(): Promise<void> {
    this.closed = true;
    if (this.cleanTimer) clearTimeout(this.cleanTimer);
    this.cleanTimer = undefined;
    this.resyncAbort.abort();
    await this.resyncRun;
    await this.settling;
    if (this.mirror.legs.some((l) => l.device.writable)) {
      await this.mirror.flush();
      await this.mirror.log.sync();
    }
  }

  close(): void {
    this.closed = true;
    if (this.cleanTimer) clearTimeout(this.cleanTimer);
    this.cleanTimer = undefined;
    this.resyncAbort.abort();
  }
}
