/**
 * Origin writes that wait for their turn together go as one batch: one
 * commit (two COW flushes) for all their chunks, the snapshot still showing
 * the origin as it was, and overlapping writes reaching the origin in
 * arrival order.
 */
import * as path from 'path';
import { DeviceDecorator } from '@dmtool/devices';
import { FileDevice } from '@dmtool/kcopyd';
import { Origin, Snapshot, snapshotBuffer } from '@dmtool/dm-snapshot';
import { makeImage, patternBytes, sha256 } from '../support/images';
import { removeDir, tempDir } from '../support/loop';

/** Counts the flushes that reach the device. */
class CountedFlushes extends DeviceDecorator {
  flushes = 0;
  override async flush(): Promise<void> {
    this.flushes++;
    await this.inner.flush();
  }
}

const CHUNK_SECTORS = 8;
const WRITES = 16;

test('16 origin writes issued at once share one commit; a later overlapping write lands last; the snapshot keeps the old bytes', async () => {
  const dir = tempDir();
  makeImage(path.join(dir, 'origin.img'), 1 << 20, 'BATCH');
  makeImage(path.join(dir, 'cow.img'), 512 << 10);
  const originDev = FileDevice.open(path.join(dir, 'origin.img'), { write: true });
  const cow = new CountedFlushes(FileDevice.open(path.join(dir, 'cow.img'), { write: true }));
  const origin = new Origin(originDev);
  try {
    const snap = await Snapshot.create(origin, cow, { chunkSectors: CHUNK_SECTORS });
    const flushesBefore = cow.flushes;
    const writes = Array.from({ length: WRITES }, (_, i) => {
      const data = snapshotBuffer(CHUNK_SECTORS * 512);
      data.fill(i + 1);
      return origin.write(data, i * CHUNK_SECTORS);
    });
    const last = snapshotBuffer(512);
    last.fill(0xee);
    writes.push(origin.write(last, 3 * CHUNK_SECTORS));
    await Promise.all(writes);
    // One batch: one commit of 16 exceptions (COW flushed, area written, COW flushed), not 16 commits.
    expect(cow.flushes - flushesBefore).toBe(2);

    const sectors = WRITES * CHUNK_SECTORS;
    const view = snapshotBuffer(sectors * 512);
    await snap.read(view, 0);
    expect(sha256(view)).toBe(sha256(patternBytes('BATCH', 0, sectors)));

    const now = snapshotBuffer(sectors * 512);
    await origin.read(now, 0);
    const want = Buffer.alloc(sectors * 512);
    for (let i = 0; i < WRITES; i++) want.fill(i + 1, i * CHUNK_SECTORS * 512, (i + 1) * CHUNK_SECTORS * 512);
    want.fill(0xee, 3 * CHUNK_SECTORS * 512, 3 * CHUNK_SECTORS * 512 + 512);
    expect(now.equals(want)).toBe(true);
  } finally {
    await origin.close();
    originDev.close();
    cow.close();
    removeDir(dir);
  }
});
