import { ExceptionTable } from '@dmtool/dm-snapshot';

describe('ExceptionTable', () => {
  test('agrees with a Map under appends, lookups and tail pops', () => {
    const t = new ExceptionTable(16);
    const ref = new Map<number, number>();
    const order: number[] = [];
    let seed = 12345;
    const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
    for (let step = 0; step < 60000; step++) {
      const r = rand();
      if (r < 0.6) {
        const old = Math.floor(rand() * 50000) + (rand() < 0.1 ? 2 ** 40 : 0);
        const added = t.append(old, step + 2);
        expect(added).toBe(!ref.has(old));
        if (added) {
          ref.set(old, step + 2);
          order.push(old);
        }
      } else if (r < 0.8 && order.length > 0) {
        t.pop();
        ref.delete(order.pop() as number);
      } else {
        const old = Math.floor(rand() * 50000);
        expect(t.lookup(old)).toBe(ref.get(old) ?? -1);
      }
    }
    expect(t.size).toBe(ref.size);
    order.forEach((old, i) => {
      expect(t.oldAt(i)).toBe(old);
      expect(t.lookup(old)).toBe(ref.get(old));
    });
    while (t.size > 0) {
      const old = order.pop() as number;
      t.pop();
      expect(t.has(old)).toBe(false);
    }
    expect(() => t.pop()).toThrow(RangeError);
  });

  test('one million exceptions fit in well under 64 MiB', () => {
    const before = process.memoryUsage();
    const t = new ExceptionTable();
    for (let i = 0; i < 1_000_000; i++) t.append(i * 7 + 3, 2 + i + Math.floor(i / 256));
    const after = process.memoryUsage();
    expect(t.size).toBe(1_000_000);
    expect(t.memoryBytes).toBeLessThan(64 * 2 ** 20);
    const extra = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
    expect(extra).toBeLessThan(64 * 2 ** 20);
    expect(t.lookup(7 * 999_999 + 3)).toBe(2 + 999_999 + Math.floor(999_999 / 256));
    expect(t.lookup(5)).toBe(-1);
  });
});
