import { BufferPool } from '@dmtool/kcopyd';

describe('BufferPool', () => {
  it('lends a pair only when two are free at once, first come first served', async () => {
    const pool = new BufferPool(3, 4096);
    const a = await pool.acquire();
    const b = await pool.acquire();
    const order: string[] = [];
    const pair = pool.acquirePair().then((p) => (order.push('pair'), p));
    // A single request after the pair waits behind it, although one buffer is free.
    const single = pool.acquire().then((x) => (order.push('single'), x));
    await Promise.resolve();
    expect(pool.available).toBe(1);
    pool.release(a);
    const [p0, p1] = await pair;
    expect(order).toEqual(['pair']);
    expect(new Set([p0, p1, b]).size).toBe(3);
    pool.release(b);
    expect(await single).toBe(b);
    expect(order).toEqual(['pair', 'single']);
    pool.release(p0);
    pool.release(p1);
    pool.release(b);
    expect(pool.available).toBe(3);
  });

  it('refuses a pair from a pool of one', async () => {
    await expect(new BufferPool(1, 4096).acquirePair()).rejects.toThrow(/pool of 1 buffer cannot lend two/);
  });
});
