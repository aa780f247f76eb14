/**
 * A count of bytes that unfinished requests may hold (write payloads
 * received, read data not yet handed to the socket). `acquire` waits, in
 * arrival order, until the bytes are free, so a client that sends faster
 * than the devices complete stops being read instead of growing memory.
 * A connection's budget draws on the server's shared one as well: its
 * bytes count against both, so all connections together stay within the
 * server's.
 */
export class ByteBudget {
  private usedBytes = 0;
  private readonly waiters: { bytes: number; resolve: () => void }[] = [];

  constructor(
    readonly limitBytes: number,
    private readonly shared?: ByteBudget,
  ) {
    if (!Number.isSafeInteger(limitBytes) || limitBytes <= 0) throw new RangeError(`invalid byte budget ${limitBytes}`);
    if (shared && limitBytes > shared.limitBytes) throw new RangeError(`byte budget ${limitBytes} exceeds the shared ${shared.limitBytes}`);
  }

  async acquire(bytes: number): Promise<void> {
    await this.acquireOwn(bytes);
    if (this.shared) await this.shared.acquire(bytes);
  }

  release(bytes: number): void {
    this.releaseOwn(bytes);
    this.shared?.release(bytes);
  }

  private acquireOwn(bytes: number): Promise<void> {
    if (bytes > this.limitBytes) return Promise.reject(new RangeError(`${bytes} bytes exceed the ${this.limitBytes}-byte budget`));
    if (this.waiters.length === 0 && this.usedBytes + bytes <= this.limitBytes) {
      this.usedBytes += bytes;
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiters.push({ bytes, resolve }));
  }

  private releaseOwn(bytes: number): void {
    this.usedBytes -= bytes;
    if (this.usedBytes < 0) throw new Error('ByteBudget released more than it gave');
    while (this.waiters.length > 0 && this.usedBytes + this.waiters[0].bytes <= this.limitBytes) {
      const w = this.waiters.shift()!;
      this.usedBytes += w.bytes;
      w.resolve();
    }
  }
}
