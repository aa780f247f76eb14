import { Throttle } from '@dmtool/kcopyd';

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
