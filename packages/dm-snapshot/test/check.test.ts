import * as fs from 'fs';
import * as path from 'path';
import { MemoryDevice } from '@dmtool/devices';
import { checkCow, CowProblem, PersistentStore, SnapshotError } from '@dmtool/dm-snapshot';
import { removeDir, tempDir } from '../../../test/support/loop';
import { unpackFixture } from '../../../test/support/fixtures';
import { cleanCow, CowImage, damagedCows } from './damage';

let dir: string;
beforeAll(() => {
  dir = tempDir('dmtool-snapcheck-');
});
afterAll(() => removeDir(dir));

async function deviceOf(image: CowImage): Promise<MemoryDevice> {
  const dev = new MemoryDevice(image.bytes.length, { name: 'cow.img' });
  if (image.bytes.length > 0) await dev.write(image.bytes, 0, image.bytes.length, 0);
  return dev;
}

async function check(image: CowImage): Promise<CowProblem[]> {
  const problems: CowProblem[] = [];
  await checkCow(await deviceOf(image), { originSectors: image.originSectors, onProblem: (p) => void problems.push(p) });
  return problems;
}

function kernelCow(cs: number): CowImage {
  const sub = fs.mkdtempSync(path.join(dir, 'fx-'));
  const { dir: fx } = unpackFixture(`snapshot-cow-chunk${cs}`, sub);
  const bytes = fs.readFileSync(path.join(fx, 'cow.img'));
  const originSectors = fs.statSync(path.join(fx, 'origin.img')).size / 512;
  fs.rmSync(sub, { recursive: true });
  return { bytes, chunkSectors: cs, originSectors };
}

const SYNTHETIC = [
  { chunkSectors: 1, exceptions: 100, originChunks: 5000, spareAreas: 3, seed: 1 },
  { chunkSectors: 1, exceptions: 64, originChunks: 70, spareAreas: 1, seed: 2 },
  { chunkSectors: 2, exceptions: 200, originChunks: 1000, spareAreas: 2, seed: 3 },
  { chunkSectors: 8, exceptions: 600, originChunks: 100000, spareAreas: 2, seed: 4 },
  { chunkSectors: 8, exceptions: 512, originChunks: 2048, spareAreas: 1, seed: 5 },
  { chunkSectors: 16, exceptions: 0, originChunks: 100, spareAreas: 2, seed: 6 },
];

describe('checkCow on clean COWs', () => {
  test.each([8, 16])('the kernel-made COW of chunk %i is clean', async (cs) => {
    const image = kernelCow(cs);
    const problems: CowProblem[] = [];
    const s = await checkCow(await deviceOf(image), { originSectors: image.originSectors, onProblem: (p) => void problems.push(p) });
    expect(problems).toEqual([]);
    expect(s).toEqual({ chunkSectors: cs, valid: true, exceptions: cs === 8 ? 310 : 530, areas: 2, problems: 0 });
  });

  test.each(SYNTHETIC)('a COW of chunk $chunkSectors with $exceptions exceptions in allocation order is clean', async (o) => {
    expect(await check(cleanCow(o))).toEqual([]);
  });
});

describe('checkCow names each problem exactly', () => {
  test('a duplicated entry: the old chunk, the COW chunk and the allocation order', async () => {
    const image = kernelCow(8);
    // Entry 5 of area 1 (table index 261) becomes a copy of entry 3 of area 0.
    image.bytes.copy(image.bytes, 258 * 4096 + 5 * 16, 1 * 4096 + 3 * 16, 1 * 4096 + 4 * 16);
    expect(await check(image)).toEqual([
      {
        kind: 'duplicate-old-chunk',
        area: 1,
        entry: 5,
        byteOffset: 0x102050,
        message: 'area 1 entry 5 (old 8 → new 5) repeats origin chunk 8 of area 0 entry 3',
      },
      {
        kind: 'allocation-order',
        area: 1,
        entry: 5,
        byteOffset: 0x102058,
        message: "area 1: 1 entry is out of the kernel's allocation order, first entry 5 (new 5, expected 264)",
      },
      {
        kind: 'duplicate-new-chunk',
        area: 1,
        entry: 5,
        byteOffset: 0x102058,
        message: 'area 1 entry 5 (new 5) shares COW chunk 5 with area 0 entry 3',
      },
    ]);
  });

  test('a zeroed first area: the table ends at once, and area 1 holds stale entries', async () => {
    const image = kernelCow(8);
    image.bytes.fill(0, 4096, 8192);
    expect(await check(image)).toEqual([
      {
        kind: 'stale-area',
        area: 1,
        entry: 0,
        byteOffset: 0x102000,
        message: "area 1 after the table's end holds 54 non-zero entries, first entry 0",
      },
    ]);
  });

  test('a header with a foreign magic, an odd valid flag and padding, and a truncated table', async () => {
    const image = kernelCow(8);
    image.bytes.writeUInt32LE(0x12345678, 0);
    image.bytes.writeUInt32LE(0x100, 4);
    image.bytes[4000] = 7;
    const truncated = { ...image, bytes: image.bytes.subarray(0, 258 * 4096 + 1024) };
    expect(await check(truncated)).toEqual([
      { kind: 'bad-magic', byteOffset: 0, message: 'magic is 0x12345678, not 0x70416e53 ("SnAp")' },
      { kind: 'bad-valid-flag', byteOffset: 4, message: 'valid flag is 256, neither 0 nor 1 (read as valid)' },
      { kind: 'header-padding', byteOffset: 4000, message: 'header chunk byte 4000 is not zero (the kernel writes zeros after byte 16)' },
      {
        kind: 'no-terminator',
        area: 1,
        entry: 0,
        byteOffset: 258 * 4096,
        message: 'area 1 at chunk 258 lies past the COW end (258 chunks): the table has no terminator',
      },
    ]);
  });
});

test('a header whose chunk size was edited: the chunk size the areas fit is named', async () => {
  const image = kernelCow(8);
  image.bytes.writeUInt32LE(16, 12);
  const problems = await check(image);
  expect(problems.at(-1)).toEqual({
    kind: 'header-area-mismatch',
    byteOffset: 12,
    message:
      "the areas fit chunk size 8 sectors (area 0 at byte 4096 holds 256 entries in the kernel's allocation order), not the header's 16",
  });
  image.bytes.writeUInt32LE(12, 12);
  expect((await check(image)).map((p) => p.kind)).toEqual(['bad-chunk-size', 'header-area-mismatch']);
});

describe('generated damage', () => {
  const bases: [string, () => CowImage][] = [
    ['kernel chunk 8', () => kernelCow(8)],
    ['kernel chunk 16', () => kernelCow(16)],
    ...SYNTHETIC.map((o, i): [string, () => CowImage] => [
      `synthetic ${i} (chunk ${o.chunkSectors}, ${o.exceptions} exceptions)`,
      () => cleanCow(o),
    ]),
  ];
  const PER_BASE = 40;
  let total = 0;
  afterAll(() => expect(total).toBeGreaterThanOrEqual(240));

  test.each(bases)('%s: check finds every injected damage; the loader refuses nothing check passes', async (_name, make) => {
    const base = make();
    const cases = damagedCows(base, PER_BASE, 11);
    expect(cases.length).toBeGreaterThanOrEqual(30);
    total += cases.length;
    const missed: string[] = [];
    for (const c of cases) {
      const problems = await check(c.image);
      if (!problems.some((p) => c.expect.includes(p.kind)))
        missed.push(`${c.name}: got ${problems.map((p) => p.kind).join(', ') || 'nothing'}`);
      let loaderError: unknown;
      try {
        const store = await PersistentStore.open(await deviceOf(c.image), { originSectors: c.image.originSectors });
        expect(store.table.size).toBeGreaterThanOrEqual(0);
      } catch (e) {
        loaderError = e;
      }
      if (loaderError !== undefined) {
        // The loader throws only its documented error, and check always reports what the loader refuses.
        expect(loaderError).toBeInstanceOf(SnapshotError);
        expect(problems.length).toBeGreaterThan(0);
      }
      for (const p of problems) {
        expect(p.byteOffset).toBeGreaterThanOrEqual(0);
        expect(p.message).not.toMatch(/\n/);
      }
    }
    expect(missed).toEqual([]);
  });
});
