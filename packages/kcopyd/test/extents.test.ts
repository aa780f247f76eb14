import * as path from 'path';
import { AbortError, BlockDevice, Extent, KcopydClient } from '@dmtool/kcopyd';
import { openFaulty, setFaultPlan } from '../../../test/support/faults';
import { makeImage, patternBytes, readRange, sha256 } from '../../../test/support/images';
import { removeDir, tempDir } from '../../../test/support/loop';

const SECTORS = 16384; // 8 MiB

/** A fixed permutation of 0..n-1 (multiplicative, no randomness). */
function permutation(n: number): number[] {
  return Array.from({ length: n }, (_, i) => (i * 1237) % n);
}

describe('KcopydClient.copyExtents', () => {
  let dir: string;
  let src: BlockDevice;
  let dest: BlockDevice;

  beforeEach(() => {
    dir = tempDir();
    makeImage(path.join(dir, 'src.img'), SECTORS * 512, 'XSRC');
    makeImage(path.join(dir, 'dst.img'), SECTORS * 512, 'XDST');
    src = openFaulty(path.join(dir, 'src.img'));
    dest = openFaulty(path.join(dir, 'dst.img'), { write: true });
  });

  afterEach(() => {
    setFaultPlan(undefined);
    src.close();
    dest.close();
    removeDir(dir);
  });

  /** What dst.img should hold after the extents, computed in memory. */
  function expected(extents: Extent[]): Buffer {
    const out = patternBytes('XDST', 0, SECTORS);
    for (const e of extents) patternBytes('XSRC', e.srcSector, e.count).copy(out, e.destSector * 512);
    return out;
  }

  it('copies 2048 scattered 4 KiB extents in a few spans, byte for byte', async () => {
    const perm = permutation(2048);
    const extents = perm.map((to, from) => ({ srcSector: from * 8, destSector: to * 8, count: 8 }));
    const client = new KcopydClient();
    const progress: number[] = [];
    const r = await client.copyExtents(src, dest, extents, { onProgress: (p) => progress.push(p.doneSectors) });
    expect(r).toMatchObject({ readErr: false, writeErr: 0, sectorsDone: SECTORS, errors: [] });
    // 2048 extents, contiguous on the source: 16 spans of 1024 sectors.
    expect(progress).toHaveLength(16);
    expect(sha256(readRange(path.join(dir, 'dst.img'), 0, SECTORS * 512))).toBe(sha256(expected(extents)));
    await client.destroy();
  });

  it('splits extents longer than a sub-job and leaves other sectors alone', async () => {
    const extents = [
      { srcSector: 100, destSector: 9000, count: 3000 },
      { srcSector: 5000, destSector: 7, count: 9 },
      { srcSector: 5600, destSector: 20, count: 1 },
    ];
    const client = new KcopydClient({ subJobSectors: 1024 });
    const r = await client.copyExtents(src, dest, extents);
    expect(r.sectorsDone).toBe(3010);
    expect(sha256(readRange(path.join(dir, 'dst.img'), 0, SECTORS * 512))).toBe(sha256(expected(extents)));
    await client.destroy();
  });

  it('refuses overlapping destinations, ranges past the end and overlap with the source on one device', async () => {
    const client = new KcopydClient();
    await expect(client.copyExtents(src, dest, [])).rejects.toThrow(/at least one extent/);
    await expect(
      client.copyExtents(src, dest, [
        { srcSector: 0, destSector: 10, count: 8 },
        { srcSector: 100, destSector: 17, count: 8 },
      ]),
    ).rejects.toThrow(/overlap on the destination at sector 17/);
    await expect(client.copyExtents(src, dest, [{ srcSector: SECTORS - 4, destSector: 0, count: 8 }])).rejects.toThrow(
      /beyond the device end/,
    );
    await expect(client.copyExtents(dest, dest, [{ srcSector: 0, destSector: 4, count: 8 }])).rejects.toThrow(/overlaps a source range/);
    await expect(client.copyExtents(dest, src, [{ srcSector: 0, destSector: 4, count: 8 }])).rejects.toThrow(/read-only/);
    await client.destroy();
  });

  it('reports a failed write with its sector and stops (writeErr bit 0)', async () => {
    const extents = permutation(256).map((to, from) => ({ srcSector: from * 8, destSector: to * 8, count: 8 }));
    const bad = extents[77].destSector;
    setFaultPlan({ rules: [{ op: 'write', code: 'EIO', fromByte: bad * 512, toByte: (bad + 8) * 512 }] });
    const client = new KcopydClient();
    const r = await client.copyExtents(src, dest, extents);
    expect(r.readErr).toBe(false);
    expect(r.writeErr).toBe(1);
    expect(r.errors.map((e) => [e.code, e.op, e.byteOffset])).toEqual([['EIO', 'write', bad * 512]]);
    expect(r.sectorsDone).toBeLessThan(256 * 8);
    await client.destroy();
  });

  it('reports a failed read as readErr', async () => {
    setFaultPlan({ rules: [{ op: 'read', code: 'EIO', fromByte: 0, toByte: 512 }] });
    const client = new KcopydClient();
    const r = await client.copyExtents(src, dest, [{ srcSector: 0, destSector: 100, count: 8 }]);
    expect(r).toMatchObject({ readErr: true, writeErr: 0, sectorsDone: 0 });
    await client.destroy();
  });

  it('aborts between spans', async () => {
    const extents = permutation(2048).map((to, from) => ({ srcSector: from * 8, destSector: to * 8, count: 8 }));
    const client = new KcopydClient({ subJobSectors: 64, subJobsPerJob: 1 });
    const ctl = new AbortController();
    const err = await client
      .copyExtents(src, dest, extents, { signal: ctl.signal, onProgress: (p) => p.doneSectors >= 640 && ctl.abort() })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).sectorsDone).toBe(640);
    await client.destroy();
  });
});
