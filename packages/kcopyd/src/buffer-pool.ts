import { allocBuffer } from '@dmtool/native';

/**
 * Buffers reserved up front, so a copy never allocates while it runs: a
 * sub-job waits (FIFO) for a free buffer instead. Memory use is
 * count × bytes, whatever the size of the devices.
 */
export class BufferPool {
  readonly bufferBytes: number;
  readonly count: number;
  private free: Buffer[] = [];
  /** Served first come, first served: a pair waits until two buffers are free at once, so it never holds one while waiting. */
  private waiters: { count: 1 | 2; take: (bufs: Buffer[]) => void }[] = [];

  constructor(count: number, bufferBytes: number) {
    this.count = count;
    this.bufferBytes = bufferBytes;
    for (let i = 0; i < count; i++) this.free.push(allocBuffer(bufferBytes));
  }

  get available(): number {
    return this.free.length;
  }

  acquire(): Promise<Buffer> {
    return this.take(1).then((bufs) => bufs[0]);
  }

  /** Two buffers at once (a reader fills one while the other is written); needs a pool of at least two. */
  acquirePair(): Promise<[Buffer, Buffer]> {
    if (this.count < 2) return Promise.reject(new RangeError(`a pool of ${this.count} buffer cannot lend two at once`));
    return this.take(2).then((bufs) => [bufs[0], bufs[1]]);
  }

  release(b: Buffer): void {
    this.free.push(b);
    while (this.waiters.length > 0 && this.free.length >= this.waiters[0].count) {
      const w = this.waiters.shift()!;
      w.take(this.free.splice(this.free.length - w.count, w.count));
    }
  }

  private take(count: 1 | 2): Promise<Buffer[]> {
    if (this.waiters.length === 0 && this.free.length >= count) return Promise.resolve(this.free.splice(this.free.length - count, count));
    return new Promise((resolve) => this.waiters.push({ count, take: resolve }));
  }
}
