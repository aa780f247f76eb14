import * as path from 'path';
import { FileDevice } from '@dmtool/kcopyd';
import { Origin, Snapshot, snapshotBuffer } from '@dmtool/dm-snapshot';
import { makeImage, patternBytes, sha256 } from '../support/images';
import { removeDir, tempDir } from '../support/loop';

// kcopyd takes at most 8 destinations per job: an origin write with more
// snapshots than that needs several copy-out jobs, and every snapshot must
// still keep the old data.
describe('an origin with more snapshots than one kcopyd job has destinations', () => {
  it.each([9, 10, 17])('copies the old chunk into all %i COWs before the origin write', async (count) => {
    const dir = tempDir();
    const originDev =
      (makeImage(path.join(dir, 'origin.img'), 1 << 20, 'MANY'), FileDevice.open(path.join(dir, 'origin.img'), { write: true }));
    const cows = Array.from({ length: count }, (_, i) => {
      makeImage(path.join(dir, `cow${i}.img`), 256 << 10);
      return FileDevice.open(path.join(dir, `cow${i}.img`), { write: true });
    });
    const origin = new Origin(originDev);
    try {
      const snaps: Snapshot[] = [];
      for (const [i, cow] of cows.entries()) snaps.push(await Snapshot.create(origin, cow, { chunkSectors: i < 12 ? 8 : 16 }));
      const data = snapshotBuffer(16 * 512);
      data.fill(0x42);
      await origin.write(data, 0);
      const want = sha256(patternBytes('MANY', 0, 16));
      for (const [i, snap] of snaps.entries()) {
        const view = snapshotBuffer(16 * 512);
        await snap.read(view, 0);
        expect({ snapshot: i, valid: snap.valid, sha: sha256(view) }).toEqual({ snapshot: i, valid: true, sha: want });
      }
      const now = snapshotBuffer(16 * 512);
      await origin.read(now, 0);
      expect(now.equals(data)).toBe(true);
    } finally {
      await origin.close();
      [originDev, ...cows].forEach((d) => d.close());
      removeDir(dir);
    }
  });
});
