import * as path from 'path';
import { openMirror, resync } from '@dmtool/dm-mirror';
import { fileResolver } from '@dmtool/native';
import { makeImage, sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';

// A write spanning two regions holds the first while it waits for the
// second, which a resync worker is recovering; another worker waits for the
// first to drain. The recovered region must be recorded (and its parked
// write released) without waiting for more regions to finish.
describe('a mirror write across regions during a resync', () => {
  it('completes, and the legs end identical', async () => {
    const dir = tempDir();
    try {
      const legs = [0, 1].map((i) => path.join(dir, `leg${i}.img`));
      legs.forEach((p, i) => makeImage(p, 8192, `W${i}`));
      const log = path.join(dir, 'log.img');
      makeImage(log, 4096);
      const mirror = await openMirror(
        { log: { type: 'disk', path: log }, regionSize: 8, legs: legs.map((p) => ({ path: p })) },
        fileResolver,
        { createLog: true, writeLegs: true },
      );
      try {
        const data = Buffer.alloc(16 * 512, 0x5d);
        const write = mirror.write(data, 0, 16); // regions 0 and 1, both out of sync
        const sync = resync(mirror, { parallel: 2, commitRegions: 32, commitIntervalMs: 100 });
        const timeout = new Promise<string>((resolve) => setTimeout(() => resolve('stuck'), 5000).unref());
        await expect(Promise.race([Promise.all([write, sync]).then(() => 'done'), timeout])).resolves.toBe('done');
        expect((await sync).inSync).toBe(true);
      } finally {
        mirror.close();
      }
      expect(sha256File(legs[1])).toBe(sha256File(legs[0]));
    } finally {
      removeDir(dir);
    }
  });
});
