import * as path from 'path';
import { FileDevice, KcopydClient } from '@dmtool/kcopyd';
import { run } from '../../packages/cli/src/util/run-copy';
import { makeImage, sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';

describe('CLI copy progress', () => {
  it('reports only flushed sectors: a flush about once a second, the total after the last flush', async () => {
    const dir = tempDir();
    const src = path.join(dir, 'src.img');
    const dst = path.join(dir, 'dst.img');
    makeImage(src, 8 << 20, 'PROGRESS');
    makeImage(dst, 8 << 20);
    const s = FileDevice.open(src);
    const d = FileDevice.open(dst, { write: true });
    const client = new KcopydClient({ subJobSectors: 256, rateBytesPerSecond: 4 << 20 });
    const seen: number[] = [];
    try {
      const r = await run(client, {
        from: { device: s, sector: 0, count: 16384 },
        to: [{ device: d, sector: 0 }],
        flags: 0,
        signal: new AbortController().signal,
        onProgress: (sectors) => seen.push(sectors),
      });
      expect(r).toMatchObject({ readErr: false, writeErr: 0, sectorsDone: 16384, interrupted: false });
      // 8 MiB at 4 MiB/s: about 2 s, so one or two flushes happen mid-copy.
      expect(seen.length).toBeGreaterThanOrEqual(2);
      expect(seen[0]).toBeGreaterThan(0);
      expect(seen[0]).toBeLessThan(16384);
      expect(seen[seen.length - 1]).toBe(16384);
      expect([...seen].sort((a, b) => a - b)).toEqual(seen);
      expect(sha256File(dst)).toBe(sha256File(src));
    } finally {
      await client.destroy();
      s.close();
      d.close();
      removeDir(dir);
    }
  });
});
