import { DeviceDecorator, MemoryDevice } from '@dmtool/devices';
import { Origin, PersistentStore, Snapshot } from '@dmtool/dm-snapshot';
import { SnapshotMergeDevice } from '@dmtool/targets';

const CHUNK_BYTES = 4096;

/** A COW whose reads of one byte range wait until released: the merge's copy of that batch stays under way. */
class HeldReads extends DeviceDecorator {
  held = 0;
  private releases: (() => void)[] = [];
  constructor(
    inner: MemoryDevice,
    private readonly heldByteOffset: number,
  ) {
    super(inner);
  }
  override async read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    if (byteOffset <= this.heldByteOffset && this.heldByteOffset < byteOffset + bytes) {
      this.held++;
      await new Promise<void>((resolve) => this.releases.push(resolve));
    }
    await super.read(buf, bufOffset, bytes, byteOffset);
  }
  release(): void {
    for (const r of this.releases.splice(0)) r();
  }
}

const tick = () => new Promise((r) => setTimeout(r, 20));

async function chunkOf(d: { read(b: Buffer, o: number, n: number, at: number): Promise<void> }, chunk: number): Promise<Buffer> {
  const b = Buffer.alloc(CHUNK_BYTES);
  await d.read(b, 0, CHUNK_BYTES, chunk * CHUNK_BYTES);
  return b;
}

describe('SnapshotMergeDevice', () => {
  test('a write to the batch being merged waits for it, then reaches the origin; a write to a chunk still in the COW goes to its COW chunk', async () => {
    const originDev = new MemoryDevice(1 << 20, { name: 'origin' });
    await originDev.write(Buffer.alloc(1 << 20, 0x0f), 0, 1 << 20, 0);
    const cowDev = new MemoryDevice(1 << 20, { name: 'cow' });
    // Snapshot writes to chunks 10, 11 (COW chunks 2, 3: one run) and 20 (COW chunk 4: the tail, merged first).
    const o = new Origin(originDev);
    const snap = await Snapshot.create(o, cowDev, { chunkSectors: 8 });
    for (const [chunk, byte] of [
      [10, 0x10],
      [11, 0x11],
      [20, 0x20],
    ])
      await snap.write(Buffer.alloc(CHUNK_BYTES, byte), chunk * 8);
    snap.close();
    await o.close();

    const cow = new HeldReads(cowDev, 4 * CHUNK_BYTES);
    const store = await PersistentStore.open(cow, { originSectors: originDev.sizeSectors, origin: originDev });
    const d = new SnapshotMergeDevice(originDev, store);
    expect(d.statusLine()).toBe('0 2048 snapshot-merge 40/2048 16');
    for (let i = 0; i < 50 && cow.held === 0; i++) await tick();
    expect(cow.held).toBe(1);
    // Chunk 20's batch is being copied: the write waits.
    let written20 = false;
    const write20 = d.write(Buffer.alloc(CHUNK_BYTES, 0xaa), 0, CHUNK_BYTES, 20 * CHUNK_BYTES).then(() => (written20 = true));
    // Chunk 10 is still in the COW, not in the batch: the write goes to COW chunk 2 at once.
    await d.write(Buffer.alloc(512, 0xbb), 0, 512, 10 * CHUNK_BYTES + 1024);
    await tick();
    expect(written20).toBe(false);
    const cow2 = await chunkOf(cowDev, 2);
    expect(cow2.subarray(1024, 1536).equals(Buffer.alloc(512, 0xbb))).toBe(true);
    expect((await chunkOf(originDev, 10)).equals(Buffer.alloc(CHUNK_BYTES, 0x0f))).toBe(true);
    // Reads show the snapshot's view meanwhile (chunk 11 from its COW chunk, chunk 30 from the origin).
    expect((await chunkOf(d, 11)).equals(Buffer.alloc(CHUNK_BYTES, 0x11))).toBe(true);
    expect((await chunkOf(d, 30)).equals(Buffer.alloc(CHUNK_BYTES, 0x0f))).toBe(true);
    cow.release();
    await write20;
    await d.mergeDone();
    expect(d.statusLine()).toBe('0 2048 snapshot-merge 16/2048 16');
    // The write to chunk 20 came after its merge, so it is what the origin holds.
    expect((await chunkOf(originDev, 20)).equals(Buffer.alloc(CHUNK_BYTES, 0xaa))).toBe(true);
    const expected10 = Buffer.alloc(CHUNK_BYTES, 0x10);
    expected10.fill(0xbb, 1024, 1536);
    expect((await chunkOf(originDev, 10)).equals(expected10)).toBe(true);
    expect((await chunkOf(originDev, 11)).equals(Buffer.alloc(CHUNK_BYTES, 0x11))).toBe(true);
    expect((await chunkOf(d, 10)).equals(expected10)).toBe(true);
    await d.stop();
    d.close();
  });
});
