import { Bitmap } from './bitmap';
import { MirrorError } from './errors';
import { checkRegionSize } from './region-size';

/** The sync argument of a log: none (default), `sync` or `nosync`. */
export type SyncMode = 'default' | 'sync' | 'nosync';

/** Log device health, as the disk log's status shows it. */
export type LogHealth = 'A' | 'D' | 'F';

/** Called before a flush persists a cleaned bit: flush every leg; reject on failure. */
export type FlushCallback = () => Promise<void>;

/**
 * The dm-log interface (include/linux/dm-dirty-log.h), one region per bit.
 * clean bits: what the disk log persists (1 = clean). sync bits: in memory,
 * copied from the clean bits at resume. recovering bits: in memory.
 */
export interface DirtyLog {
  readonly type: 'core' | 'disk';
  readonly regionSize: number;
  readonly regionCount: number;
  readonly syncMode: SyncMode;
  readonly health: LogHealth;
  /** Load (or initialise) the bitmaps; the disk log reads and rewrites its buffer. */
  resume(): Promise<void>;
  isClean(region: number): boolean;
  inSync(region: number): boolean;
  /** A write is about to dirty the region: clear its clean bit. */
  markRegion(region: number): void;
  /** Writes to the region are done: set its clean bit (ignored after a flush failure). */
  clearRegion(region: number): void;
  /** Next region to recover (sync bit 0, not recovering), scanning from a cursor reset only at resume. */
  getResyncWork(): number | undefined;
  setRegionSync(region: number, inSync: boolean): void;
  getSyncCount(): number;
  /** Persist changes, ordered as the kernel's disk_flush. */
  flush(): Promise<void>;
  /** Make everything written so far durable (fdatasync the log device; core: nothing). */
  sync(): Promise<void>;
  setFlushCallback(fn: FlushCallback | undefined): void;
  /** A leg flush failed once: clean bits are no longer set (sticky). */
  readonly legFlushFailed: boolean;
  /** Regions whose clean bit is 0. */
  dirtyRegions(): number[];
  /** The log's part of the INFO status line, e.g. `1 core` or `3 disk /dev/x A`. */
  statusInfo(): string;
  /** The log's part of the TABLE line, e.g. `core 1 1024 ` (trailing space, as the kernel emits). */
  statusTable(): string;
  close(): void;
}

export function checkRegionGeometry(regionSize: number, regionCount: number): void {
  checkRegionSize(regionSize);
  if (!Number.isSafeInteger(regionCount) || regionCount < 1 || regionCount > 0xffffffff) {
    throw new MirrorError('EINVAL', 'bad-region-count', `invalid region count ${regionCount}`);
  }
}

/** The bitmap logic shared by the core and disk logs (dm-log.c's core_* functions). */
export abstract class MemoryLog implements DirtyLog {
  abstract readonly type: 'core' | 'disk';
  readonly regionSize: number;
  readonly regionCount: number;
  readonly syncMode: SyncMode;
  protected clean: Bitmap;
  protected syncBits: Bitmap;
  protected recovering: Bitmap;
  protected syncCount = 0;
  protected syncSearch = 0;
  protected touchedDirtied = false;
  protected touchedCleaned = false;
  protected flushFailed = false;
  protected flushCallback?: FlushCallback;
  /** Regions whose clean bit was set since the last flush took its snapshot: what the next flush records clean. */
  protected cleanedSinceFlush = new Set<number>();

  constructor(regionSize: number, regionCount: number, syncMode: SyncMode) {
    checkRegionGeometry(regionSize, regionCount);
    this.regionSize = regionSize;
    this.regionCount = regionCount;
    this.syncMode = syncMode;
    this.clean = new Bitmap(regionCount);
    this.syncBits = new Bitmap(regionCount);
    this.recovering = new Bitmap(regionCount);
  }

  get health(): LogHealth {
    return 'A';
  }

  get legFlushFailed(): boolean {
    return this.flushFailed;
  }

  abstract resume(): Promise<void>;
  abstract flush(): Promise<void>;
  abstract statusInfo(): string;
  abstract statusTable(): string;

  setFlushCallback(fn: FlushCallback | undefined): void {
    this.flushCallback = fn;
  }

  isClean(region: number): boolean {
    return this.clean.get(region);
  }

  inSync(region: number): boolean {
    return this.syncBits.get(region);
  }

  markRegion(region: number): void {
    if (this.clean.clear(region)) this.touchedDirtied = true;
  }

  clearRegion(region: number): void {
    if (this.flushFailed) return;
    if (this.clean.set(region)) {
      this.touchedCleaned = true;
      this.cleanedSinceFlush.add(region);
    }
  }

  getResyncWork(): number | undefined {
    while (this.syncSearch < this.regionCount) {
      const r = this.syncBits.nextZero(this.syncSearch);
      this.syncSearch = r + 1;
      if (r >= this.regionCount) return undefined;
      if (this.recovering.get(r)) continue;
      this.recovering.set(r);
      return r;
    }
    return undefined;
  }

  setRegionSync(region: number, inSync: boolean): void {
    this.recovering.clear(region);
    if (inSync) {
      if (this.syncBits.set(region)) this.syncCount++;
    } else if (this.syncBits.clear(region)) {
      this.syncCount--;
    }
  }

  getSyncCount(): number {
    return this.syncCount;
  }

  dirtyRegions(): number[] {
    return this.clean.zeros();
  }

  /** After the bitmaps are loaded: sync := clean, cursor to 0. */
  protected startFromClean(): void {
    this.syncBits.copyFrom(this.clean);
    this.syncCount = this.syncBits.count();
    this.recovering.fill(false);
    this.syncSearch = 0;
  }

  /**
   * A leg flush failed: the regions this flush was to record clean are
   * dirty and out of sync again (their data may not be durable on every
   * leg), and no region is recorded clean from now on. Regions recorded
   * clean by earlier flushes keep their bits: their legs were flushed then.
   */
  protected unclean(regions: Iterable<number>): void {
    this.flushFailed = true;
    for (const r of regions) {
      this.clean.clear(r);
      this.setRegionSync(r, false);
    }
  }

  protected syncArg(): string {
    return this.syncMode === 'default' ? '' : `${this.syncMode} `;
  }

  protected argCount(base: number): number {
    return this.syncMode === 'default' ? base : base + 1;
  }

  async sync(): Promise<void> {}

  close(): void {}
}

/**
 * The core (memory) log: every clean bit starts 1 and every sync bit 0 (1
 * with `nosync`), so each activation resyncs everything unless `nosync`.
 */
export class CoreLog extends MemoryLog {
  readonly type = 'core' as const;

  constructor(regionSize: number, regionCount: number, syncMode: SyncMode = 'default') {
    super(regionSize, regionCount, syncMode);
    this.clean.fill(true);
    this.syncBits.fill(syncMode === 'nosync');
    this.syncCount = this.syncBits.count();
  }

  async resume(): Promise<void> {
    this.syncSearch = 0;
  }

  async flush(): Promise<void> {
    this.touchedCleaned = false;
    this.touchedDirtied = false;
  }

  statusInfo(): string {
    return '1 core';
  }

  statusTable(): string {
    return `core ${this.argCount(1)} ${this.regionSize} ${this.syncArg()}`;
  }
}
