import * as fs from 'fs';
import * as path from 'path';
import { FileDevice } from '@dmtool/native';
import { encodeEntry, encodeHeader, Origin, PersistentStore, Snapshot, SnapshotError } from '@dmtool/dm-snapshot';
import { patternBytes, readRange, sha256File } from '../../../test/support/images';
import { openFaulty, setFaultPlan } from '../../../test/support/faults';
import { removeDir, tempDir } from '../../../test/support/loop';

let dir: string;
beforeAll(() => {
  dir = tempDir('dmtool-snapstore-');
});
afterAll(() => removeDir(dir));

let n = 0;
function file(bytes: number, seed?: string): string {
  const f = path.join(dir, `f${n++}.img`);
  fs.writeFileSync(f, seed ? patternBytes(seed, 0, bytes / 512) : Buffer.alloc(0));
  fs.truncateSync(f, bytes);
  return f;
}

async function withSnapshot<T>(
  originBytes: number,
  cowBytes: number,
  cs: number,
  fn: (origin: Origin, snap: Snapshot, files: { origin: string; cow: string }) => Promise<T>,
  type: 'P' | 'PO' | 'N' = 'P',
): Promise<T> {
  const files = { origin: file(originBytes, 'origin'), cow: file(cowBytes) };
  const o = openFaulty(files.origin, { write: true });
  const c = openFaulty(files.cow, { write: true });
  const origin = new Origin(o);
  try {
    const snap = await Snapshot.create(origin, c, { chunkSectors: cs, type });
    return await fn(origin, snap, files);
  } finally {
    await origin.close();
    o.close();
    c.close();
  }
}

async function expectSnapError(p: Promise<unknown>, code: string, reason: string): Promise<SnapshotError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(SnapshotError);
    expect([(e as SnapshotError).code, (e as SnapshotError).reason]).toEqual([code, reason]);
    return e as SnapshotError;
  }
  throw new Error('expected an error');
}

describe('persistent store', () => {
  test('format writes the kernel header and an empty area 0; status of a fresh COW', async () => {
    await withSnapshot(1 << 20, 1 << 20, 8, async (_o, snap, files) => {
      expect(snap.status()).toBe('16/2048 16');
      const head = readRange(files.cow, 0, 8192);
      expect(head.subarray(0, 16).toString('hex')).toBe('536e417001000000010000000' + '8000000');
      expect(head.subarray(16).every((b) => b === 0)).toBe(true);
    });
  });

  test('worked example docs/snapshot-format.md#worked-example: origin chunks 100, 5, 101 → entries, data chunks, status', async () => {
    await withSnapshot(1 << 20, 4 << 20, 8, async (origin, snap, files) => {
      const before = readRange(files.origin, 0, 1 << 20);
      for (const chunk of [100, 5, 101]) await origin.write(Buffer.alloc(512, 0xee), chunk * 8 + 3);
      expect(snap.status()).toBe('40/8192 16');
      expect(readRange(files.cow, 0x1000, 0x40).toString('hex')).toBe(
        '6400000000000000' +
          '0200000000000000' +
          '0500000000000000' +
          '0300000000000000' +
          '6500000000000000' +
          '0400000000000000' +
          '0'.repeat(32),
      );
      expect(readRange(files.cow, 0x2000, 4096)).toEqual(before.subarray(409600, 413696));
      expect(readRange(files.cow, 0x3000, 4096)).toEqual(before.subarray(5 * 4096, 6 * 4096));
      const view = Buffer.alloc(1 << 20);
      await snap.read(view, 0);
      expect(view).toEqual(before);
      const now = Buffer.alloc(512);
      await origin.read(now, 100 * 8 + 3);
      expect(now.every((b) => b === 0xee)).toBe(true);
    });
  });

  test('the 256th exception fills area 0: next area zeroed, status 2072/… 24, 257th goes to chunk 259', async () => {
    await withSnapshot(2 << 20, 4 << 20, 8, async (origin, snap, files) => {
      // Garbage where area 1 will be, to see it zeroed.
      fs.writeSync(fs.openSync(files.cow, 'r+'), Buffer.alloc(4096, 0x55), 0, 4096, 258 * 4096);
      for (let c = 0; c < 256; c++) await origin.write(Buffer.alloc(4096, 1), c * 8);
      expect(snap.status()).toBe('2072/8192 24');
      expect(readRange(files.cow, 258 * 4096, 4096).every((b) => b === 0)).toBe(true);
      await origin.write(Buffer.alloc(4096, 1), 300 * 8);
      expect([...snap.exceptions()].at(-1)).toEqual({ index: 256, oldChunk: 300, newChunk: 259 });
      expect(readRange(files.cow, 258 * 4096, 16).readBigUInt64LE(8)).toBe(259n);
    });
  });

  test('several snapshots of one origin each get the old chunk; reopened tables agree', async () => {
    const files = { origin: file(1 << 20, 'o2'), a: file(1 << 20), b: file(2 << 20) };
    const o = FileDevice.open(files.origin, { write: true });
    const a = FileDevice.open(files.a, { write: true });
    const b = FileDevice.open(files.b, { write: true });
    const origin = new Origin(o);
    const before = readRange(files.origin, 0, 1 << 20);
    try {
      const sa = await Snapshot.create(origin, a, { chunkSectors: 8 });
      const sb = await Snapshot.create(origin, b, { chunkSectors: 16 });
      expect(origin.snapshots).toEqual([sb, sa]);
      await origin.write(Buffer.alloc(8192, 7), 40);
      expect(sa.status()).toBe('32/2048 16');
      expect(sb.status()).toBe('64/4096 32');
      for (const s of [sa, sb]) {
        const v = Buffer.alloc(1 << 20);
        await s.read(v, 0);
        expect(v).toEqual(before);
      }
      await expectSnapError(Snapshot.create(origin, a, { chunkSectors: 8, force: true }), 'EBUSY', 'same-device');
      await expectSnapError(Snapshot.create(origin, o, { chunkSectors: 8, force: true }), 'EINVAL', 'same-device');
    } finally {
      await origin.close();
      [o, a, b].forEach((d) => d.close());
    }
  });

  test('partial last origin chunk: the copy is truncated at the origin end', async () => {
    await withSnapshot(4096 * 10 + 1024, 1 << 20, 8, async (origin, snap, files) => {
      const before = readRange(files.origin, 0, 4096 * 10 + 1024);
      await origin.write(Buffer.alloc(512, 9), 81);
      expect(snap.status()).toBe('24/2048 16');
      const v = Buffer.alloc(4096 * 10 + 1024);
      await snap.read(v, 0);
      expect(v).toEqual(before);
      // A snapshot write into that chunk is partial (never a whole chunk) and keeps the origin's other sector.
      await snap.write(Buffer.alloc(512, 3), 80);
      await snap.read(v, 0);
      expect(v.subarray(80 * 512, 81 * 512).every((x) => x === 3)).toBe(true);
      expect(v.subarray(81 * 512)).toEqual(before.subarray(81 * 512));
    });
  });
});

describe('overflow and invalidation', () => {
  test('origin write with a full COW invalidates (header valid = 0, table kept); the origin write proceeds', async () => {
    await withSnapshot(1 << 20, 3 * 4096, 8, async (origin, snap, files) => {
      await origin.write(Buffer.alloc(4096, 1), 0);
      await origin.write(Buffer.alloc(4096, 1), 8);
      expect(snap.status()).toBe('Invalid');
      expect(readRange(files.cow, 0, 16).readUInt32LE(4)).toBe(0);
      expect(readRange(files.cow, 4096, 16).readBigUInt64LE(8)).toBe(2n);
      expect(readRange(files.origin, 4096, 4096).every((b) => b === 1)).toBe(true);
      await expectSnapError(snap.read(Buffer.alloc(512), 0), 'EIO', 'invalid');
      // A second look at the COW while the snapshot still holds it open (and locked).
      const c = FileDevice.open(files.cow, { lock: 'none' });
      try {
        const store = await PersistentStore.open(c);
        expect(store.valid).toBe(false);
        expect(store.table.size).toBe(0);
      } finally {
        c.close();
      }
    });
  });

  test('snapshot write with a full COW: P invalidates, PO reports Overflow and keeps reads', async () => {
    await withSnapshot(1 << 20, 3 * 4096, 8, async (_o, snap) => {
      await snap.write(Buffer.alloc(4096, 1), 0);
      await expectSnapError(snap.write(Buffer.alloc(4096, 1), 8), 'EIO', 'no-space');
      expect(snap.status()).toBe('Invalid');
    });
    await withSnapshot(
      1 << 20,
      3 * 4096,
      8,
      async (origin, snap, files) => {
        await snap.write(Buffer.alloc(4096, 1), 0);
        await expectSnapError(snap.write(Buffer.alloc(4096, 1), 8), 'ENOSPC', 'overflow');
        expect(snap.status()).toBe('Overflow');
        expect(snap.tableLine()).toContain(' PO 8');
        const v = Buffer.alloc(4096);
        await snap.read(v, 0);
        expect(v.every((b) => b === 1)).toBe(true);
        await expectSnapError(snap.write(Buffer.alloc(512), 0), 'EIO', 'overflow');
        // Nothing on disk changed: header still valid.
        expect(readRange(files.cow, 0, 16).readUInt32LE(4)).toBe(1);
        // An origin write that cannot allocate still invalidates, even with PO.
        await origin.write(Buffer.alloc(4096, 2), 16);
        expect(snap.status()).toBe('Invalid');
      },
      'PO',
    );
  });

  test('a failing COW copy invalidates the snapshot; the origin write goes on', async () => {
    await withSnapshot(1 << 20, 1 << 20, 8, async (origin, snap, files) => {
      setFaultPlan({ rules: [{ op: 'write', code: 'EIO', path: path.basename(files.cow), fromByte: 2 * 4096, toByte: 3 * 4096 }] });
      try {
        await origin.write(Buffer.alloc(4096, 4), 0);
      } finally {
        setFaultPlan(undefined);
      }
      expect(snap.status()).toBe('Invalid');
      expect(readRange(files.origin, 0, 4096).every((b) => b === 4)).toBe(true);
    });
  });
});

describe('transient store', () => {
  test('allocates from chunk 0, writes no metadata, status next_free/total 0', async () => {
    await withSnapshot(
      1 << 20,
      3 * 4096,
      8,
      async (origin, snap, files) => {
        const before = readRange(files.origin, 0, 8192);
        expect(snap.status()).toBe('0/24 0');
        await origin.write(Buffer.alloc(8192, 5), 0);
        expect(snap.status()).toBe('16/24 0');
        expect(readRange(files.cow, 0, 8192)).toEqual(before);
        const v = Buffer.alloc(8192);
        await snap.read(v, 0);
        expect(v).toEqual(before);
        await snap.write(Buffer.alloc(4096, 6), 16);
        await expectSnapError(snap.write(Buffer.alloc(4096, 6), 24), 'EIO', 'no-space');
      },
      'N',
    );
  });
});

describe('corrupt or unsuitable COW: one clear error, nothing written', () => {
  async function corrupt(mutate: (cow: Buffer) => void, open: { chunkSectors?: number; originBytes?: number; cowBytes?: number } = {}) {
    const origin = file(open.originBytes ?? 1 << 20, 'c');
    const cow = file(open.cowBytes ?? 1 << 20);
    const buf = Buffer.alloc(open.cowBytes ?? 1 << 20);
    encodeHeader(buf, { valid: true, chunkSectors: 8 });
    const area = Buffer.alloc(4096);
    encodeEntry(area, 0, 3, 2);
    encodeEntry(area, 1, 4, 3);
    area.copy(buf, 4096);
    mutate(buf);
    fs.writeFileSync(cow, buf);
    const shaO = sha256File(origin);
    const shaC = sha256File(cow);
    const o = FileDevice.open(origin, { write: true });
    const c = FileDevice.open(cow, { write: true });
    const org = new Origin(o);
    try {
      return await Snapshot.open(org, c, { chunkSectors: open.chunkSectors });
    } finally {
      await org.close();
      o.close();
      c.close();
      expect(sha256File(origin)).toBe(shaO);
      expect(sha256File(cow)).toBe(shaC);
    }
  }

  test('the well-formed base case opens', async () => {
    const s = await corrupt(() => undefined);
    expect(s.status()).toBe('32/2048 16');
  });

  test.each([
    ['bad magic', (b: Buffer) => b.write('Snap', 0, 'latin1'), 'ENXIO', 'bad-magic'],
    ['bad version', (b: Buffer) => b.writeUInt32LE(2, 8), 'EINVAL', 'bad-version'],
    ['chunk size not a power of two', (b: Buffer) => b.writeUInt32LE(24, 12), 'EINVAL', 'bad-chunk-size'],
    ['entry pointing at the header', (b: Buffer) => b.writeUInt32LE(1, 4096 + 24), 'EINVAL', 'entry-in-metadata'],
    ['entry pointing at a metadata area', (b: Buffer) => b.writeUInt32LE(258, 4096 + 24), 'EINVAL', 'entry-in-metadata'],
    ['entry past the COW end', (b: Buffer) => b.writeUInt32LE(300, 4096 + 24), 'EINVAL', 'entry-past-cow-end'],
    ['entry past the origin end', (b: Buffer) => b.writeUInt32LE(256, 4096 + 16), 'EINVAL', 'entry-past-origin-end'],
    ['duplicate old_chunk', (b: Buffer) => b.writeUInt32LE(3, 4096 + 16), 'EINVAL', 'duplicate-old-chunk'],
    ['duplicate new_chunk', (b: Buffer) => b.writeUInt32LE(2, 4096 + 24), 'EINVAL', 'duplicate-new-chunk'],
    ['fresh (never formatted)', (b: Buffer) => b.fill(0, 0, 16), 'EINVAL', 'not-formatted'],
  ])('%s', async (_name, mutate, code, reason) => {
    await expectSnapError(corrupt(mutate), code, reason);
  });

  test('a full last area with no room for its terminator area', async () => {
    await expectSnapError(
      corrupt(
        (b) => {
          for (let i = 0; i < 256; i++) encodeEntry(b.subarray(4096), i, i, 2 + i);
        },
        { originBytes: 2 << 20, cowBytes: 258 * 4096 },
      ).then(() => undefined),
      'EINVAL',
      'area-past-cow-end',
    );
  });

  test('wrong chunk size asked for', async () => {
    const e = await expectSnapError(
      corrupt(() => undefined, { chunkSectors: 16 }),
      'EINVAL',
      'chunk-size-mismatch',
    );
    expect(e.message).toMatch(/chunk size 16 does not match the COW header's 8 sectors \(.*sectors 0\.\.0\)/);
  });

  test('COW too small to format, chunk size not a power of two, COW already formatted', async () => {
    const o = FileDevice.open(file(1 << 20, 'x'), { write: true });
    const small = file(8192);
    const c = FileDevice.open(small, { write: true });
    const origin = new Origin(o);
    try {
      await expectSnapError(Snapshot.create(origin, c, { chunkSectors: 8 }), 'ENOSPC', 'cow-too-small');
      await expectSnapError(Snapshot.create(origin, c, { chunkSectors: 3 }), 'EINVAL', 'bad-chunk-size');
      expect(readRange(small, 0, 8192).every((b) => b === 0)).toBe(true);
      const big = FileDevice.open(file(1 << 20), { write: true });
      const s = await Snapshot.create(origin, big, { chunkSectors: 8 });
      s.close();
      await expectSnapError(Snapshot.create(origin, big, { chunkSectors: 8 }), 'EEXIST', 'cow-not-empty');
      big.close();
    } finally {
      await origin.close();
      o.close();
      c.close();
    }
  });
});

describe('concurrent writes', () => {
  test('writes racing on one chunk create one exception and keep the old data in the snapshot', async () => {
    await withSnapshot(1 << 20, 1 << 20, 8, async (origin, snap, files) => {
      const before = readRange(files.origin, 0, 1 << 20);
      await Promise.all([
        origin.write(Buffer.alloc(512, 1), 40),
        origin.write(Buffer.alloc(512, 2), 41),
        snap.write(Buffer.alloc(512, 3), 42),
        origin.write(Buffer.alloc(4096, 4), 80),
        snap.write(Buffer.alloc(512, 5), 83),
      ]);
      expect([...snap.exceptions()].map((e) => [e.oldChunk, e.newChunk])).toEqual([
        [5, 2],
        [10, 3],
      ]);
      const expected = Buffer.from(before);
      expected.fill(3, 42 * 512, 43 * 512);
      expected.fill(5, 83 * 512, 84 * 512);
      const v = Buffer.alloc(1 << 20);
      await snap.read(v, 0);
      expect(v.equals(expected)).toBe(true);
    });
  });
});
