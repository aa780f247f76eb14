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
    private readonly wait: (ms: number) => Promise<void> = sleep,
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

  /** Wait until I/O may be submitted. */
  async beforeIo(): Promise<void> {
    if (this.percent >= 100) return;
    for (let i = 0; i < Throttle.MAX_BACKOFFS; i++) {
      this.account();
      if (this.ioPeriodMs <= (this.percent / 100) * this.totalPeriodMs) break;
      await this.wait(Throttle.BACKOFF_MS);
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

/** Paces a client to an average of `bytesPerSecond`, measured from its first I/O. */
export class RateLimiter {
  private readonly bytesPerSecond: number;
  private startMs = 0;
  private bytesAdmitted = 0;

  constructor(bytesPerSecond: number) {
    if (!(bytesPerSecond > 0) || !Number.isFinite(bytesPerSecond)) {
      throw new RangeError(`rate must be a positive number of bytes per second (got ${bytesPerSecond})`);
    }
    this.bytesPerSecond = bytesPerSecond;
  }

  async admit(bytes: number): Promise<void> {
    const now = Date.now();
    if (this.startMs === 0) this.startMs = now;
    const dueMs = this.startMs + (this.bytesAdmitted / this.bytesPerSecond) * 1000;
    this.bytesAdmitted += bytes;
    if (dueMs > now) await sleep(dueMs - now);
  }
}

function checkPercent(p: number): number {
  if (!Number.isFinite(p) || p < 1 || p > 100) throw new RangeError(`throttle must be 1..100 percent (got ${p})`);
  return p;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
