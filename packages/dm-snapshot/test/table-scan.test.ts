import { MemoryDevice } from '@dmtool/devices';
import { CowGeometry, encodeEntry, encodeHeader, PersistentStore, readCowSummary, SnapshotError } from '@dmtool/dm-snapshot';

// The streamed scan must refuse exactly what PersistentStore.open refuses,
// with the same error, and report the same shape; duplicates are found by
// bitmap windows of 2^26 chunk numbers, so the cases below put chunks in
// different windows.
const CS = 8;
const WINDOW = 2 ** 26;

/** A COW on a memory device whose table is `entries` (old, new) in order; new_chunks as given. */
async function cowWith(entries: [number, number][], cowChunks: number): Promise<MemoryDevice> {
  const g = new CowGeometry(CS, cowChunks * CS);
  const dev = new MemoryDevice(cowChunks * g.chunkBytes);
  const buf = Buffer.alloc(g.chunkBytes);
  encodeHeader(buf, { valid: true, chunkSectors: CS });
  await dev.write(buf, 0, buf.length, 0);
  const E = g.exceptionsPerArea;
  for (let area = 0; area * E <= entries.length && g.areaChunk(area) < cowChunks; area++) {
    buf.fill(0);
    for (let j = area * E; j < Math.min(entries.length, (area + 1) * E); j++) encodeEntry(buf, j - area * E, entries[j][0], entries[j][1]);
    await dev.write(buf, 0, buf.length, g.chunkToByte(g.areaChunk(area)));
  }
  return dev;
}

async function errorOf(p: Promise<unknown>): Promise<{ reason: string; message: string; sector?: number } | undefined> {
  try {
    await p;
    return undefined;
  } catch (e) {
    if (!(e instanceof SnapshotError)) throw e;
    return { reason: e.reason, message: e.message, sector: e.sector };
  }
}

/** Allocation-order new_chunks for n entries. */
function inOrder(olds: number[]): [number, number][] {
  const g = new CowGeometry(CS, 0);
  return olds.map((o, j) => [o, g.dataChunkOfIndex(j)]);
}

describe('scanTable agrees with PersistentStore.open', () => {
  test('a healthy table over several areas: the same count and status', async () => {
    const olds = Array.from({ length: 700 }, (_, j) => (j * 37) % 1000);
    const dev = await cowWith(inOrder(olds), 2000);
    const summary = await readCowSummary(dev);
    const store = await PersistentStore.open(dev);
    expect(summary.exceptions).toBe(700);
    expect(summary.usage()).toEqual(store.usage());
    expect([summary.currentArea, summary.currentCommitted, summary.nextFree]).toEqual([2, 188, 704]);
    expect([store.currentArea, store.currentCommitted, store.nextFree]).toEqual([2, 188, 704]);
  });

  test('the first repeated old_chunk in table order, though a later window holds an earlier repeat', async () => {
    // Entry 3 repeats entry 1 (window 1); entry 5 repeats entry 0 (window 0). Entry 3 is reported.
    const dev = await cowWith(inOrder([7, WINDOW + 5, 9, WINDOW + 5, 11, 7]), 600);
    const streamed = await errorOf(readCowSummary(dev));
    expect(streamed).toEqual(await errorOf(PersistentStore.open(dev)));
    expect(streamed?.reason).toBe('duplicate-old-chunk');
    expect(streamed?.message).toContain(`area 0 entry 3 (old ${WINDOW + 5} → new 5) repeats origin chunk ${WINDOW + 5}`);
  });

  test('the smallest shared new_chunk of a table out of allocation order', async () => {
    const dev = await cowWith(
      [
        [1, 9],
        [2, 4],
        [3, 9],
        [4, 4],
        [5, 3],
      ],
      600,
    );
    const streamed = await errorOf(readCowSummary(dev));
    expect(streamed).toEqual(await errorOf(PersistentStore.open(dev)));
    expect(streamed).toEqual({
      reason: 'duplicate-new-chunk',
      message: expect.stringContaining('two exceptions share COW chunk 4') as string,
      sector: 32,
    });
  });

  test('entry rules: past the origin end, in a metadata chunk, past the COW end', async () => {
    for (const [entries, reason, originSectors] of [
      [inOrder([1, 2, 500]), 'entry-past-origin-end', 400 * CS],
      [
        [
          [1, 2],
          [2, 258],
        ],
        'entry-in-metadata',
        undefined,
      ],
      [
        [
          [1, 2],
          [2, 599],
        ],
        'entry-past-cow-end',
        undefined,
      ],
    ] as const) {
      const dev = await cowWith(
        entries.map((e) => [e[0], e[1]]),
        599,
      );
      const streamed = await errorOf(readCowSummary(dev, { originSectors }));
      expect(streamed?.reason).toBe(reason);
      expect(streamed).toEqual(await errorOf(PersistentStore.open(dev, { originSectors })));
    }
  });

  test('a table with no terminator before the COW end', async () => {
    const dev = await cowWith(inOrder(Array.from({ length: 256 }, (_, j) => j)), 258);
    const streamed = await errorOf(readCowSummary(dev));
    expect(streamed?.reason).toBe('area-past-cow-end');
    expect(streamed).toEqual(await errorOf(PersistentStore.open(dev)));
  });
});
