import {
  Bitmap,
  checkLogImage,
  dirtyRanges,
  encodeDiskLog,
  encodeLogDump,
  LogProblemKind,
  logDumpJson,
  logDumpText,
  MirrorError,
  parseLogDumpJson,
  parseLogDumpText,
} from '@dmtool/dm-mirror';

/** mulberry32: the same seed gives the same log and the same damage. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bitmapOf(bits: number, dirty: number[]): Bitmap {
  const b = new Bitmap(bits);
  b.fill(true);
  for (const r of dirty) b.clear(r);
  return b;
}

/** A clean log as the kernel writes it, with random dirty regions. */
function cleanLog(regions: number, seed: number, logicalBlockSize = 512): Buffer {
  const rand = prng(seed);
  const clean = new Bitmap(regions);
  for (let r = 0; r < regions; r++) clean.assign(r, rand() < 0.7);
  return encodeDiskLog(regions, clean, logicalBlockSize);
}

describe('dirtyRanges', () => {
  test.each([
    [10, [], []],
    [
      10,
      [0, 1, 2, 9],
      [
        [0, 3],
        [9, 1],
      ],
    ],
    [40, Array.from({ length: 40 }, (_, i) => i), [[0, 40]]],
    [
      33,
      [7, 8, 15, 16, 31, 32],
      [
        [7, 2],
        [15, 2],
        [31, 2],
      ],
    ],
  ])('%i regions, dirty %j', (bits, dirty, ranges) => {
    expect([...dirtyRanges(bitmapOf(bits, dirty))].map((r) => [r.start, r.count])).toEqual(ranges);
  });

  test('agrees with a bit-by-bit scan on random bitmaps', () => {
    for (let seed = 1; seed <= 20; seed++) {
      const rand = prng(seed);
      const bits = 1 + Math.floor(rand() * 2000);
      const b = new Bitmap(bits);
      let run = rand() < 0.5;
      for (let r = 0; r < bits; r++) {
        if (rand() < 0.05) run = !run;
        b.assign(r, run);
      }
      const expected: number[][] = [];
      for (let r = 0; r < bits; r++) {
        if (b.get(r)) continue;
        const last = expected.at(-1);
        if (last && last[0] + last[1] === r) last[1]++;
        else expected.push([r, 1]);
      }
      expect([...dirtyRanges(b)].map((x) => [x.start, x.count])).toEqual(expected);
    }
  });
});

describe('log dumps', () => {
  const dump = { version: 2, nrRegions: 20, unused: Buffer.alloc(1008), clean: bitmapOf(20, [3, 9, 10, 19]) };

  test('text, exactly', () => {
    expect([...logDumpText(dump)].join('')).toBe(
      'dmtool-mirror-log-dump 1\nversion 2\nregions 20\nin-sync 16\ndirty 3 1\ndirty 9 2\ndirty 19 1\n',
    );
  });

  test('JSON, exactly', () => {
    expect(JSON.parse([...logDumpJson(dump)].join(''))).toEqual({
      format: 'dmtool-mirror-log-dump',
      formatVersion: 1,
      version: 2,
      regions: 20,
      inSync: 16,
      dirty: [
        { start: 3, count: 1 },
        { start: 9, count: 2 },
        { start: 19, count: 1 },
      ],
    });
  });

  test.each([
    [1, 512],
    [2, 4096],
  ])('round trip of random logs, version %i, %i-byte blocks, unused bytes kept: the same buffer', (version, lbs) => {
    for (let seed = 1; seed <= 10; seed++) {
      const buf = cleanLog(1 + seed * 997, seed, lbs);
      buf.writeUInt32LE(version, 4);
      if (seed % 2) buf[100 + seed] = seed;
      const r = checkLogImage(buf, { logicalBlockSize: lbs });
      expect(r.problems.map((p) => p.kind)).toEqual(seed % 2 ? ['unused-bytes'] : []);
      const d = {
        version,
        nrRegions: r.nrRegions!,
        unused: buf.subarray(16, 1024),
        clean: new Bitmap(r.nrRegions!, Uint8Array.from(buf.subarray(1024))),
      };
      const text = [...logDumpText(d)].join('');
      const json = [...logDumpJson(d)].join('');
      expect(encodeLogDump(parseLogDumpText(text.split('\n')), lbs).equals(buf)).toBe(true);
      expect(encodeLogDump(parseLogDumpJson(json), lbs).equals(buf)).toBe(true);
    }
  });

  test.each([
    ['', 'dump line 1: the dump is empty'],
    ['hello\n', 'dump line 1: expected "dmtool-mirror-log-dump 1"'],
    ['dmtool-mirror-log-dump 1\nversion 3\nregions 4\n', 'version must be 1 or 2'],
    ['dmtool-mirror-log-dump 1\nversion 2\nregions 0\n', 'regions must be at least 1'],
    ['dmtool-mirror-log-dump 1\nversion 2\nregions 4\ndirty 2 3\n', 'dump line 4: range 2+3 is empty or past region 3'],
    ['dmtool-mirror-log-dump 1\nversion 2\nregions 9\ndirty 4 1\ndirty 2 1\n', 'dump line 5: ranges must be ascending and apart (2 < 5)'],
    ['dmtool-mirror-log-dump 1\nversion 2\nregions 9\nin-sync 9\ndirty 4 1\n', 'in-sync says 9, the dirty ranges leave 8 regions in sync'],
    ['dmtool-mirror-log-dump 1\nversion 2\nregions 9\ncolour red\n', 'dump line 4: unknown line "colour red"'],
    ['dmtool-mirror-log-dump 1\nversion 2\nregions 9\ndirty 1 1\nregions 3\n', 'dump line 5: "regions" after the dirty ranges'],
  ])('a bad text dump is refused with one line: %j', (text, message) => {
    let error: unknown;
    try {
      parseLogDumpText(text.split('\n'));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(MirrorError);
    expect((error as MirrorError).reason).toBe('bad-dump');
    expect((error as Error).message).toBe(message);
  });
});

describe('checkLogImage', () => {
  test('exact problems of a hand-damaged log', () => {
    const buf = cleanLog(20, 1);
    buf[1024 + 2] = 0xff; // bits 20..23: surplus
    buf[1500] = 1;
    expect(checkLogImage(buf, { expectRegions: 21 }).problems).toEqual([
      { kind: 'region-count-mismatch', byteOffset: 8, message: 'nr_regions is 20, the mirror has 21' },
      { kind: 'surplus-bits', byteOffset: 1026, message: 'bits past region 19 are set (they are always 0; the kernel clears them)' },
      { kind: 'trailing-bytes', byteOffset: 1500, message: 'byte 1500 after the bitmap is not zero (the buffer ends in zeros)' },
    ]);
  });

  /** One damage per seed; the kinds check may report for it. */
  function damage(seed: number): { name: string; buf: Buffer; regions: number; expect: LogProblemKind[] } {
    const rand = prng(seed);
    const regions = 1 + Math.floor(rand() * 5000);
    const buf = cleanLog(regions, seed);
    const pick = Math.floor(rand() * 6);
    const bitmapEnd = 1024 + Math.ceil(regions / 32) * 4;
    if (pick === 0) {
      const at = Math.floor(rand() * 16);
      buf[at] ^= 1 << Math.floor(rand() * 8);
      const expect: LogProblemKind[] = at < 4 ? ['bad-magic'] : at < 8 ? ['bad-version'] : ['region-count-mismatch', 'bad-region-count'];
      return { name: `flip header byte ${at}`, buf, regions, expect };
    }
    if (pick === 1) {
      buf[16 + Math.floor(rand() * 1008)] = 1 + Math.floor(rand() * 255);
      return { name: 'unused byte', buf, regions, expect: ['unused-bytes'] };
    }
    if (pick === 2 && regions % 32 !== 0) {
      buf[1024 + (regions >> 3)] |= 1 << (regions & 7); // the first bit past the last region
      return { name: 'surplus bit', buf, regions, expect: ['surplus-bits'] };
    }
    if (pick === 3 && bitmapEnd < buf.length) {
      buf[bitmapEnd + Math.floor(rand() * (buf.length - bitmapEnd))] = 7;
      return { name: 'trailing byte', buf, regions, expect: ['trailing-bytes'] };
    }
    if (pick === 4) {
      const sectors = Math.floor(rand() * (buf.length / 512));
      return { name: `truncate to ${sectors} sectors`, buf: buf.subarray(0, sectors * 512), regions, expect: ['log-truncated'] };
    }
    buf.writeUInt32LE(Math.floor(rand() * 3) === 0 ? 0 : 3 + Math.floor(rand() * 100), 4);
    return { name: 'bad version', buf, regions, expect: ['bad-version'] };
  }

  test("120 generated damages, checked against the mirror's region count: each found, nothing thrown", () => {
    const missed: string[] = [];
    for (let seed = 1; seed <= 120; seed++) {
      const d = damage(seed);
      const kinds = checkLogImage(d.buf, { expectRegions: d.regions }).problems.map((p) => p.kind);
      if (!kinds.some((k) => d.expect.includes(k))) missed.push(`${seed} ${d.name}: ${kinds.join(',') || 'nothing'}`);
    }
    expect(missed).toEqual([]);
  });

  test('clean logs are clean', () => {
    for (let seed = 1; seed <= 20; seed++) expect(checkLogImage(cleanLog(seed * 311, seed)).problems).toEqual([]);
  });
});
