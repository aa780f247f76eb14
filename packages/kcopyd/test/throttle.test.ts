import { KcopydClient, KcopydError, RateLimiter, Throttle } from '@dmtool/kcopyd';

/** A manual clock: waiting advances it, so the algorithm runs without real time. */
function manualClock() {
  const c = {
    now: 0,
    waits: [] as number[],
    clock: () => c.now,
    wait: async (ms: number) => {
      c.waits.push(ms);
      c.now += ms;
    },
  };
  return c;
}

describe('Throttle (kcopyd duty cycle)', () => {
  it('never waits at 100 percent', async () => {
    const c = manualClock();
    const t = new Throttle(100, c.clock, c.wait);
    t.ioStarted();
    c.now += 5000;
    await t.beforeIo();
    expect(c.waits).toEqual([]);
  });

  it('backs off in 100 ms steps while I/O time exceeds the share, until it falls below', async () => {
    const c = manualClock();
    const t = new Throttle(50, c.clock, c.wait);
    t.ioStarted();
    c.now += 600; // 600 ms of I/O in a 600 ms window: 100 % busy
    t.ioFinished();
    await t.beforeIo();
    // Idle waits grow the window: after 4 waits it reaches 1 s and decays by half
    // (io 300 of 500); one more wait gives 300 of 600, within 50 %: 5 waits.
    expect(c.waits).toEqual([100, 100, 100, 100, 100]);
  });

  it('gives up after 10 back-offs so a copy always progresses', async () => {
    const c = manualClock();
    const t = new Throttle(10, c.clock, c.wait);
    t.ioStarted();
    c.now += 900;
    await t.beforeIo(); // I/O still active: waiting never helps
    expect(c.waits).toHaveLength(10);
  });

  it('rejects percentages outside 1..100', () => {
    expect(() => new Throttle(0)).toThrow(/1\.\.100/);
    expect(() => new Throttle(101)).toThrow(/1\.\.100/);
  });
});

describe('RateLimiter', () => {
  it('refuses rates below 4096 bytes per second', () => {
    expect(() => new RateLimiter(4095)).toThrow(KcopydError);
    expect(() => new RateLimiter(1)).toThrow(/^rate must be at least 4096 bytes per second \(got 1\)$/);
    expect(() => new KcopydClient({ rateBytesPerSecond: 1000 })).toThrow(KcopydError);
    expect(() => new RateLimiter(4096)).not.toThrow();
  });

  it('paces the first admission too', async () => {
    const rl = new RateLimiter(1 << 20);
    const t0 = Date.now();
    await rl.admit(256 << 10);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(245);
  });

  it('a wait longer than a timer can hold is sliced, and an abort ends it at once', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.name);
    process.on('warning', onWarning);
    try {
      const rl = new RateLimiter(4096);
      const ctl = new AbortController();
      setTimeout(() => ctl.abort(), 50);
      const t0 = Date.now();
      // 16 GiB at 4 KiB/s is 48 days: beyond setTimeout's 24.8-day limit.
      await rl.admit(2 ** 34, ctl.signal);
      expect(Date.now() - t0).toBeLessThan(1000);
      await new Promise((r) => setImmediate(r));
      expect(warnings).toEqual([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('a new rate wakes the admissions waiting at the old one and paces from then on', async () => {
    const rl = new RateLimiter(4096);
    const t0 = Date.now();
    // 64 KiB at 4 KiB/s: 16 s, unless the rate changes.
    const waiting = rl.admit(64 << 10);
    setTimeout(() => (rl.bytesPerSecond = 1 << 20), 50);
    await waiting;
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(rl.bytesPerSecond).toBe(1 << 20);
    const t1 = Date.now();
    await rl.admit(256 << 10);
    expect(Date.now() - t1).toBeGreaterThanOrEqual(245);
    expect(() => (rl.bytesPerSecond = 100)).toThrow(/^rate must be at least 4096 bytes per second \(got 100\)$/);
  });

  it('KcopydClient.setRate sets, changes and lifts the cap', async () => {
    const c = new KcopydClient();
    expect(c.rateBytesPerSecond).toBeUndefined();
    c.setRate(8192);
    expect(c.rateBytesPerSecond).toBe(8192);
    c.setRate(1 << 20);
    expect(c.rateBytesPerSecond).toBe(1 << 20);
    c.setRate(undefined);
    expect(c.rateBytesPerSecond).toBeUndefined();
    await c.destroy();
  });

  it('cuts pieces to at most one second of the rate, in whole 4 KiB units', () => {
    expect(new RateLimiter(4096).pieceSectors(1024)).toBe(8);
    expect(new RateLimiter(100 * 1024).pieceSectors(1024)).toBe(200);
    expect(new RateLimiter(200 << 20).pieceSectors(1024)).toBe(1024);
  });
});
