import { MemoryDevice } from '@dmtool/devices';
import { SuspendableDevice } from '@dmtool/targets';

/** A memory device whose writes finish only when released, and which counts flushes. */
class SlowDevice extends MemoryDevice {
  flushes = 0;
  private releases: (() => void)[] = [];
  override async write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    await new Promise<void>((resolve) => this.releases.push(resolve));
    await super.write(buf, bufOffset, bytes, byteOffset);
  }
  override async flush(): Promise<void> {
    this.flushes++;
    await super.flush();
  }
  release(): void {
    for (const r of this.releases.splice(0)) r();
  }
  get held(): number {
    return this.releases.length;
  }
}

const tick = () => new Promise((r) => setTimeout(r, 10));

describe('SuspendableDevice', () => {
  test('suspend waits for the write in flight, then flushes; later requests wait for resume', async () => {
    const inner = new SlowDevice(1 << 20);
    const d = new SuspendableDevice(inner);
    const first = d.write(Buffer.alloc(512, 1), 0, 512, 0);
    await tick();
    let suspended = false;
    const suspending = d.suspend().then(() => (suspended = true));
    await tick();
    expect({ suspended, inFlight: d.requestsInFlight, flushes: inner.flushes }).toEqual({ suspended: false, inFlight: 1, flushes: 0 });
    inner.release();
    await first;
    await suspending;
    expect({ suspended: d.suspended, flushes: inner.flushes }).toEqual({ suspended: true, flushes: 1 });
    let read = false;
    const reading = d.read(Buffer.alloc(512), 0, 512, 0).then(() => (read = true));
    const second = d.write(Buffer.alloc(512, 2), 0, 512, 512);
    await tick();
    expect({ read, held: inner.held, inFlight: d.requestsInFlight }).toEqual({ read: false, held: 0, inFlight: 0 });
    d.resume();
    await reading;
    await tick();
    expect(inner.held).toBe(1);
    inner.release();
    await second;
    const seen = Buffer.alloc(1024);
    await inner.read(seen, 0, 1024, 0);
    expect(seen.equals(Buffer.concat([Buffer.alloc(512, 1), Buffer.alloc(512, 2)]))).toBe(true);
  });
});
