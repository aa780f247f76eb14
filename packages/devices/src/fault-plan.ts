import { z } from 'zod';
import { errnoOf } from './errors';
import { onCrashPoint } from './crash-points';

export type FaultOp = 'read' | 'write' | 'flush' | 'zero';

const errnoName = z.string().refine((code) => {
  try {
    errnoOf(code);
    return true;
  } catch {
    return false;
  }
}, 'not an errno name');

/** One fault rule of a plan; `FaultRule` is its type. */
export const faultRuleSchema = z
  .object({
    /** `zero` also covers punching a hole in a file (both make a range read as zeros). */
    op: z.enum(['read', 'write', 'flush', 'zero']),
    code: errnoName,
    /** Only devices whose path ends with this string (default: every device). */
    path: z.string().optional(),
    /** Only operations overlapping [fromByte, toByte). */
    fromByte: z.number().int().nonnegative().optional(),
    toByte: z.number().int().nonnegative().optional(),
    /** Let this many matching operations through first. */
    skip: z.number().int().nonnegative().optional(),
    /** Fail at most this many times (default: every time). */
    times: z.number().int().nonnegative().optional(),
    /** Writes only: write this many bytes before failing (a short write). */
    shortBytes: z.number().int().nonnegative().optional(),
  })
  .strict();

export const faultPlanSchema = z
  .object({
    rules: z.array(faultRuleSchema).optional(),
    /** SIGKILL the process right after this many completed writes (any device). */
    crashAfterWrites: z.number().int().positive().optional(),
    /** SIGKILL the process the n-th time (1-based) the named crash point is reached. */
    crashAt: z.object({ point: z.string(), hit: z.number().int().positive() }).strict().optional(),
    /**
     * Keep writes in a volatile cache until the device is flushed; a flush
     * applies them in this order ('reverse' is the harsh one).
     */
    volatileCache: z
      .object({ order: z.enum(['fifo', 'reverse']).optional() })
      .strict()
      .optional(),
    /** With volatileCache: SIGKILL after this many cached writes were applied by flushes. */
    crashDuringFlush: z.number().int().positive().optional(),
  })
  .strict();

export type FaultRule = z.infer<typeof faultRuleSchema>;
export type FaultPlan = z.infer<typeof faultPlanSchema>;

export interface InjectedFault {
  errno: number;
  shortBytes: number;
}

interface RuleState {
  rule: FaultRule;
  seen: number;
  fired: number;
}

/**
 * The state of one fault plan, shared by every device it wraps (counters
 * such as `crashAfterWrites` run across devices). A crash is a SIGKILL of
 * this process, as `kill -9` or a power cut would end it.
 */
export class FaultInjector {
  private plan: FaultPlan = {};
  private rules: RuleState[] = [];
  private writesLeft = Infinity;
  private appliesLeft = Infinity;
  private readonly pointHits = new Map<string, number>();

  constructor(plan: FaultPlan = {}) {
    this.setPlan(plan);
  }

  /**
   * Replace the plan (counters start again); devices already wrapped follow
   * its rules and crash counters. Whether a device has a volatile cache is
   * decided when it is wrapped (`withFaults`).
   */
  setPlan(plan: FaultPlan | undefined): void {
    this.plan = faultPlanSchema.parse(plan ?? {});
    this.rules = (this.plan.rules ?? []).map((rule) => ({ rule, seen: 0, fired: 0 }));
    this.writesLeft = this.plan.crashAfterWrites ?? Infinity;
    this.appliesLeft = this.plan.crashDuringFlush ?? Infinity;
    this.pointHits.clear();
  }

  /** Parse a plan (the DMTOOL_FAULTS JSON); throws on anything it does not know. */
  static parse(json: string): FaultInjector {
    return new FaultInjector(faultPlanSchema.parse(JSON.parse(json)));
  }

  get volatileCacheOrder(): 'fifo' | 'reverse' | undefined {
    return this.plan.volatileCache ? (this.plan.volatileCache.order ?? 'fifo') : undefined;
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
    if (--this.writesLeft <= 0) crash();
  }

  cachedWriteApplied(): void {
    if (--this.appliesLeft <= 0) crash();
  }

  /** Route the process's crash points to this plan's `crashAt`. */
  armCrashPoints(): void {
    const at = this.plan.crashAt;
    onCrashPoint(
      at &&
        ((point) => {
          if (point !== at.point) return;
          const n = (this.pointHits.get(point) ?? 0) + 1;
          this.pointHits.set(point, n);
          if (n >= at.hit) crash();
        }),
    );
  }
}

function crash(): never {
  process.kill(process.pid, 'SIGKILL');
  throw new Error('unreachable: SIGKILL did not end the process');
}
