import * as fs from 'fs';
import * as path from 'path';
import { MemoryDevice } from '@dmtool/devices';
import { checkCow, CowGeometry, CowProblemKind, planRepair, restoreCow } from '@dmtool/dm-snapshot';
import { removeDir, tempDir } from '../../../test/support/loop';
import { unpackFixture } from '../../../test/support/fixtures';
import { cleanCow, CowImage, damagedCows } from './damage';

let dir: string;
beforeAll(() => {
  dir = tempDir('dmtool-snaprepair-');
});
afterAll(() => removeDir(dir));

async function deviceOf(image: CowImage): Promise<MemoryDevice> {
  const dev = new MemoryDevice(image.bytes.length, { name: 'cow.img' });
  if (image.bytes.length > 0) await dev.write(image.bytes, 0, image.bytes.length, 0);
  return dev;
}

function kernelCow(cs: number): CowImage {
  const sub = fs.mkdtempSync(path.join(dir, 'fx-'));
  const { dir: fx } = unpackFixture(`snapshot-cow-chunk${cs}`, sub);
  const bytes = fs.readFileSync(path.join(fx, 'cow.img'));
  const originSectors = fs.statSync(path.join(fx, 'origin.img')).size / 512;
  fs.rmSync(sub, { recursive: true });
  return { bytes, chunkSectors: cs, originSectors };
}

/** The (old, new) entries of a clean image's table, with their byte offsets. */
function entriesOf(image: CowImage): { old: bigint; new: bigint; at: number }[] {
  const g = new CowGeometry(image.chunkSectors, image.bytes.length / 512);
  const E = g.exceptionsPerArea;
  const out: { old: bigint; new: bigint; at: number }[] = [];
  for (let j = 0; ; j++) {
    const at = g.chunkToByte(g.areaChunk(Math.floor(j / E))) + (j % E) * 16;
    const n = image.bytes.readBigUInt64LE(at + 8);
    if (n === 0n) return out;
    out.push({ old: image.bytes.readBigUInt64LE(at), new: n, at });
  }
}

/**
 * Entries of the clean table that the damage left intact: unchanged at their place, their data chunk still on the
 * device, neither chunk used by another entry of the damaged image, and not after an area the damage zeroed whole
 * (repair takes nothing past an all-zero area: the kernel zeroes areas before use, so what lies beyond is older).
 */
function intactEntries(clean: CowImage, damaged: CowImage): string[] {
  const g = new CowGeometry(clean.chunkSectors, damaged.bytes.length / 512);
  let firstZeroArea = Infinity;
  for (let a = 0; g.areaChunk(a) + 1 <= g.cowChunks; a++) {
    const start = g.chunkToByte(g.areaChunk(a));
    if (damaged.bytes.subarray(start, start + g.chunkBytes).every((b) => b === 0)) {
      firstZeroArea = start;
      break;
    }
  }
  const all = entriesOf(clean).filter((e) => e.at < firstZeroArea);
  const oldUses = new Map<bigint, number>();
  const newUses = new Map<bigint, number>();
  for (const e of all) {
    if (e.at + 16 > damaged.bytes.length) continue;
    const o = damaged.bytes.readBigUInt64LE(e.at);
    const n = damaged.bytes.readBigUInt64LE(e.at + 8);
    oldUses.set(o, (oldUses.get(o) ?? 0) + 1);
    newUses.set(n, (newUses.get(n) ?? 0) + 1);
  }
  return all
    .filter(
      (e) =>
        e.at + 16 <= damaged.bytes.length &&
        damaged.bytes.readBigUInt64LE(e.at) === e.old &&
        damaged.bytes.readBigUInt64LE(e.at + 8) === e.new &&
        Number(e.new) + 1 <= g.cowChunks &&
        oldUses.get(e.old) === 1 &&
        newUses.get(e.new) === 1,
    )
    .map((e) => `${e.old}:${e.new}`);
}

const BASES: [string, () => CowImage][] = [
  ['kernel chunk 8', () => kernelCow(8)],
  ['kernel chunk 16', () => kernelCow(16)],
  ['synthetic chunk 1', () => cleanCow({ chunkSectors: 1, exceptions: 100, originChunks: 5000, spareAreas: 3, seed: 1 })],
  ['synthetic chunk 8', () => cleanCow({ chunkSectors: 8, exceptions: 600, originChunks: 100000, spareAreas: 2, seed: 4 })],
];

/** What may remain after a repair: compaction breaks the allocation order; an invalidated snapshot stays invalid. */
const AFTER_REPAIR: CowProblemKind[] = ['allocation-order', 'invalidated'];

test.each(BASES)('%s: repair keeps every intact exception and leaves a table check passes', async (_name, make) => {
  const base = make();
  const cases = damagedCows(base, 30, 23);
  const failures: string[] = [];
  for (const c of cases) {
    // Truncation to less than a header and an area leaves nothing to repair.
    if (c.image.bytes.length < 2 * c.image.chunkSectors * 512) continue;
    const dev = await deviceOf(c.image);
    const plan = await planRepair(dev, { originSectors: c.image.originSectors, chunkSectors: c.image.chunkSectors });
    const kept = new Set<string>();
    for (let i = 0; i < plan.table.size; i++) kept.add(`${plan.table.oldAt(i)}:${plan.table.newAt(i)}`);
    const lost = intactEntries(base, c.image).filter((e) => !kept.has(e));
    if (lost.length > 0) failures.push(`${c.name}: lost intact ${lost.slice(0, 3).join(', ')}`);
    await restoreCow(dev, plan);
    const problems: CowProblemKind[] = [];
    await checkCow(dev, { originSectors: c.image.originSectors, onProblem: (p) => void problems.push(p.kind) });
    const left = problems.filter((k) => !AFTER_REPAIR.includes(k));
    if (left.length > 0) failures.push(`${c.name}: after repair ${left.join(', ')}`);
  }
  expect(failures).toEqual([]);
});

test('a clean COW: nothing dropped, the same table', async () => {
  const image = kernelCow(8);
  const dev = await deviceOf(image);
  const plan = await planRepair(dev);
  expect([plan.found, plan.dropped, plan.recovered, plan.table.size, plan.areas]).toEqual([310, 0, 0, 310, 2]);
});

test('a zeroed entry in the middle: the entries after it are recovered, the hole is closed', async () => {
  const image = kernelCow(8);
  image.bytes.fill(0, 4096 + 100 * 16, 4096 + 101 * 16);
  const plan = await planRepair(await deviceOf(image));
  expect([plan.found, plan.dropped, plan.recovered, plan.table.size]).toEqual([309, 0, 209, 309]);
});
