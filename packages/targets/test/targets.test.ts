import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { decodeDiskLog } from '@dmtool/dm-mirror';
import { ChunkTracker, Origin, Snapshot } from '@dmtool/dm-snapshot';
import { DeviceResolver, VolatileCacheDevice } from '@dmtool/devices';
import { FileDevice, fileResolver } from '@dmtool/native';
import {
  BorrowedDevice,
  MirrorDevice,
  planTargets,
  snapshotArgs,
  parseTableLine,
  SnapshotDevice,
  SnapshotOriginDevice,
  TargetSet,
  TargetSpecError,
} from '@dmtool/targets';

const MiB = 1 << 20;
let dir: string;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-targets-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function file(name: string, bytes: number, seed?: number): string {
  const p = path.join(dir, name);
  const buf = Buffer.alloc(bytes);
  if (seed !== undefined) for (let i = 0; i < bytes; i += 4) buf.writeUInt32LE((Math.imul(i + 1, 2654435761) ^ seed) >>> 0, i);
  fs.writeFileSync(p, buf);
  return p;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const shaFile = (p: string) => sha(fs.readFileSync(p));

async function readAll(d: { sizeBytes: number; read(b: Buffer, o: number, n: number, at: number): Promise<void> }): Promise<Buffer> {
  const b = Buffer.alloc(d.sizeBytes);
  await d.read(b, 0, b.length, 0);
  return b;
}

describe('snapshot-origin and snapshot devices', () => {
  test('an origin write copies into every snapshot of it; the COWs are those the dm-snapshot engine makes', async () => {
    const origin = file('origin.img', 8 * MiB, 1);
    const before = fs.readFileSync(origin);
    const cow8 = file('cow8.img', 4 * MiB);
    const cow16 = file('cow16.img', 4 * MiB);
    const set = await TargetSet.open(
      [
        { name: 'data', table: `0 16384 snapshot-origin ${origin}` },
        { name: 's8', table: `0 16384 snapshot ${origin} ${cow8} P 8` },
        { name: 's16', table: `0 16384 snapshot ${origin} ${path.relative(process.cwd(), cow16)} P 16`, readOnly: true },
      ],
      fileResolver,
    );
    const data = set.devices.get('data') as SnapshotOriginDevice;
    const s8 = set.devices.get('s8') as SnapshotDevice;
    const s16 = set.devices.get('s16') as SnapshotDevice;
    try {
      expect(data.origin).toBe(s8.snapshot.origin);
      expect(data.origin).toBe(s16.snapshot.origin);
      expect(s16.writable).toBe(false);
      await data.write(Buffer.alloc(3 * 4096 + 512, 0xab), 0, 3 * 4096 + 512, 4096 + 512);
      await data.zeroRange(MiB, 64 * 1024);
      await s8.write(Buffer.alloc(1024, 0x11), 0, 1024, 2 * MiB + 512);
      expect(sha(await readAll(s16))).toBe(sha(before));
      const view8 = Buffer.from(before);
      view8.fill(0x11, 2 * MiB + 512, 2 * MiB + 1536);
      expect(sha(await readAll(s8))).toBe(sha(view8));
      const now = Buffer.from(before);
      now.fill(0xab, 4608, 4608 + 3 * 4096 + 512);
      now.fill(0, MiB, MiB + 64 * 1024);
      expect(sha(await readAll(data))).toBe(sha(now));
      await expect(s16.write(Buffer.alloc(512), 0, 512, 0)).rejects.toMatchObject({ code: 'EBADF' });
      await expect(data.discard(0, 4096)).rejects.toMatchObject({ code: 'EOPNOTSUPP' });
      await expect(data.read(Buffer.alloc(100), 0, 100, 0)).rejects.toMatchObject({ code: 'EINVAL' });
      expect(s8.statusLine()).toBe('0 16384 snapshot 184/8192 16');
      expect(s16.statusLine()).toBe('0 16384 snapshot 208/8192 32');
      expect(data.statusLine()).toBe('0 16384 snapshot-origin ');
      expect(set.statusLines()).toEqual([
        'data: 0 16384 snapshot-origin ',
        's8: 0 16384 snapshot 184/8192 16',
        's16: 0 16384 snapshot 208/8192 32',
      ]);
    } finally {
      await set.close();
    }
    expect(shaFile(origin)).not.toBe(sha(before));

    // The same writes through the engine itself, on copies of the images as they were.
    const o2 = path.join(dir, 'o2.img');
    fs.writeFileSync(o2, before);
    const c8 = file('c8.img', 4 * MiB);
    const c16 = file('c16.img', 4 * MiB);
    const od = FileDevice.open(o2, { write: true });
    const d8 = FileDevice.open(c8, { write: true });
    const d16 = FileDevice.open(c16, { write: true });
    const o = new Origin(od);
    try {
      const e8 = await Snapshot.create(o, d8, { chunkSectors: 8 });
      await Snapshot.create(o, d16, { chunkSectors: 16 });
      await o.write(Buffer.alloc(3 * 4096 + 512, 0xab), 9);
      await o.write(Buffer.alloc(64 * 1024), 2048);
      await e8.write(Buffer.alloc(1024, 0x11), 4097);
    } finally {
      await o.close();
      [od, d8, d16].forEach((d) => d.close());
    }
    expect(shaFile(cow8)).toBe(shaFile(c8));
    expect(shaFile(cow16)).toBe(shaFile(c16));
    expect(shaFile(origin)).toBe(shaFile(o2));
  });

  test('an existing COW is opened, not formatted; its chunk size must match the line', async () => {
    const origin = file('origin.img', 2 * MiB, 2);
    const cow = file('cow.img', MiB);
    let set = await TargetSet.open([{ name: 's', table: `0 4096 snapshot ${origin} ${cow} P 8` }], fileResolver);
    await set.devices.get('s')!.write(Buffer.alloc(4096, 5), 0, 4096, 8192);
    await set.close();
    const cowBytes = shaFile(cow);
    set = await TargetSet.open([{ name: 's', table: `0 4096 snapshot ${origin} ${cow} P 8` }], fileResolver);
    try {
      const b = Buffer.alloc(4096);
      await set.devices.get('s')!.read(b, 0, 4096, 8192);
      expect(b.every((x) => x === 5)).toBe(true);
      expect((set.devices.get('s') as SnapshotDevice).statusLine()).toBe('0 4096 snapshot 24/2048 16');
    } finally {
      await set.close();
    }
    expect(shaFile(cow)).toBe(cowBytes);
    await expect(TargetSet.open([{ name: 's', table: `0 4096 snapshot ${origin} ${cow} P 16` }], fileResolver)).rejects.toThrow(
      /chunk size 16 does not match the COW header's 8 sectors/,
    );
    // Refused opens leave nothing locked: the same devices open again.
    await (await TargetSet.open([{ name: 's', table: `0 4096 snapshot ${origin} ${cow} N 8` }], fileResolver)).close();
  });

  test('origin writes wait for snapshot reads still reading the chunk from the origin', async () => {
    const t = new ChunkTracker();
    t.add([3, 4]);
    t.add([4]);
    let drained = false;
    const wait = t.drain([4, 9]).then(() => (drained = true));
    await t.drain([5]);
    t.remove([3, 4]);
    await new Promise((r) => setImmediate(r));
    expect(drained).toBe(false);
    t.remove([4]);
    await wait;
    expect(drained).toBe(true);
    expect(t.size).toBe(0);
  });
});

describe('mirror device', () => {
  test('writes reach every leg; a clean stop leaves the log all in sync; an out-of-sync log is resynced in the background', async () => {
    const leg0 = file('leg0.img', 4 * MiB, 3);
    const leg1 = file('leg1.img', 4 * MiB, 4);
    const log = file('log.img', 64 * 1024);
    // `sync` starts a new log with every region out of sync, as the kernel does.
    const set = await TargetSet.open([{ name: 'm', table: `0 8192 mirror disk 3 ${log} 256 sync 2 ${leg0} 0 ${leg1} 0` }], fileResolver);
    const m = set.devices.get('m') as MirrorDevice;
    try {
      await m.write(Buffer.alloc(200 * 1024, 0x42), 0, 200 * 1024, 300 * 1024);
      const r = await m.resyncDone();
      expect(r).toMatchObject({ regionsTotal: 32, inSync: true, aborted: false });
      await m.flush();
      expect(m.statusLine()).toBe(`0 8192 mirror 2 ${leg0} ${leg1} 32/32 1 AA 3 disk ${log} A`);
    } finally {
      await set.close();
    }
    expect(shaFile(leg0)).toBe(shaFile(leg1));
    const b = fs.readFileSync(leg1).subarray(300 * 1024, 500 * 1024);
    expect(b.every((x) => x === 0x42)).toBe(true);
    const image = decodeDiskLog(fs.readFileSync(log), { path: log });
    expect(image.nrRegions).toBe(32);
    expect(Array.from({ length: 32 }, (_, r) => image.clean.get(r)).every(Boolean)).toBe(true);
  });
});

describe('FUA through the targets (devices behind volatile write caches)', () => {
  /** Every device behind its own volatile cache: what a FileDevice file holds is what a power cut would leave. */
  const cachedFiles: DeviceResolver = {
    identify: (name, role) => fileResolver.identify(name, role),
    open: (name, opts) => new VolatileCacheDevice(FileDevice.open(name, opts)),
  };

  test('mirror: a FUA write is on every leg when it resolves and its region is dirty in the log; a plain write is not yet', async () => {
    const leg0 = file('leg0.img', 4 * MiB);
    const leg1 = file('leg1.img', 4 * MiB);
    const log = file('log.img', 64 * 1024);
    const set = await TargetSet.open([{ name: 'm', table: `0 8192 mirror disk 3 ${log} 256 nosync 2 ${leg0} 0 ${leg1} 0` }], cachedFiles, {
      mirror: { cleanDelayMs: 60000 },
    });
    const m = set.devices.get('m') as MirrorDevice;
    const onDisk = () => [fs.readFileSync(leg0), fs.readFileSync(leg1)].map(sha);
    const dirtyRegions = () => {
      const image = decodeDiskLog(fs.readFileSync(log), { path: log });
      return Array.from({ length: image.nrRegions }, (_, r) => r).filter((r) => !image.clean.get(r));
    };
    try {
      const expected = Buffer.alloc(4 * MiB);
      await m.write(Buffer.alloc(4096, 0x11), 0, 4096, 0);
      expect(onDisk()).toEqual([sha(expected), sha(expected)]);
      expect(dirtyRegions()).toEqual([0]);
      // The next write first records region 0 clean (legs flushed, as the kernel's mirror does), then region 8 dirty.
      await m.write(Buffer.alloc(8192, 0x22), 0, 8192, MiB, { fua: true });
      expected.fill(0x11, 0, 4096);
      expected.fill(0x22, MiB, MiB + 8192);
      expect(onDisk()).toEqual([sha(expected), sha(expected)]);
      expect(dirtyRegions()).toEqual([8]);
    } finally {
      await m.flush();
      await set.close();
    }
  });

  test('snapshot-origin and snapshot: FUA writes are durable with the exceptions they needed; plain ones wait for a flush', async () => {
    const origin = file('origin.img', 4 * MiB, 7);
    const cow = file('cow.img', 2 * MiB);
    const before = fs.readFileSync(origin);
    const set = await TargetSet.open(
      [
        { name: 'o', table: `0 8192 snapshot-origin ${origin}` },
        { name: 's', table: `0 8192 snapshot ${origin} ${cow} P 8` },
      ],
      cachedFiles,
    );
    const o = set.devices.get('o') as SnapshotOriginDevice;
    const s = set.devices.get('s') as SnapshotDevice;
    try {
      await o.write(Buffer.alloc(4096, 0x44), 0, 4096, 64 * 1024, { fua: true });
      await s.write(Buffer.alloc(512, 0x33), 0, 512, 512, { fua: true });
      await s.write(Buffer.alloc(512, 0x55), 0, 512, 2048);
      await o.write(Buffer.alloc(512, 0x66), 0, 512, 64 * 1024);
      const originOnDisk = Buffer.from(before);
      originOnDisk.fill(0x44, 64 * 1024, 68 * 1024);
      expect(fs.readFileSync(origin).equals(originOnDisk)).toBe(true);
      // What the files hold now, opened afresh: the snapshot view a restart after a power cut would show.
      const view = Buffer.from(before);
      view.fill(0x33, 512, 1024);
      const reopened = await Snapshot.open(new Origin(FileDevice.open(origin, { lock: 'none' })), FileDevice.open(cow, { lock: 'none' }));
      try {
        const b = Buffer.alloc(4 * MiB);
        await reopened.read(b, 0);
        expect(b.equals(view)).toBe(true);
      } finally {
        reopened.origin.device.close();
        reopened.cow.close();
      }
    } finally {
      await o.flush();
      await s.flush();
      await set.close();
    }
  });

  test('a transient (N) snapshot: a FUA write that makes an exception is on the COW when it resolves (no commit flush covers it)', async () => {
    const origin = file('origin.img', 4 * MiB, 8);
    const cow = file('cow.img', 2 * MiB);
    const set = await TargetSet.open([{ name: 's', table: `0 8192 snapshot ${origin} ${cow} N 8` }], cachedFiles);
    const s = set.devices.get('s') as SnapshotDevice;
    try {
      // A whole chunk: written to the COW without a copy, before the exception is recorded.
      await s.write(Buffer.alloc(4096, 0x77), 0, 4096, 4096, { fua: true });
      // COW chunk 0: a transient COW has no header or metadata areas.
      expect(fs.readFileSync(cow).subarray(0, 4096).equals(Buffer.alloc(4096, 0x77))).toBe(true);
    } finally {
      await s.flush();
      await set.close();
    }
  });
});

describe('table lines', () => {
  test('snapshot arguments', () => {
    expect(snapshotArgs(parseTableLine('0 8 snapshot o c po 16'))).toEqual({ origin: 'o', cow: 'c', type: 'PO', chunkSectors: 16 });
  });

  test.each([
    ['0 8 snapshot o c P', /snapshot takes <origin> <COW> <P\|PO\|N> <chunk size>, got 3 arguments/],
    ['0 8 snapshot o c X 8', /snapshot type must be P, PO or N, got "X"/],
    ['0 8 snapshot o c P 12', /chunk size must be a power of two number of sectors, got 12/],
    ['0 8 snapshot-origin o c', /snapshot-origin takes <origin>, got 2 arguments/],
    ['0 8 mirror core 1 1024 2 a 0 b 0', /region size 1024 is larger than the mirror/],
    ['0 8 striped 2 8 a 0 b 0', /target striped cannot be served/],
    ['8 8 linear a 0', /one table line starting at sector 0/],
  ])('refuses %j, naming the device', (table, message) => {
    expect(() => planTargets([{ name: 'x', table }])).toThrow(message);
    expect(() => planTargets([{ name: 'x', table }])).toThrow(TargetSpecError);
  });

  test('a device in two roles, or a COW of two snapshots, is refused before anything is opened', async () => {
    const origin = file('origin.img', MiB);
    const cow = file('cow.img', MiB);
    await expect(
      TargetSet.open(
        [
          { name: 'a', table: `0 2048 snapshot ${origin} ${cow} P 8` },
          { name: 'b', table: `0 2048 linear ${cow} 0` },
        ],
        fileResolver,
      ),
    ).rejects.toThrow(`${cow} is the linear base of b and already the COW of a`);
    await expect(
      TargetSet.open(
        [
          { name: 'a', table: `0 2048 snapshot ${origin} ${cow} P 8` },
          { name: 'b', table: `0 2048 snapshot ${origin} ${cow} P 8` },
        ],
        fileResolver,
      ),
    ).rejects.toThrow(`${cow} is the COW of b and already the COW of a`);
    await expect(TargetSet.open([{ name: 'a', table: `0 1024 snapshot-origin ${origin}` }], fileResolver)).rejects.toThrow(
      `length 1024 must be the origin's size (${origin} has 2048 sectors)`,
    );
    expect(fs.readFileSync(cow).every((x) => x === 0)).toBe(true);
  });
});

test('a target device takes any buffer memory, and only whole sectors', async () => {
  const origin = file('origin.img', MiB, 9);
  const cow = file('cow.img', MiB);
  const set = await TargetSet.open(
    [
      { name: 'o', table: `0 2048 snapshot-origin ${origin}` },
      { name: 's', table: `0 2048 snapshot ${origin} ${cow} P 8` },
    ],
    fileResolver,
  );
  try {
    const o = set.devices.get('o')!;
    // A payload at an odd place in a larger buffer, as a socket reader hands it over.
    const payload = Buffer.alloc(4096 + 3, 0x3c).subarray(3);
    await o.write(payload, 0, 4096, 8192);
    const back = Buffer.alloc(4096 + 1).subarray(1);
    await o.read(back, 0, 4096, 8192);
    expect(back.every((b) => b === 0x3c)).toBe(true);
    await expect(o.write(payload, 0, 4096, 100)).rejects.toThrow(/offset and length must be whole 512-byte sectors/);
    await expect(o.zeroRange(0, 1000)).rejects.toMatchObject({ code: 'EINVAL' });
  } finally {
    await set.close();
  }
});

/** A real device whose reads, while armed, wait for a gate before they are issued: a slow read, deterministically. */
class GatedReads extends BorrowedDevice {
  armed = false;
  private release!: () => void;
  private readonly gate = new Promise<void>((r) => (this.release = r));

  override read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    if (!this.armed) return super.read(buf, bufOffset, bytes, byteOffset);
    return this.gate.then(() => super.read(buf, bufOffset, bytes, byteOffset));
  }

  openGate(): void {
    this.release();
  }
}

test('an origin write waits for a snapshot read that is still reading its chunk from the origin', async () => {
  const origin = file('origin.img', MiB, 13);
  const before = fs.readFileSync(origin);
  const cow = file('cow.img', MiB);
  let gated: GatedReads | undefined;
  const resolver = {
    identify: fileResolver.identify,
    open: (name: string, opts: { write: boolean }) =>
      name === origin ? (gated = new GatedReads(FileDevice.open(name, opts))) : fileResolver.open(name, opts),
  };
  const set = await TargetSet.open(
    [
      { name: 'o', table: `0 2048 snapshot-origin ${origin}` },
      { name: 's', table: `0 2048 snapshot ${origin} ${cow} P 8` },
    ],
    resolver,
  );
  try {
    const view = Buffer.alloc(4096);
    gated!.armed = true;
    const reading = set.devices.get('s')!.read(view, 0, 4096, 5 * 4096);
    gated!.armed = false;
    let written = false;
    const writing = set.devices
      .get('o')!
      .write(Buffer.alloc(4096, 0xee), 0, 4096, 5 * 4096)
      .then(() => (written = true));
    // The copy-out and the commit run; the origin write itself must wait for the read.
    await new Promise((r) => setTimeout(r, 300));
    expect(written).toBe(false);
    gated!.openGate();
    await Promise.all([reading, writing]);
    expect(sha(view)).toBe(sha(before.subarray(5 * 4096, 6 * 4096)));
    expect(
      fs
        .readFileSync(origin)
        .subarray(5 * 4096, 6 * 4096)
        .every((b) => b === 0xee),
    ).toBe(true);
  } finally {
    await set.close();
    gated?.inner.close();
  }
});

test('snapshot reads racing origin writes of the same chunks always see the old data', async () => {
  const origin = file('origin.img', 4 * MiB, 12);
  const before = fs.readFileSync(origin);
  const cow = file('cow.img', 4 * MiB);
  const set = await TargetSet.open(
    [
      { name: 'o', table: `0 8192 snapshot-origin ${origin}` },
      { name: 's', table: `0 8192 snapshot ${origin} ${cow} P 8` },
    ],
    fileResolver,
  );
  try {
    const o = set.devices.get('o')!;
    const s = set.devices.get('s')!;
    const reads: Promise<boolean>[] = [];
    const writes: Promise<void>[] = [];
    for (let chunk = 0; chunk < 256; chunk++) {
      const at = chunk * 4096;
      const view = Buffer.alloc(4096);
      // The read is issued first: it looks the chunk up before the write's exception exists.
      reads.push(s.read(view, 0, 4096, at).then(() => view.equals(before.subarray(at, at + 4096))));
      writes.push(o.write(Buffer.alloc(4096, 0xee), 0, 4096, at));
    }
    await Promise.all(writes);
    expect((await Promise.all(reads)).filter((ok) => !ok)).toHaveLength(0);
    expect(sha(await readAll(s))).toBe(sha(before));
  } finally {
    await set.close();
  }
});

test('a device name given twice is refused', () => {
  expect(() =>
    planTargets([
      { name: 'a', table: '0 8 linear x 0' },
      { name: 'a', table: '0 8 linear y 0' },
    ]),
  ).toThrow(new TargetSpecError('a', 'the name is given twice'));
});

describe('data maps', () => {
  const KiB = 1024;
  /** A sparse file of `bytes` with data at each [byteOffset, +bytes). */
  function sparse(name: string, bytes: number, data: [number, number][]): string {
    const p = path.join(dir, name);
    const fd = fs.openSync(p, 'w');
    try {
      fs.ftruncateSync(fd, bytes);
      for (const [at, n] of data) fs.writeSync(fd, Buffer.alloc(n, 0x5a), 0, n, at);
    } finally {
      fs.closeSync(fd);
    }
    return p;
  }

  test('linear, mirror (the default leg) and snapshot devices map their data through the devices underneath', async () => {
    const a = sparse('a.img', 4 * MiB, [[MiB, 64 * KiB]]);
    const b = sparse('b.img', 4 * MiB, [[2 * MiB, 64 * KiB]]);
    const c = sparse('c.img', MiB, [[0, 64 * KiB]]);
    const origin = sparse('origin.img', 2 * MiB, [[64 * KiB, 64 * KiB]]);
    const cow = file('cow.img', MiB);
    const set = await TargetSet.open(
      [
        { name: 'lin', table: `0 4096 linear ${a} 1024` },
        { name: 'm', table: `0 2048 mirror core 2 256 nosync 2 ${b} 2048 ${c} 0` },
        { name: 's', table: `0 4096 snapshot ${origin} ${cow} N 128` },
      ],
      fileResolver,
    );
    try {
      const lin = set.devices.get('lin')!;
      expect(await lin.dataMap!()!.dataExtents(0, 2 * MiB)).toEqual([{ byteOffset: MiB / 2, bytes: 64 * KiB }]);
      const m = set.devices.get('m') as MirrorDevice;
      // Leg 0 (b from 1 MiB) is the default leg: its data at 2 MiB is the mirror's at 1 MiB; c's is not seen.
      expect(await m.dataMap()!.dataExtents(0, MiB + 32 * KiB)).toEqual([{ byteOffset: MiB, bytes: 32 * KiB }]);
      const s = set.devices.get('s') as SnapshotDevice;
      const w = Buffer.alloc(4096, 1);
      await s.write(w, 0, 4096, MiB + 4096);
      expect(s.heldExtents(0, 2 * MiB)).toEqual([{ byteOffset: MiB, bytes: 64 * KiB }]);
      expect(s.heldExtents(MiB + 8192, 4096)).toEqual([{ byteOffset: MiB + 8192, bytes: 4096 }]);
      expect(await s.dataMap()!.dataExtents(0, 2 * MiB)).toEqual([
        { byteOffset: 64 * KiB, bytes: 64 * KiB },
        { byteOffset: MiB, bytes: 64 * KiB },
      ]);
    } finally {
      await set.close();
    }
  });
});
