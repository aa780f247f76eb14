import { CowGeometry, CowProblemKind, encodeEntry, encodeHeader, ENTRY_BYTES } from '@dmtool/dm-snapshot';

/**
 * Damaged COWs for the checker's tests, made from clean COW images by one
 * deterministic damage each (the seed picks where and what). Every damage
 * says which problem kinds `checkCow` may report for it: at least one of
 * them must be.
 */
export interface CowImage {
  bytes: Buffer;
  chunkSectors: number;
  /** Origin size the entries were made for. */
  originSectors: number;
}

export interface Damaged {
  name: string;
  image: CowImage;
  /** checkCow must report at least one problem of these kinds. */
  expect: CowProblemKind[];
}

/** A small deterministic PRNG (mulberry32): the same seed gives the same damage. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function int(rand: () => number, n: number): number {
  return Math.floor(rand() * n);
}

/**
 * A clean COW as the kernel writes it on a zeroed device: `exceptions`
 * entries of distinct random origin chunks, in allocation order, and
 * `spareAreas` areas of room after the table's last area.
 */
export function cleanCow(o: {
  chunkSectors: number;
  exceptions: number;
  originChunks: number;
  spareAreas: number;
  seed: number;
}): CowImage {
  const rand = prng(o.seed);
  const probe = new CowGeometry(o.chunkSectors, 0);
  const E = probe.exceptionsPerArea;
  const lastArea = Math.floor(o.exceptions / E);
  const cowChunks = probe.areaChunk(lastArea + o.spareAreas) + 1 + int(rand, E);
  const g = new CowGeometry(o.chunkSectors, cowChunks * o.chunkSectors);
  const bytes = Buffer.alloc(g.chunkBytes * cowChunks);
  encodeHeader(bytes.subarray(0, g.chunkBytes), { valid: true, chunkSectors: o.chunkSectors });
  const used = new Set<number>();
  for (let j = 0; j < o.exceptions; j++) {
    let old: number;
    do old = int(rand, o.originChunks);
    while (used.has(old));
    used.add(old);
    const area = Math.floor(j / E);
    encodeEntry(bytes.subarray(g.chunkToByte(g.areaChunk(area))), j % E, old, g.dataChunkOfIndex(j));
  }
  return { bytes, chunkSectors: o.chunkSectors, originSectors: o.originChunks * o.chunkSectors };
}

interface Layout {
  g: CowGeometry;
  exceptions: number;
  lastArea: number;
}

/** The table's shape as a reader finds it (the image is clean). */
function layout(image: CowImage): Layout {
  const g = new CowGeometry(image.chunkSectors, image.bytes.length / 512);
  const E = g.exceptionsPerArea;
  let j = 0;
  for (;;) {
    const at = g.chunkToByte(g.areaChunk(Math.floor(j / E))) + (j % E) * ENTRY_BYTES;
    if (image.bytes.readBigUInt64LE(at + 8) === 0n) break;
    j++;
  }
  return { g, exceptions: j, lastArea: Math.floor(j / E) };
}

function entryByte(l: Layout, j: number): number {
  const E = l.g.exceptionsPerArea;
  return l.g.chunkToByte(l.g.areaChunk(Math.floor(j / E))) + (j % E) * ENTRY_BYTES;
}

function copyOf(image: CowImage, bytes = Buffer.from(image.bytes)): CowImage {
  return { ...image, bytes };
}

type Damage = (image: CowImage, rand: () => number) => Damaged | undefined;

const headerByte: Damage = (image, rand) => {
  const l = layout(image);
  const out = copyOf(image);
  const at = rand() < 0.6 ? int(rand, 16) : 16 + int(rand, l.g.chunkBytes - 16);
  out.bytes[at] ^= 1 << int(rand, 8);
  const expect: CowProblemKind[] =
    at < 4
      ? ['bad-magic']
      : at < 8
        ? ['invalidated', 'bad-valid-flag']
        : at < 12
          ? ['bad-version']
          : at < 16
            ? ['bad-chunk-size']
            : ['header-padding'];
  return { name: `flip a bit of header byte ${at}`, image: out, expect };
};

const zeroArea: Damage = (image, rand) => {
  const l = layout(image);
  // Zeroing the last area drops entries no reader can miss; zero one that has a non-empty area after it.
  const lastNonEmpty = l.exceptions % l.g.exceptionsPerArea === 0 ? l.lastArea - 1 : l.lastArea;
  if (lastNonEmpty < 1) return undefined;
  const area = int(rand, lastNonEmpty);
  const out = copyOf(image);
  out.bytes.fill(0, l.g.chunkToByte(l.g.areaChunk(area)), l.g.chunkToByte(l.g.areaChunk(area) + 1));
  return { name: `zero area ${area}`, image: out, expect: ['stale-area'] };
};

const corruptNewChunk: Damage = (image, rand) => {
  const l = layout(image);
  if (l.exceptions === 0) return undefined;
  const j = int(rand, l.exceptions);
  const at = entryByte(l, j) + 8;
  const out = copyOf(image);
  const old = out.bytes.readBigUInt64LE(at);
  let value: bigint;
  do value = rand() < 0.5 ? BigInt(1 + int(rand, l.g.cowChunks + 64)) : BigInt(1 + int(rand, 2 ** 30)) * BigInt(1 + int(rand, 2 ** 30));
  while (value === old);
  out.bytes.writeBigUInt64LE(value, at);
  return {
    name: `entry ${j}: new_chunk ${old} → ${value}`,
    image: out,
    expect: ['entry-past-cow-end', 'entry-in-metadata', 'duplicate-new-chunk', 'allocation-order'],
  };
};

const oldPastOrigin: Damage = (image, rand) => {
  const l = layout(image);
  if (l.exceptions === 0) return undefined;
  const j = int(rand, l.exceptions);
  const out = copyOf(image);
  const originChunks = image.originSectors / image.chunkSectors;
  out.bytes.writeBigUInt64LE(BigInt(originChunks + int(rand, 2 ** 31)), entryByte(l, j));
  return { name: `entry ${j}: old_chunk past the origin`, image: out, expect: ['entry-past-origin-end', 'duplicate-old-chunk'] };
};

const duplicateEntry: Damage = (image, rand) => {
  const l = layout(image);
  if (l.exceptions < 2) return undefined;
  const a = int(rand, l.exceptions);
  let b = int(rand, l.exceptions - 1);
  if (b >= a) b++;
  const out = copyOf(image);
  out.bytes.copy(out.bytes, entryByte(l, b), entryByte(l, a), entryByte(l, a) + ENTRY_BYTES);
  return { name: `entry ${b} := entry ${a}`, image: out, expect: ['duplicate-old-chunk'] };
};

const duplicateOld: Damage = (image, rand) => {
  const l = layout(image);
  if (l.exceptions < 2) return undefined;
  const a = int(rand, l.exceptions);
  let b = int(rand, l.exceptions - 1);
  if (b >= a) b++;
  const out = copyOf(image);
  out.bytes.copy(out.bytes, entryByte(l, b), entryByte(l, a), entryByte(l, a) + 8);
  return { name: `entry ${b} takes the old_chunk of entry ${a}`, image: out, expect: ['duplicate-old-chunk'] };
};

const swapNew: Damage = (image, rand) => {
  const l = layout(image);
  if (l.exceptions < 2) return undefined;
  const a = int(rand, l.exceptions);
  let b = int(rand, l.exceptions - 1);
  if (b >= a) b++;
  const out = copyOf(image);
  const na = out.bytes.readBigUInt64LE(entryByte(l, a) + 8);
  out.bytes.writeBigUInt64LE(out.bytes.readBigUInt64LE(entryByte(l, b) + 8), entryByte(l, a) + 8);
  out.bytes.writeBigUInt64LE(na, entryByte(l, b) + 8);
  return { name: `swap the new_chunks of entries ${a} and ${b}`, image: out, expect: ['allocation-order'] };
};

const truncate: Damage = (image, rand) => {
  const l = layout(image);
  const lastUsed =
    l.exceptions === 0 ? l.g.areaChunk(l.lastArea) : Math.max(l.g.areaChunk(l.lastArea), l.g.dataChunkOfIndex(l.exceptions - 1));
  // Cut somewhere inside the last chunk in use, or before it: a whole number of sectors.
  const sectors = int(rand, (lastUsed + 1) * image.chunkSectors);
  const out = copyOf(image, Buffer.from(image.bytes.subarray(0, sectors * 512)));
  return { name: `truncate to ${sectors} sectors`, image: out, expect: ['no-terminator', 'entry-past-cow-end', 'cow-too-small'] };
};

const staleAfterTerminator: Damage = (image, rand) => {
  const l = layout(image);
  const E = l.g.exceptionsPerArea;
  const out = copyOf(image);
  const slots = E - (l.exceptions % E);
  const j = l.exceptions + int(rand, slots);
  // In the terminator itself only its old_chunk: a non-zero new_chunk would make it an entry.
  const at = entryByte(l, j) + int(rand, j === l.exceptions ? 8 : ENTRY_BYTES);
  out.bytes[at] = 1 + int(rand, 255);
  return { name: `stale byte in entry ${j} after the terminator`, image: out, expect: ['stale-after-terminator'] };
};

const staleArea: Damage = (image, rand) => {
  const l = layout(image);
  const areas = Math.floor((l.g.cowChunks - 1 - 1) / l.g.stride) + 1;
  if (areas <= l.lastArea + 1) return undefined;
  const area = l.lastArea + 1 + int(rand, areas - l.lastArea - 1);
  const out = copyOf(image);
  const slot = int(rand, l.g.exceptionsPerArea);
  encodeEntry(out.bytes.subarray(l.g.chunkToByte(l.g.areaChunk(area))), slot, 1 + int(rand, 1000), 2 + int(rand, 1000));
  return { name: `stale entry ${slot} in area ${area} after the table`, image: out, expect: ['stale-area'] };
};

const zeroEntry: Damage = (image, rand) => {
  const l = layout(image);
  if (l.exceptions < 2) return undefined;
  // Not the last entry: zeroing that one is a shorter, valid table.
  const j = int(rand, l.exceptions - 1);
  const out = copyOf(image);
  out.bytes.fill(0, entryByte(l, j), entryByte(l, j) + ENTRY_BYTES);
  return { name: `zero entry ${j}`, image: out, expect: ['stale-after-terminator', 'stale-area'] };
};

const chunkSizeEdit: Damage = (image, rand) => {
  const l = layout(image);
  if (l.exceptions === 0) return undefined;
  const other = image.chunkSectors > 1 && rand() < 0.5 ? image.chunkSectors / 2 : image.chunkSectors * 2;
  const out = copyOf(image);
  out.bytes.writeUInt32LE(other, 12);
  return { name: `header chunk size ${image.chunkSectors} → ${other}`, image: out, expect: ['header-area-mismatch'] };
};

export const DAMAGES: Record<string, Damage> = {
  headerByte,
  chunkSizeEdit,
  zeroArea,
  corruptNewChunk,
  oldPastOrigin,
  duplicateEntry,
  duplicateOld,
  swapNew,
  truncate,
  staleAfterTerminator,
  staleArea,
  zeroEntry,
};

/** `count` damaged images from `base`, cycling through the damages, seeded from `seed`. */
export function damagedCows(base: CowImage, count: number, seed: number): Damaged[] {
  const names = Object.keys(DAMAGES);
  const out: Damaged[] = [];
  for (let i = 0; out.length < count && i < count * 4; i++) {
    const name = names[i % names.length];
    const d = DAMAGES[name](base, prng(seed * 7919 + i));
    if (d) out.push({ ...d, name: `${name}: ${d.name}` });
  }
  return out;
}
