import * as path from 'path';
import { BlockDevice, DeviceDecorator, UnflushedWritesLost, WriteOptions } from '@dmtool/devices';
import { FileDevice, KcopydClient, SectorRange } from '@dmtool/kcopyd';
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

/**
 * A destination behind a server with a volatile cache that restarts: its
 * writes wait until a flush; `restart()` drops them, and the next flush
 * completes but reports them lost once, as NbdDevice does after a
 * reconnection.
 */
class RestartingServer extends DeviceDecorator {
  private cached: { data: Buffer; byteOffset: number }[] = [];
  private lost = 0;
  writes = 0;
  constructor(
    inner: BlockDevice,
    private readonly restartAfterWrite: (n: number) => boolean,
  ) {
    super(inner);
  }
  override async write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, opts?: WriteOptions): Promise<void> {
    if (opts?.fua) return this.inner.write(buf, bufOffset, bytes, byteOffset, opts);
    this.cached.push({ data: Buffer.from(buf.subarray(bufOffset, bufOffset + bytes)), byteOffset });
    if (this.restartAfterWrite(++this.writes)) this.restart();
  }
  restart(): void {
    this.lost += this.cached.length;
    this.cached = [];
  }
  override async flush(): Promise<void> {
    for (const w of this.cached.splice(0)) await this.inner.write(w.data, 0, w.data.length, w.byteOffset);
    await this.inner.flush();
    const lost = this.lost;
    this.lost = 0;
    if (lost > 0) throw new UnflushedWritesLost(this.path, `${lost} writes lost`);
  }
  override nativeEndpoint(): undefined {
    return undefined;
  }
  override sparseFile(): undefined {
    return undefined;
  }
}

describe('CLI copy to a destination that reports acknowledged writes lost at a flush', () => {
  let dir: string;
  let s: FileDevice;
  let d: FileDevice;
  beforeEach(() => {
    dir = tempDir();
    makeImage(path.join(dir, 'src.img'), 8 << 20, 'RESTART');
    makeImage(path.join(dir, 'dst.img'), 8 << 20);
    s = FileDevice.open(path.join(dir, 'src.img'));
    d = FileDevice.open(path.join(dir, 'dst.img'), { write: true });
  });
  afterEach(() => {
    s.close();
    d.close();
    removeDir(dir);
  });

  async function copyTo(dest: BlockDevice, durable: SectorRange[]) {
    const client = new KcopydClient({ subJobSectors: 256, rateBytesPerSecond: 4 << 20 });
    try {
      return await run(client, {
        from: { device: s, sector: 0, count: 16384 },
        to: [{ device: dest, sector: 0 }],
        flags: 0,
        signal: new AbortController().signal,
        onProgress: () => undefined,
        onDurable: (ranges) => durable.push(...ranges),
      });
    } finally {
      await client.destroy();
    }
  }

  it('restarted mid-copy (after its 40th of 64 writes): the pieces since the last good flush are written again; the copy ends byte-identical', async () => {
    const dest = new RestartingServer(d, (n) => n === 40);
    const durable: SectorRange[] = [];
    const r = await copyTo(dest, durable);
    expect(r).toMatchObject({ readErr: false, writeErr: 0, sectorsDone: 16384, errors: [] });
    expect(sha256File(path.join(dir, 'dst.img'))).toBe(sha256File(path.join(dir, 'src.img')));
    // Some pieces were written twice; every piece was recorded durable exactly once.
    expect(dest.writes).toBeGreaterThan(64);
    const pieces = durable.map((x) => x.startSector).sort((a, b) => a - b);
    expect(pieces).toEqual(Array.from({ length: 64 }, (_, i) => i * 256));
  });

  it('losing every write before each flush: three passes write all 64 pieces again, then the destination fails with the last flush line', async () => {
    const dest = new RestartingServer(d, () => true);
    const r = await copyTo(dest, []);
    expect(r).toMatchObject({ readErr: false, writeErr: 1, sectorsDone: 16384 });
    expect(dest.writes).toBe(4 * 64);
    expect(r.errors.map((e) => e.message)).toEqual([`EIO: flush failed on ${dest.path}: 64 writes lost`]);
  });
});
