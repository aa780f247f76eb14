/**
 * Counts I/O in flight per chunk, and lets a writer wait until none is left
 * on the chunks it is about to change (the kernel's track_chunk and
 * __check_for_conflicting_io in dm-snap.c).
 */
export class ChunkTracker {
  private readonly counts = new Map<number, number>();
  private waiters: { chunks: readonly number[]; resolve: () => void }[] = [];

  add(chunks: readonly number[]): void {
    for (const c of chunks) this.counts.set(c, (this.counts.get(c) ?? 0) + 1);
  }

  remove(chunks: readonly number[]): void {
    for (const c of chunks) {
      const n = (this.counts.get(c) ?? 0) - 1;
      if (n > 0) this.counts.set(c, n);
      else this.counts.delete(c);
    }
    if (this.waiters.length === 0) return;
    const still: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (this.busy(w.chunks)) still.push(w);
      else w.resolve();
    }
    this.waiters = still;
  }

  /** Chunks with I/O in flight. */
  get size(): number {
    return this.counts.size;
  }

  busy(chunks: readonly number[]): boolean {
    return chunks.some((c) => this.counts.has(c));
  }

  /** Resolves once no I/O tracked on any of `chunks` is in flight. */
  drain(chunks: readonly number[]): Promise<void> {
    if (!this.busy(chunks)) return Promise.resolve();
    return new Promise((resolve) => this.waiters.push({ chunks, resolve }));
  }
}
