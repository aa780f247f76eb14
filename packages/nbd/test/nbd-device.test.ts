/**
 * NbdDevice against this package's own server in process (real unix
 * socket, memory device behind it): the bound on requests in flight, and
 * replies that come back out of order.
 */
import { MemoryDevice } from '@dmtool/devices';
import { ExportTable, NbdDevice, NbdServer } from '@dmtool/nbd';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

jest.setTimeout(20000);

/** Holds every write until released, counting how many are held at once. */
class HoldingDevice extends MemoryDevice {
  held = 0;
  mostHeld = 0;
  private waiters: (() => void)[] = [];
  holding = true;

  releaseAll(): void {
    this.holding = false;
    for (const w of this.waiters.splice(0)) w();
  }

  /** Release the newest held write first, so replies go out in reverse order. */
  releaseNewest(): void {
    this.waiters.pop()?.();
  }

  override async write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    if (this.holding) {
      this.held++;
      this.mostHeld = Math.max(this.mostHeld, this.held);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
      this.held--;
    }
    await super.write(buf, bufOffset, bytes, byteOffset);
  }
}

let dir: string;
let server: NbdServer | undefined;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-nbd-dev-'));
});
afterEach(async () => {
  await server?.close();
  server = undefined;
  fs.rmSync(dir, { recursive: true, force: true });
});

async function serve(device: MemoryDevice): Promise<string> {
  const table = new ExportTable();
  table.add('disk', device);
  server = new NbdServer(table);
  const socketPath = path.join(dir, 'nbd.sock');
  await server.listen({ socketPath });
  return `nbd+unix:///disk?socket=${socketPath}`;
}

const waitUntil = async (cond: () => boolean) => {
  for (let i = 0; i < 250 && !cond(); i++) await new Promise((r) => setTimeout(r, 20));
  expect(cond()).toBe(true);
};

test('at most maxInFlight requests are on the wire; the rest wait and follow in order', async () => {
  const dev = new HoldingDevice(1 << 20);
  const uri = await serve(dev);
  const d = await NbdDevice.open(uri, { write: true, maxInFlight: 4 });
  try {
    const data = Buffer.alloc(65536, 0x5a);
    const writes = Array.from({ length: 12 }, (_, i) => d.write(data, i * 4096, 4096, i * 4096));
    await waitUntil(() => dev.held === 4);
    await new Promise((r) => setTimeout(r, 200));
    expect([dev.held, dev.mostHeld]).toEqual([4, 4]);
    dev.releaseAll();
    await Promise.all(writes);
    expect(dev.mostHeld).toBe(4);
    const back = Buffer.alloc(12 * 4096);
    await d.read(back, 0, back.length, 0);
    expect(back.equals(Buffer.alloc(12 * 4096, 0x5a))).toBe(true);
  } finally {
    d.close();
  }
});

test('replies out of order complete the right requests', async () => {
  const dev = new HoldingDevice(1 << 20);
  const uri = await serve(dev);
  const d = await NbdDevice.open(uri, { write: true, maxInFlight: 8 });
  try {
    const done: number[] = [];
    const writes = [0, 1, 2].map((i) =>
      d.write(Buffer.alloc(4096, i + 1), 0, 4096, i * 4096).then(() => {
        done.push(i);
      }),
    );
    await waitUntil(() => dev.held === 3);
    for (let i = 0; i < 3; i++) {
      dev.releaseNewest();
      await waitUntil(() => done.length === i + 1);
    }
    await Promise.all(writes);
    expect(done).toEqual([2, 1, 0]);
    const back = Buffer.alloc(3 * 4096);
    await d.read(back, 0, back.length, 0);
    expect([back[0], back[4096], back[8192]]).toEqual([1, 2, 3]);
  } finally {
    d.close();
  }
});
