import { DirtyLog } from './dirty-log';

/** The kernel's region states (dm-region-hash.c). */
export type RegionState = 'CLEAN' | 'DIRTY' | 'NOSYNC' | 'RECOVERING';

interface Entry {
  state: RegionState;
  pending: number;
  /** Writes delayed until recovery of the region ends. */
  delayed: (() => void)[];
  /** A recovery waiting for pending writes to drain. */
  quiesced: (() => void)[];
}

/**
 * Region states over a dirty log. Regions not held here take their state
 * from the log (in sync → CLEAN, else NOSYNC). A write takes CLEAN → DIRTY
 * (marking the log), and when its region's pending count drops to 0 the
 * region is queued for cleaning; the next update() sets the clean bits and
 * flushes the log (legs first). Recovery quiesces a region (RECOVERING,
 * writes delayed) and hands it back through recoveryEnd().
 */
export class RegionHash {
  readonly log: DirtyLog;
  readonly regionSize: number;
  readonly lengthSectors: number;
  private entries = new Map<number, Entry>();
  private cleanQueue = new Set<number>();
  private recovered = new Set<number>();
  private failedRecovered = new Set<number>();
  private running?: Promise<void>;
  private rerun?: Promise<void>;
  /** A leg flush failed once: regions whose writes end from now on become NOSYNC. */
  flushFailure = false;

  constructor(log: DirtyLog, lengthSectors: number) {
    this.log = log;
    this.regionSize = log.regionSize;
    this.lengthSectors = lengthSectors;
  }

  get regionCount(): number {
    return this.log.regionCount;
  }

  regionOf(sector: number): number {
    return Math.floor(sector / this.regionSize);
  }

  regionStart(region: number): number {
    return region * this.regionSize;
  }

  /** Sectors in the region (the last one may be short). */
  regionSectors(region: number): number {
    return Math.min(this.regionSize, this.lengthSectors - region * this.regionSize);
  }

  state(region: number): RegionState {
    return this.entries.get(region)?.state ?? (this.log.inSync(region) ? 'CLEAN' : 'NOSYNC');
  }

  pending(region: number): number {
    return this.entries.get(region)?.pending ?? 0;
  }

  private entry(region: number): Entry {
    let e = this.entries.get(region);
    if (!e) {
      e = { state: this.log.inSync(region) ? 'CLEAN' : 'NOSYNC', pending: 0, delayed: [], quiesced: [] };
      this.entries.set(region, e);
    }
    return e;
  }

  /**
   * A write into the region starts: waits while the region recovers, then
   * CLEAN → DIRTY (the log bit is cleared; call update() to persist it
   * before writing). Returns the state the write must follow.
   */
  async beginWrite(region: number): Promise<RegionState> {
    for (;;) {
      const e = this.entries.get(region);
      if (e?.state !== 'RECOVERING') break;
      await new Promise<void>((resolve) => e.delayed.push(resolve));
    }
    const e = this.entry(region);
    if (e.state === 'CLEAN') {
      e.state = 'DIRTY';
      this.cleanQueue.delete(region);
      this.log.markRegion(region);
    }
    e.pending++;
    return e.state;
  }

  /** A write into the region ended; `legFailed` when some leg missed it. */
  endWrite(region: number, legFailed = false): void {
    const e = this.entries.get(region);
    if (!e || e.pending <= 0) throw new Error(`region ${region} has no pending write`);
    // A region being recovered stays RECOVERING: the recovery copies it to
    // every leg anyway, and its entry must live until the recovery ends to
    // release the writes parked on it.
    const recovering = e.state === 'RECOVERING';
    if (legFailed && e.state !== 'NOSYNC' && !recovering) {
      e.state = 'NOSYNC';
      this.log.setRegionSync(region, false);
    }
    if (--e.pending > 0) return;
    if (this.flushFailure && !recovering) e.state = 'NOSYNC';
    if (e.state === 'DIRTY') {
      e.state = 'CLEAN';
      this.cleanQueue.add(region);
    } else if (e.state === 'NOSYNC') {
      this.entries.delete(region);
    }
    const waiting = e.quiesced.splice(0);
    waiting.forEach((w) => w());
  }

  /**
   * Next region to recover, quiesced: RECOVERING, pending writes drained,
   * new writes delayed. undefined when the log has no more resync work.
   */
  async recoveryPrepare(): Promise<number | undefined> {
    const region = this.log.getResyncWork();
    if (region === undefined) return undefined;
    const e = this.entry(region);
    this.cleanQueue.delete(region);
    e.state = 'RECOVERING';
    while (e.pending > 0) await new Promise<void>((resolve) => e.quiesced.push(resolve));
    return region;
  }

  /** Recovery of the region ended; the next update() records the outcome. */
  recoveryEnd(region: number, success: boolean): void {
    (success ? this.recovered : this.failedRecovered).add(region);
  }

  get recovering(): number {
    let n = 0;
    for (const e of this.entries.values()) if (e.state === 'RECOVERING') n++;
    return n;
  }

  /**
   * One worker pass over region states: set the clean bits of regions that
   * went clean or were recovered, flush the log (legs flushed first when a
   * bit was cleaned, the log flushed after a bit was dirtied), then record
   * recoveries and release delayed writes. Concurrent callers share a pass
   * that starts after their call.
   */
  update(): Promise<void> {
    if (!this.running) {
      this.running = this.pass().finally(() => {
        this.running = undefined;
      });
      return this.running;
    }
    if (!this.rerun) {
      const after = () => {
        this.rerun = undefined;
        return this.update();
      };
      this.rerun = this.running.then(after, after);
    }
    return this.rerun;
  }

  private async pass(): Promise<void> {
    const clean = [...this.cleanQueue];
    const recovered = [...this.recovered];
    const failed = [...this.failedRecovered];
    this.cleanQueue.clear();
    this.recovered.clear();
    this.failedRecovered.clear();
    for (const r of recovered) this.log.clearRegion(r);
    for (const r of clean) {
      this.log.clearRegion(r);
      const e = this.entries.get(r);
      if (e && e.state === 'CLEAN' && e.pending === 0) this.entries.delete(r);
    }
    let ok = false;
    try {
      await this.log.flush();
      // After a failed leg flush the log records no region clean: none is in sync.
      ok = !this.log.legFlushFailed;
    } finally {
      if (this.log.legFlushFailed) this.flushFailure = true;
      for (const r of recovered) this.finishRecovery(r, ok);
      for (const r of failed) this.finishRecovery(r, false);
    }
  }

  private finishRecovery(region: number, inSync: boolean): void {
    this.log.setRegionSync(region, inSync);
    const e = this.entries.get(region);
    this.entries.delete(region);
    e?.delayed.splice(0).forEach((w) => w());
  }
}
