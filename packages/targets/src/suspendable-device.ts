import { DeviceDecorator, WriteOptions } from '@dmtool/devices';

/**
 * A device that can be suspended as device-mapper suspends a mapped device:
 * requests that arrive while it is suspended wait, those already running
 * finish, then the device is flushed. Resuming lets the waiting requests
 * through in arrival order.
 */
export class SuspendableDevice extends DeviceDecorator {
  private inFlight = 0;
  private idleWaiters: (() => void)[] = [];
  private gate?: { opened: Promise<void>; open: () => void };

  get suspended(): boolean {
    return this.gate !== undefined;
  }

  /** Requests running in the device underneath. */
  get requestsInFlight(): number {
    return this.inFlight;
  }

  /**
   * Hold new requests, wait for the running ones, flush the device (when it
   * is writable). Resolves once all that is done; suspending twice is the
   * same as once.
   */
  async suspend(): Promise<void> {
    if (!this.gate) {
      let open!: () => void;
      const opened = new Promise<void>((resolve) => (open = resolve));
      this.gate = { opened, open };
    }
    if (this.inFlight > 0) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    if (this.inner.writable) await this.inner.flush();
  }

  resume(): void {
    const g = this.gate;
    this.gate = undefined;
    g?.open();
  }

  override read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    return this.pass(() => this.inner.read(buf, bufOffset, bytes, byteOffset));
  }
  override write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, opts?: WriteOptions): Promise<void> {
    return this.pass(() => this.inner.write(buf, bufOffset, bytes, byteOffset, opts));
  }
  override flush(): Promise<void> {
    return this.pass(() => this.inner.flush());
  }
  override zeroRange(byteOffset: number, bytes: number, opts?: WriteOptions): Promise<void> {
    return this.pass(() => this.inner.zeroRange(byteOffset, bytes, opts));
  }
  override discard(byteOffset: number, bytes: number): Promise<void> {
    return this.pass(() => this.inner.discard(byteOffset, bytes));
  }

  private async pass(work: () => Promise<void>): Promise<void> {
    // A resume may be followed by another suspend before this request runs: look again.
    while (this.gate) await this.gate.opened;
    this.inFlight++;
    try {
      await work();
    } finally {
      if (--this.inFlight === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }
}
