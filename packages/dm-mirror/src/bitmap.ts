/**
 * A bitmap laid out as the kernel's dm-log bitsets: ceil(bits / 32) 32-bit
 * little-endian words, so bit i lives in byte i >> 3 under mask 1 << (i & 7).
 * Bits from `bits` up to the next multiple of 32 (the surplus) are kept 0.
 */
export class Bitmap {
  readonly bits: number;
  readonly bytes: Uint8Array;

  /** Bytes the kernel uses for `bits` bits: whole 32-bit words. */
  static byteLength(bits: number): number {
    return Math.ceil(bits / 32) * 4;
  }

  constructor(bits: number, storage?: Uint8Array) {
    if (!Number.isSafeInteger(bits) || bits < 0) throw new RangeError(`invalid bitmap size ${bits}`);
    this.bits = bits;
    const need = Bitmap.byteLength(bits);
    if (storage) {
      if (storage.length < need) throw new RangeError(`bitmap storage of ${storage.length} bytes is too small for ${bits} bits`);
      this.bytes = storage.subarray(0, need);
    } else {
      this.bytes = new Uint8Array(need);
    }
  }

  private check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.bits) throw new RangeError(`bit ${i} is outside 0..${this.bits - 1}`);
  }

  get(i: number): boolean {
    this.check(i);
    return (this.bytes[i >> 3] & (1 << (i & 7))) !== 0;
  }

  /** Set bit i to v; true when the bit changed. */
  assign(i: number, v: boolean): boolean {
    this.check(i);
    const mask = 1 << (i & 7);
    const was = (this.bytes[i >> 3] & mask) !== 0;
    if (v) this.bytes[i >> 3] |= mask;
    else this.bytes[i >> 3] &= ~mask;
    return was !== v;
  }

  set(i: number): boolean {
    return this.assign(i, true);
  }

  clear(i: number): boolean {
    return this.assign(i, false);
  }

  /** Every bit in 0..bits-1 to v; surplus bits stay 0. */
  fill(v: boolean): void {
    this.bytes.fill(v ? 0xff : 0);
    if (v) this.clearSurplus();
  }

  /** Set bits [from, to) to v. */
  fillRange(from: number, to: number, v: boolean): void {
    for (let i = from; i < Math.min(to, this.bits); i++) this.assign(i, v);
  }

  /** Zero the bits from `bits` to the end of the last word. */
  clearSurplus(): void {
    for (let i = this.bits; i < this.bytes.length * 8; i++) this.bytes[i >> 3] &= ~(1 << (i & 7));
  }

  /** True when some surplus bit is set. */
  hasSurplusBits(): boolean {
    for (let i = this.bits; i < this.bytes.length * 8; i++) if (this.bytes[i >> 3] & (1 << (i & 7))) return true;
    return false;
  }

  count(): number {
    let n = 0;
    const fullBytes = this.bits >> 3;
    for (let b = 0; b < fullBytes; b++) n += POPCOUNT[this.bytes[b]];
    for (let i = fullBytes * 8; i < this.bits; i++) if (this.get(i)) n++;
    return n;
  }

  /** First clear bit at or after `from`, or `bits` when there is none. */
  nextZero(from = 0): number {
    let i = Math.max(0, from);
    while (i < this.bits) {
      if ((i & 7) === 0 && this.bytes[i >> 3] === 0xff && i + 8 <= this.bits) {
        i += 8;
        continue;
      }
      if (!this.get(i)) return i;
      i++;
    }
    return this.bits;
  }

  /** Indices of the clear bits. */
  zeros(): number[] {
    const out: number[] = [];
    for (let i = this.nextZero(0); i < this.bits; i = this.nextZero(i + 1)) out.push(i);
    return out;
  }

  copyFrom(other: Bitmap): void {
    if (other.bits !== this.bits) throw new RangeError(`bitmap sizes differ (${other.bits} vs ${this.bits})`);
    this.bytes.set(other.bytes);
  }
}

const POPCOUNT = new Uint8Array(256);
for (let i = 0; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >> 1];
