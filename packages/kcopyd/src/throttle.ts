import { KcopydError } from './errors';

/**
 * The kernel's kcopyd throttle (dm_kcopyd_throttle): a duty-cycle limit on
 * the share of wall time with copy I/O outstanding, over a ~1 s decaying
 * window. Before each submission, if I/O time exceeds `percent` of the
 * window, back off 100 ms and look again, at most 10 times. One Throttle may
 * be shared by several clients, as the kernel shares one per module.
 */
export class Throttle {
  private percent: number;
  private active = 0;
  private ioPeriodMs = 0;
  private totalPeriodMs = 0;
  private lastMs: number;
  static readonly BACKOFF_MS = 100;
  static readonly MAX_BACKOFFS = 10;
  private static readonly WINDOW_MS = 1000;

  /** `clock` and `wait` are replaceable so the algorithm can be tested without real time. */
  constructor(
    percent = 100,
    private readonly clock: () => number = Date.now,
    private readonly wait: (ms: number, signal?: AbortSignal) => Promise<void> = sleep,
  ) {
    this.percent = checkPercent(percent);
    this.lastMs = clock();
  }

  get throttlePercent(): number {
    return this.percent;
  }

  set throttlePercent(p: number) {
    this.percent = checkPercent(p);
  }

  private account(): void {
    const now = this.clock();
    const elapsed = now - this.lastMs;
    this.lastMs = now;
    this.totalPeriodMs += elapsed;
    if (this.active > 0) this.ioPeriodMs += elapsed;
    if (this.totalPeriodMs >= Throttle.WINDOW_MS) {
      const shift = 32 - Math.clz32(Math.floor(this.totalPeriodMs / Throttle.WINDOW_MS));
      this.totalPeriodMs /= 2 ** shift;
      this.ioPeriodMs /= 2 ** shift;
    }
  }

  /** Wait until I/O may be submitted (or `signal` fires). */
  async beforeIo(signal?: AbortSignal): Promise<void> {
    if (this.percent >= 100) return;
    for (let i = 0; i < Throttle.MAX_BACKOFFS && !signal?.aborted; i++) {
      this.account();
      if (this.ioPeriodMs <= (this.percent / 100) * this.totalPeriodMs) break;
      await this.wait(Throttle.BACKOFF_MS, signal);
    }
  }

  ioStarted(): void {
    this.account();
    this.active++;
  }

  ioFinished(): void {
    this.account();
    this.active--;
  }
}

/**
 * Paces a client to an average of `bytesPerSecond` from its first byte: an
 * admission of n bytes waits until the bytes admitted so far, these
 * included, are due at that rate (no burst). Pacing is by whole pieces of
 * at least 4 KiB, so a slower rate is refused rather than kept only on
 * average over pauses of many seconds.
 */
export class RateLimiter {
  static readonly MIN_BYTES_PER_SECOND = 4096;
  private static readonly MIN_PIECE_SECTORS = 8;
  private rateBytesPerSecond: number;
  private startMs = 0;
  private bytesAdmitted = 0;
  private readonly waiting = new Set<AbortController>();

  constructor(bytesPerSecond: number) {
    this.rateBytesPerSecond = checkRate(bytesPerSecond);
  }

  get bytesPerSecond(): number {
    return this.rateBytesPerSecond;
  }

  /** A new rate, from now on: what was admitted before no longer counts. */
  set bytesPerSecond(bytesPerSecond: number) {
    this.rateBytesPerSecond = checkRate(bytesPerSecond);
    this.startMs = 0;
    this.bytesAdmitted = 0;
    // Pieces waiting at the old rate go now: their wait may be many seconds of a slow rate.
    for (const w of this.waiting) w.abort();
  }

  /**
   * The piece size to copy in: at most `maxSectors`, and at most one second
   * of the rate (in whole 4 KiB units), so writes land about once a second
   * or more often.
   */
  pieceSectors(maxSectors: number): number {
    const unit = RateLimiter.MIN_PIECE_SECTORS;
    const perSecond = Math.floor(this.bytesPerSecond / 512 / unit) * unit;
    return Math.min(maxSectors, Math.max(unit, perSecond));
  }

  /** Wait until `bytes` more may be copied; returns early if `signal` fires or the rate changes. */
  async admit(bytes: number, signal?: AbortSignal): Promise<void> {
    const now = Date.now();
    if (this.startMs === 0) this.startMs = now;
    this.bytesAdmitted += bytes;
    const dueMs = this.startMs + (this.bytesAdmitted / this.bytesPerSecond) * 1000;
    if (dueMs <= now || signal?.aborted) return;
    const wake = new AbortController();
    const onAbort = () => wake.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.waiting.add(wake);
    try {
      await sleep(dueMs - now, wake.signal);
    } finally {
      this.waiting.delete(wake);
      signal?.removeEventListener('abort', onAbort);
    }
  }
}

function checkRate(bytesPerSecond: number): number {
  if (!Number.isFinite(bytesPerSecond) || !(bytesPerSecond >= RateLimiter.MIN_BYTES_PER_SECOND)) {
    throw new KcopydError(
      'bad-option',
      `rate must be at least ${RateLimiter.MIN_BYTES_PER_SECOND} bytes per second (got ${bytesPerSecond})`,
    );
  }
  return bytesPerSecond;
}

function checkPercent(p: number): number {
  if (!Number.isFinite(p) || p < 1 || p > 100) throw new RangeError(`throttle must be 1..100 percent (got ${p})`);
  return p;
}

/** setTimeout holds at most 2^31 - 1 ms (24.8 days); longer waits are slept in slices. */
const MAX_TIMER_MS = 2 ** 31 - 1;

/** Sleep `ms`, or less if `signal` fires (it resolves then; callers check the signal). */
export async function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  const until = Date.now() + ms;
  for (let left = ms; left > 0 && !signal?.aborted; left = until - Date.now()) {
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.min(left, MAX_TIMER_MS));
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}
