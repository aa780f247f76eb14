import { BlockDevice, DeviceError } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { MemoryLog, SyncMode, LogHealth } from './dirty-log';
import { MirrorError } from './errors';
import { decodeDiskLog, encodeDiskLog, logBufferBytes, readHeader, LOG_MAGIC } from './log-format';

export interface DiskLogOptions {
  regionSize: number;
  regionCount: number;
  syncMode?: SyncMode;
  /** Name shown in status lines (default: the device path). */
  name?: string;
  /** Ignore what is on the device and start a new log (as a sync argument does). */
  create?: boolean;
  /**
   * Refuse a log whose magic, version, nr_regions or length is wrong instead
   * of treating it as new or resizing it (default true). With false the
   * kernel's disk_resume rules apply: bad magic → new log; grown or shrunk
   * region count → new regions dirty (clean with `nosync`), surplus dropped.
   */
  strict?: boolean;
  /** Write the resumed buffer back (default true; false for read-only inspection). */
  persist?: boolean;
}

/**
 * The kernel's disk dirty log on a regular file or block device: the clean
 * bitmap is persisted in dm-log's on-disk format, the whole buffer written
 * on every flush, ordered as disk_flush orders it (docs/mirror-log-format.md#flush-order).
 */
export class DiskLog extends MemoryLog {
  readonly type = 'disk' as const;
  readonly device: BlockDevice;
  readonly name: string;
  readonly bufferBytes: number;
  private readonly buffer: Buffer;
  private unused?: Buffer;
  private readonly opts: DiskLogOptions;
  private deviceFailed = false;
  private deviceFlushFailed = false;
  /** Number of buffer writes and log flushes issued (for tests and stats). */
  writes = 0;
  flushes = 0;

  constructor(device: BlockDevice, opts: DiskLogOptions) {
    super(opts.regionSize, opts.regionCount, opts.syncMode ?? 'default');
    this.device = device;
    this.opts = opts;
    this.name = opts.name ?? device.path;
    this.bufferBytes = logBufferBytes(opts.regionCount, device.logicalBlockSize);
    if (device.sizeBytes < this.bufferBytes) {
      throw new MirrorError(
        'EINVAL',
        'log-too-small',
        `dirty log ${device.path} is too small: ${device.sizeBytes} bytes, ${opts.regionCount} regions need sectors 0..${this.bufferBytes / 512 - 1} (${this.bufferBytes} bytes)`,
        { path: device.path, sector: 0, sectors: this.bufferBytes / 512 },
      );
    }
    this.buffer = allocBuffer(this.bufferBytes);
  }

  /** Open a disk log and resume it (read, validate, write back unless persist is false). */
  static async open(device: BlockDevice, opts: DiskLogOptions): Promise<DiskLog> {
    const log = new DiskLog(device, opts);
    await log.resume();
    return log;
  }

  override get health(): LogHealth {
    return this.deviceFlushFailed ? 'F' : this.deviceFailed ? 'D' : 'A';
  }

  async resume(): Promise<void> {
    const strict = this.opts.strict !== false;
    const asNew = this.opts.create === true || this.syncMode !== 'default';
    let onDiskRegions = 0;
    if (!asNew) {
      const head = allocBuffer(512);
      await this.ioOrFail(() => this.device.read(head, 0, 512, 0));
      const h = readHeader(head);
      if (strict || (h.magic === LOG_MAGIC && (h.version === 1 || h.version === 2) && h.nrRegions > 0n && h.nrRegions <= 0xffffffffn)) {
        const diskRegions = Number(h.nrRegions);
        const readBytes = Math.min(
          this.device.sizeBytes,
          Math.max(
            this.bufferBytes,
            h.magic === LOG_MAGIC && diskRegions > 0 && diskRegions <= 0xffffffff
              ? logBufferBytes(diskRegions, this.device.logicalBlockSize)
              : 0,
          ),
        );
        const whole = allocBuffer(readBytes);
        if (readBytes > 0) await this.ioOrFail(() => this.device.read(whole, 0, readBytes, 0));
        const image = decodeDiskLog(whole, {
          path: this.device.path,
          expectRegions: strict ? this.regionCount : undefined,
          deviceBytes: this.device.sizeBytes,
          logicalBlockSize: this.device.logicalBlockSize,
        });
        onDiskRegions = image.nrRegions;
        this.unused = image.unused;
        this.clean.fill(false);
        for (let r = 0; r < Math.min(onDiskRegions, this.regionCount); r++) if (image.clean.get(r)) this.clean.set(r);
      }
    }
    if (asNew) this.clean.fill(false);
    // Regions the disk log did not cover (a new or grown log).
    this.clean.fillRange(onDiskRegions, this.regionCount, this.syncMode === 'nosync');
    this.clean.clearSurplus();
    this.startFromClean();
    this.touchedCleaned = false;
    this.touchedDirtied = false;
    if (this.opts.persist === false) return;
    this.encodeBuffer();
    await this.writeBuffer();
    await this.flushDevice();
  }

  private flushQueue: Promise<void> = Promise.resolve();

  /**
   * Persist the log (docs/mirror-log-format.md#flush-order). Flushes run one at a time. Each takes the
   * bitmap as it is when it starts: a region cleaned while the legs are
   * being flushed is left for the next flush (its data may not be covered),
   * and a region dirtied meanwhile keeps its flag, so the flush its writer
   * then awaits writes it before the writer's data reaches the legs.
   */
  flush(): Promise<void> {
    const run = this.flushQueue.then(() => this.flushOnce());
    this.flushQueue = run.catch(() => undefined);
    return run;
  }

  private async flushOnce(): Promise<void> {
    const cleaned = this.touchedCleaned;
    const dirtied = this.touchedDirtied;
    if (!cleaned && !dirtied) return;
    const cleanedNow = this.cleanedSinceFlush;
    this.cleanedSinceFlush = new Set();
    this.touchedCleaned = false;
    this.touchedDirtied = false;
    this.encodeBuffer();
    try {
      if (cleaned && this.flushCallback) {
        try {
          await this.flushCallback();
        } catch {
          // Some leg may not hold this flush's regions durably: they stay
          // dirty (docs/mirror-log-format.md#flush-order). The kernel clears
          // every bit here; regions recorded clean earlier were flushed on
          // every leg when they were recorded, so they keep their bits.
          this.unclean(cleanedNow);
          this.encodeBuffer();
        }
      }
      await this.writeBuffer();
      if (dirtied) await this.flushDevice();
    } catch (e) {
      this.touchedCleaned ||= cleaned;
      this.touchedDirtied ||= dirtied;
      for (const r of cleanedNow) if (this.clean.get(r)) this.cleanedSinceFlush.add(r);
      throw e;
    }
  }

  override async sync(): Promise<void> {
    await this.flushDevice();
  }

  statusInfo(): string {
    return `3 disk ${this.name} ${this.health}`;
  }

  statusTable(): string {
    return `disk ${this.argCount(2)} ${this.name} ${this.regionSize} ${this.syncArg()}`;
  }

  /** The buffer as it is (or would be) on disk. */
  encode(): Buffer {
    return encodeDiskLog(this.regionCount, this.clean, this.device.logicalBlockSize, this.unused);
  }

  override close(): void {
    this.device.close();
  }

  private encodeBuffer(): void {
    encodeDiskLog(this.regionCount, this.clean, this.device.logicalBlockSize, this.unused, this.buffer);
  }

  /** Write the buffer as last encoded. */
  private async writeBuffer(): Promise<void> {
    try {
      await this.device.write(this.buffer, 0, this.bufferBytes, 0);
      this.writes++;
    } catch (e) {
      this.deviceFailed = true;
      throw e;
    }
  }

  private async flushDevice(): Promise<void> {
    try {
      await this.device.flush();
      this.flushes++;
    } catch (e) {
      this.deviceFailed = true;
      this.deviceFlushFailed = true;
      throw e;
    }
  }

  private async ioOrFail(io: () => Promise<void>): Promise<void> {
    try {
      await io();
    } catch (e) {
      if (e instanceof DeviceError) this.deviceFailed = true;
      throw e;
    }
  }
}
