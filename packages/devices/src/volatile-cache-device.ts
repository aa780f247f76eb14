import { BlockDevice, checkIo, checkRange, WriteOptions } from './block-device';
import { DeviceDecorator } from './device-decorator';

export type CacheFlushOrder = 'fifo' | 'reverse';

interface CachedWrite {
  byteOffset: number;
  data: Buffer;
}

export interface VolatileCacheOptions {
  /** The order a flush applies the cached writes in ('reverse' is the harsh one). */
  order?: CacheFlushOrder;
  /** Called after each cached write a flush applied (a fault plan counts these to crash mid-flush). */
  onApplied?: () => void;
}

/**
 * A decorator modelling a disk's volatile write cache, for power-cut tests:
 * writes (and zeroes) stay in memory until the device is flushed, reads see
 * them, and a SIGKILL loses them, as a power cut loses a disk cache (the
 * page cache survives `kill -9`; this does not). A flush applies the cached
 * writes in the chosen order, so a crash during a flush can persist a later
 * write without an earlier one. A FUA write goes through to the device at
 * once (as a disk writes a FUA command to the medium) and replaces those
 * bytes in the cached writes it overlaps, so neither a read nor a later
 * flush brings older bytes back. It offers no native-copy capability: its
 * writes must not reach the device before a flush.
 */
export class VolatileCacheDevice extends DeviceDecorator {
  private cached: CachedWrite[] = [];
  private readonly order: CacheFlushOrder;

  constructor(
    inner: BlockDevice,
    private readonly opts: VolatileCacheOptions = {},
  ) {
    super(inner);
    this.order = opts.order ?? 'fifo';
  }

  /** Writes not yet applied by a flush. */
  get cachedWrites(): number {
    return this.cached.length;
  }

  override async read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    checkIo(this, 'read', buf, bufOffset, bytes, byteOffset);
    await this.inner.read(buf, bufOffset, bytes, byteOffset);
    const end = byteOffset + bytes;
    for (const w of this.cached) {
      const from = Math.max(byteOffset, w.byteOffset);
      const to = Math.min(end, w.byteOffset + w.data.length);
      if (from < to) w.data.copy(buf, bufOffset + (from - byteOffset), from - w.byteOffset, to - w.byteOffset);
    }
  }

  override async write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, opts?: WriteOptions): Promise<void> {
    checkIo(this, 'write', buf, bufOffset, bytes, byteOffset);
    const data = Buffer.from(buf.subarray(bufOffset, bufOffset + bytes));
    if (!opts?.fua) {
      this.cached.push({ byteOffset, data });
      return;
    }
    this.replaceCached(byteOffset, data);
    await this.inner.write(data, 0, bytes, byteOffset, opts);
  }

  override async zeroRange(byteOffset: number, bytes: number, opts?: WriteOptions): Promise<void> {
    checkRange(this, 'zero', byteOffset, bytes);
    if (!opts?.fua) {
      this.cached.push({ byteOffset, data: Buffer.alloc(bytes) });
      return;
    }
    this.replaceCached(byteOffset, Buffer.alloc(bytes));
    await this.inner.zeroRange(byteOffset, bytes, opts);
  }

  /** A FUA write's bytes overwrite the cached writes' copies of them, so a cached write applied later writes the new bytes. */
  private replaceCached(byteOffset: number, data: Buffer): void {
    const end = byteOffset + data.length;
    for (const w of this.cached) {
      const from = Math.max(byteOffset, w.byteOffset);
      const to = Math.min(end, w.byteOffset + w.data.length);
      if (from < to) data.copy(w.data, from - w.byteOffset, from - byteOffset, to - byteOffset);
    }
  }

  override async flush(): Promise<void> {
    checkRange(this, 'read', 0, 1);
    // Each write leaves the cache only once applied: reads meanwhile still
    // see it, and a failed write keeps it (and every later one) cached.
    const pending = this.order === 'reverse' ? [...this.cached].reverse() : [...this.cached];
    for (const w of pending) {
      await this.inner.write(w.data, 0, w.data.length, w.byteOffset);
      this.cached.splice(this.cached.indexOf(w), 1);
      this.opts.onApplied?.();
    }
    await this.inner.flush();
  }

  /**
   * A process that ends normally leaves its writes to the OS, which writes
   * them back: the cached writes are applied in order, then the device is
   * closed. Writing back is asynchronous; the pending I/O keeps the process
   * alive until it is done.
   */
  override close(): void {
    const pending = this.take('fifo');
    if (pending.length === 0) {
      this.inner.close();
      return;
    }
    void (async () => {
      try {
        for (const w of pending) await this.inner.write(w.data, 0, w.data.length, w.byteOffset);
      } finally {
        this.inner.close();
      }
    })().catch((e: unknown) => {
      process.stderr.write(`write-back of cached writes to ${this.path} failed: ${e instanceof Error ? e.message : String(e)}\n`);
      process.exitCode = 1;
    });
  }

  /** None: cached writes must not reach the device before a flush. */
  override nativeEndpoint(): undefined {
    return undefined;
  }

  /** None: a hole punched at once would overtake the cached writes it should follow. */
  override sparseFile(): undefined {
    return undefined;
  }

  /** None: the device underneath does not hold the cached writes yet. */
  override dataMap(): undefined {
    return undefined;
  }

  private take(order: CacheFlushOrder): CachedWrite[] {
    const out = this.cached;
    this.cached = [];
    return order === 'reverse' ? out.reverse() : out;
  }
}
