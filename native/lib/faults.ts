import { errnoOf } from './errors';

/**
 * Fault injection: real code in the I/O path, switched on by tests (or by
 * the DMTOOL_FAULTS environment variable, a JSON FaultPlan, for tests that
 * drive the CLI in a child process). A rule fails matching operations with
 * an errno; a write rule with `shortBytes` first writes that many bytes for
 * real, then fails (a short write). Crash points kill the process with
 * SIGKILL, as a power cut or `kill -9` would, at a chosen step.
 */
export type FaultOp = 'read' | 'write' | 'flush' | 'zero';

export interface FaultRule {
  op: FaultOp;
  code: string;
  /** Only devices whose path ends with this string (default: every device). */
  path?: string;
  /** Only operations overlapping [fromByte, toByte). */
  fromByte?: number;
  toByte?: number;
  /** Let this many matching operations through first. */
  skip?: number;
  /** Fail at most this many times (default: every time). */
  times?: number;
  /** Writes only: write this many bytes before failing. */
  shortBytes?: number;
}

export interface FaultPlan {
  rules?: FaultRule[];
  /** SIGKILL the process right after this many completed writes (any device). */
  crashAfterWrites?: number;
  /** SIGKILL the process the n-th time (1-based) the named crash point is reached. */
  crashAt?: { point: string; hit: number };
  /**
   * Keep writes in a volatile cache until the device is flushed (see
   * WriteCache); a flush applies them in this order ('reverse' is the harsh one).
   */
  volatileCache?: { order?: 'fifo' | 'reverse' };
  /** With volatileCache: SIGKILL after this many cached writes were applied by flushes. */
  crashDuringFlush?: number;
}

interface RuleState {
  rule: FaultRule;
  seen: number;
  fired: number;
}

export interface InjectedFault {
  errno: number;
  shortBytes: number;
}

class FaultInjector {
  private rules: RuleState[] = [];
  private writesLeft = Infinity;
  private crashPoint?: { point: string; hit: number };
  private cache?: { order: 'fifo' | 'reverse' };
  private appliesLeft = Infinity;
  private pointHits = new Map<string, number>();

  setPlan(plan: FaultPlan | undefined): void {
    this.rules = (plan?.rules ?? []).map((rule) => {
      errnoOf(rule.code);
      return { rule, seen: 0, fired: 0 };
    });
    this.writesLeft = plan?.crashAfterWrites ?? Infinity;
    this.crashPoint = plan?.crashAt;
    this.cache = plan?.volatileCache ? { order: plan.volatileCache.order ?? 'fifo' } : undefined;
    this.appliesLeft = plan?.crashDuringFlush ?? Infinity;
    this.pointHits.clear();
  }

  /** The flush order when writes go to a volatile cache, else undefined. */
  get cacheOrder(): 'fifo' | 'reverse' | undefined {
    return this.cache?.order;
  }

  cachedWriteApplied(): void {
    if (--this.appliesLeft <= 0) process.kill(process.pid, 'SIGKILL');
  }

  get active(): boolean {
    return this.rules.length > 0 || this.writesLeft !== Infinity || this.crashPoint !== undefined || this.cache !== undefined;
  }

  /** The fault to inject into this operation, if any. */
  check(op: FaultOp, path: string, byteOffset: number, bytes: number): InjectedFault | undefined {
    for (const s of this.rules) {
      const r = s.rule;
      if (r.op !== op) continue;
      if (r.path !== undefined && !path.endsWith(r.path)) continue;
      const from = r.fromByte ?? 0;
      const to = r.toByte ?? Infinity;
      if (op !== 'flush' && !(byteOffset < to && byteOffset + bytes > from)) continue;
      s.seen++;
      if (s.seen <= (r.skip ?? 0)) continue;
      if (s.fired >= (r.times ?? Infinity)) continue;
      s.fired++;
      return { errno: errnoOf(r.code), shortBytes: Math.min(r.shortBytes ?? 0, bytes) };
    }
    return undefined;
  }

  writeCompleted(): void {
    if (--this.writesLeft <= 0) process.kill(process.pid, 'SIGKILL');
  }

  reached(point: string): void {
    if (this.crashPoint?.point !== point) return;
    const n = (this.pointHits.get(point) ?? 0) + 1;
    this.pointHits.set(point, n);
    if (n >= this.crashPoint.hit) process.kill(process.pid, 'SIGKILL');
  }
}

export const faults = new FaultInjector();

const fromEnv = process.env.DMTOOL_FAULTS;
if (fromEnv) faults.setPlan(JSON.parse(fromEnv) as FaultPlan);

/** Install a fault plan for this process (replaces the previous one). */
export function setFaultPlan(plan: FaultPlan | undefined): void {
  faults.setPlan(plan);
}

/** Mark a named step; a plan's `crashAt` kills the process here. */
export function crashPoint(point: string): void {
  faults.reached(point);
}
