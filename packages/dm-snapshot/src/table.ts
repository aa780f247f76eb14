/**
 * The in-memory exception table: old_chunk → new_chunk, kept in commit
 * (on-disk) order. Entries live in two Float64Arrays (chunk numbers up to
 * 2^53 are exact) and are found through an open-addressing hash of 32-bit
 * indexes with linear probing. About 24–40 bytes per exception, no JS object
 * per chunk: a million exceptions take well under 64 MiB.
 *
 * Entries are appended at the tail and removed from the tail only, which is
 * all the kernel's store does (commit appends, merge retires the tail).
 */
const EMPTY = -1;
const TWO32 = 4294967296;

export class ExceptionTable {
  private olds: Float64Array;
  private news: Float64Array;
  private count = 0;
  private slots: Int32Array;
  private mask: number;

  constructor(initialCapacity = 1024) {
    const cap = Math.max(16, initialCapacity);
    this.olds = new Float64Array(cap);
    this.news = new Float64Array(cap);
    const slotCount = nextPow2(cap * 2);
    this.slots = new Int32Array(slotCount).fill(EMPTY);
    this.mask = slotCount - 1;
  }

  get size(): number {
    return this.count;
  }

  /** Bytes held by the typed arrays. */
  get memoryBytes(): number {
    return this.olds.byteLength + this.news.byteLength + this.slots.byteLength;
  }

  oldAt(index: number): number {
    return this.olds[index];
  }

  newAt(index: number): number {
    return this.news[index];
  }

  has(oldChunk: number): boolean {
    return this.indexOf(oldChunk) >= 0;
  }

  /** new_chunk for `oldChunk`, or -1 when the chunk has no exception. */
  lookup(oldChunk: number): number {
    const i = this.indexOf(oldChunk);
    return i < 0 ? -1 : this.news[i];
  }

  /** Table index of `oldChunk`, or -1. */
  indexOf(oldChunk: number): number {
    for (let s = this.home(oldChunk); ; s = (s + 1) & this.mask) {
      const i = this.slots[s];
      if (i === EMPTY) return -1;
      if (this.olds[i] === oldChunk) return i;
    }
  }

  /** Append an exception; returns false (and changes nothing) if `oldChunk` already has one. */
  append(oldChunk: number, newChunk: number): boolean {
    if (this.count === this.olds.length) this.growEntries();
    if ((this.count + 1) * 2 > this.slots.length) this.rehash(this.slots.length * 2);
    let s = this.home(oldChunk);
    for (; ; s = (s + 1) & this.mask) {
      const i = this.slots[s];
      if (i === EMPTY) break;
      if (this.olds[i] === oldChunk) return false;
    }
    const index = this.count++;
    this.olds[index] = oldChunk;
    this.news[index] = newChunk;
    this.slots[s] = index;
    return true;
  }

  /** Remove the last entry. */
  pop(): void {
    if (this.count === 0) throw new RangeError('exception table is empty');
    const index = this.count - 1;
    let s = this.home(this.olds[index]);
    while (this.slots[s] !== index) s = (s + 1) & this.mask;
    this.deleteSlot(s);
    this.count--;
  }

  clear(): void {
    this.count = 0;
    this.slots.fill(EMPTY);
  }

  private home(key: number): number {
    const lo = key >>> 0;
    const hi = (key / TWO32) >>> 0;
    let h = Math.imul(lo ^ Math.imul(hi, 0x9e3779b1), 0x85ebca6b);
    h ^= h >>> 13;
    h = Math.imul(h, 0xc2b2ae35);
    h ^= h >>> 16;
    return h & this.mask;
  }

  // Backward-shift deletion keeps probe chains intact without tombstones.
  private deleteSlot(hole: number): void {
    const mask = this.mask;
    let i = hole;
    let j = hole;
    for (;;) {
      j = (j + 1) & mask;
      const idx = this.slots[j];
      if (idx === EMPTY) break;
      const k = this.home(this.olds[idx]);
      const between = i <= j ? i < k && k <= j : i < k || k <= j;
      if (!between) {
        this.slots[i] = idx;
        i = j;
      }
    }
    this.slots[i] = EMPTY;
  }

  private growEntries(): void {
    const cap = this.olds.length * 2;
    const olds = new Float64Array(cap);
    olds.set(this.olds.subarray(0, this.count));
    const news = new Float64Array(cap);
    news.set(this.news.subarray(0, this.count));
    this.olds = olds;
    this.news = news;
  }

  private rehash(slotCount: number): void {
    this.slots = new Int32Array(slotCount).fill(EMPTY);
    this.mask = slotCount - 1;
    for (let index = 0; index < this.count; index++) {
      let s = this.home(this.olds[index]);
      while (this.slots[s] !== EMPTY) s = (s + 1) & this.mask;
      this.slots[s] = index;
    }
  }
}

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}
