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
  private waiters: ((b: Buffer) => void)[] = [];

  constructor(count: number, bufferBytes: number) {
    this.count = count;
    this.bufferBytes = bufferBytes;
    for (let i = 0; i < count; i++) this.free.push(allocBuffer(bufferBytes));
  }

  get available(): number {
    return this.free.length;
  }

  acquire(): Promise<Buffer> {
    const b = this.free.pop();
    if (b) return Promise.resolve(b);
    return new Promise((resolve) => this.waiters.push(resolve));
  }

  release(b: Buffer): void {
    const next = this.waiters.shift();
    if (next) next(b);
    else this.free.push(b);
  }
}
