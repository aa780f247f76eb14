/**
 * A volatile write cache, for crash tests: writes stay in memory until the
 * device is flushed, as in a disk's cache, so a SIGKILL loses everything
 * not yet flushed (the page cache survives a killed process; a power cut
 * does not). A flush applies the cached writes in a chosen order, so a kill
 * in the middle of a flush can persist a later write without an earlier one.
 */
export class WriteCache {
  private entries: { byteOffset: number; data: Buffer }[] = [];

  get size(): number {
    return this.entries.length;
  }

  add(byteOffset: number, data: Buffer): void {
    this.entries.push({ byteOffset, data: Buffer.from(data) });
  }

  /** Lay the cached writes over what was read from the device. */
  overlay(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): void {
    const end = byteOffset + bytes;
    for (const e of this.entries) {
      const from = Math.max(byteOffset, e.byteOffset);
      const to = Math.min(end, e.byteOffset + e.data.length);
      if (from < to) e.data.copy(buf, bufOffset + (from - byteOffset), from - e.byteOffset, to - e.byteOffset);
    }
  }

  /** Remove and return the cached writes, in the order a flush applies them. */
  take(order: 'fifo' | 'reverse'): { byteOffset: number; data: Buffer }[] {
    const out = this.entries;
    this.entries = [];
    return order === 'reverse' ? out.reverse() : out;
  }
}
