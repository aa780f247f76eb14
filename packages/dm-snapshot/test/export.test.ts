import { createHash } from 'crypto';
import { BlockDevice, MemoryDevice } from '@dmtool/devices';
import {
  applyStream,
  ByteReader,
  decodeExportHeader,
  decodeTrailer,
  encodeExportHeader,
  encodeTrailer,
  ExportData,
  ExportHeader,
  Origin,
  planExport,
  PersistentStore,
  readChangedChunks,
  Snapshot,
  SnapshotError,
  streamBytesFor,
  verifyStream,
  writeExport,
} from '@dmtool/dm-snapshot';

const HEADER: ExportHeader = {
  version: 1,
  chunkSectors: 8,
  data: 'snapshot',
  originSectors: 131075,
  rangeCount: 2,
  chunkCount: 5,
  recordCount: 3,
  recordChunks: 1024,
  streamBytes: streamBytesFor(3, 5 * 4096),
  dataBytes: 5 * 4096,
  cowSectors: 32768,
  cowVersion: 1,
};

describe('the stream codecs (docs/snapshot-export.md#the-format)', () => {
  test('a header encodes to 128 bytes at the documented offsets and decodes back', () => {
    const b = encodeExportHeader(HEADER);
    expect(b.length).toBe(128);
    expect(b.toString('latin1', 0, 8)).toBe('DMTEXPRT');
    expect([b.readUInt32LE(8), b.readUInt32LE(12), b.readUInt32LE(16), b.readUInt32LE(20)]).toEqual([1, 128, 8, 2]);
    expect(b.readBigUInt64LE(24)).toBe(131075n);
    expect(b.readBigUInt64LE(64)).toBe(BigInt(128 + 3 * 56 + 5 * 4096 + 64));
    expect(b.subarray(96).equals(createHash('sha256').update(b.subarray(0, 96)).digest())).toBe(true);
    expect(decodeExportHeader(b)).toEqual(HEADER);
  });

  test.each<[string, Partial<ExportHeader>]>([
    ['a stream length that is not the sum of its parts', { streamBytes: HEADER.streamBytes + 1 }],
    ['more records than chunks', { recordCount: 6, streamBytes: streamBytesFor(6, 5 * 4096) }],
    ['more data than the chunks hold', { dataBytes: 5 * 4096 + 512, streamBytes: streamBytesFor(3, 5 * 4096 + 512) }],
    ['another record size', { recordChunks: 1 }],
    ['more chunks than the origin', { originSectors: 32 }],
  ])('a header with %s is refused', (_what, change) => {
    expect(() => decodeExportHeader(encodeExportHeader({ ...HEADER, ...change }))).toThrow(
      'header: its counts and lengths contradict each other',
    );
  });

  test('a header damaged after its checksum was made is refused', () => {
    const b = encodeExportHeader(HEADER);
    b[40] ^= 0x80;
    expect(() => decodeExportHeader(b)).toThrow(
      new SnapshotError('EINVAL', 'bad-stream', 'header checksum mismatch: the header is damaged'),
    );
  });

  test('the trailer round-trips', () => {
    const t = { recordCount: 3, chunkCount: 5, bytesBefore: 123456, digest: 'ab'.repeat(32) };
    const b = encodeTrailer(t);
    expect(b.length).toBe(64);
    expect(b.toString('latin1', 0, 8)).toBe('DMTEXEND');
    expect(decodeTrailer(b)).toEqual(t);
  });
});

function bufferReader(data: Buffer): ByteReader {
  let at = 0;
  return {
    async read(buf, bytes) {
      const n = Math.min(bytes, data.length - at);
      data.copy(buf, 0, at, at + n);
      at += n;
      return n;
    },
  };
}

async function contents(d: BlockDevice): Promise<Buffer> {
  const b = Buffer.alloc(d.sizeBytes);
  await d.read(b, 0, b.length, 0);
  return b;
}

describe('export and apply on memory devices', () => {
  const chunk = 4096;
  /** An origin of 64 chunks, a snapshot, then origin writes in an order far from origin order (a table out of order). */
  async function scenario(): Promise<{ origin: MemoryDevice; cow: MemoryDevice; atSnapshot: Buffer; view: Buffer }> {
    const origin = new MemoryDevice(64 * chunk);
    const cow = new MemoryDevice(128 * chunk);
    for (let c = 0; c < 64; c++) await origin.write(Buffer.alloc(chunk, c + 1), 0, chunk, c * chunk);
    const atSnapshot = await contents(origin);
    const o = new Origin(origin);
    const snap = await Snapshot.create(o, cow, { chunkSectors: 8 });
    for (const c of [40, 3, 41, 42, 5, 4, 63, 20]) await o.write(Buffer.alloc(chunk, 0xf0 + (c % 16)), c * 8);
    await snap.write(Buffer.alloc(chunk, 0xee), 10 * 8);
    const view = Buffer.alloc(64 * chunk);
    await snap.read(view, 0);
    snap.close();
    await o.close();
    return { origin, cow, atSnapshot, view };
  }

  async function exported(origin: BlockDevice, cow: BlockDevice, data: ExportData): Promise<{ stream: Buffer; digest: string }> {
    const parts: Buffer[] = [];
    const plan = await planExport(origin, cow, data);
    const r = await writeExport(origin, cow, plan, { write: async (piece) => void parts.push(Buffer.from(piece)) });
    const stream = Buffer.concat(parts);
    expect(stream.length).toBe(plan.header.streamBytes);
    return { stream, digest: r.digest };
  }

  test('the changed chunks come sorted by origin chunk, each with its COW chunk', async () => {
    const { origin, cow } = await scenario();
    const c = await readChangedChunks(cow, origin);
    expect([...c.olds]).toEqual([3, 4, 5, 10, 20, 40, 41, 42, 63]);
    const store = await PersistentStore.open(cow);
    expect([...c.news]).toEqual([...c.olds].map((old) => store.table.lookup(old)));
  });

  test.each<[ExportData, 'as it was at the snapshot' | 'now', 'origin now' | 'snapshot view']>([
    ['origin', 'as it was at the snapshot', 'origin now'],
    ['snapshot', 'now', 'snapshot view'],
  ])('--data %s applied to the origin %s gives the %s', async (data, from, to) => {
    const s = await scenario();
    const now = await contents(s.origin);
    const { stream, digest } = await exported(s.origin, s.cow, data);
    const h = decodeExportHeader(stream.subarray(0, 128));
    expect(h).toMatchObject({ data, rangeCount: 5, chunkCount: 9, recordCount: 5, dataBytes: 9 * chunk });
    expect((await verifyStream(bufferReader(stream))).digest).toBe(digest);
    const target = new MemoryDevice(64 * chunk);
    await target.write(from === 'now' ? now : s.atSnapshot, 0, 64 * chunk, 0);
    expect((await applyStream(bufferReader(stream), target)).digest).toBe(digest);
    expect((await contents(target)).equals(to === 'origin now' ? now : s.view)).toBe(true);
  });

  test('an invalidated snapshot is refused', async () => {
    const { origin, cow } = await scenario();
    const b = Buffer.alloc(4);
    await cow.write(b, 0, 4, 4);
    await expect(planExport(origin, cow, 'origin')).rejects.toMatchObject({ reason: 'snapshot-invalid', kind: 'bad-input' });
  });
});
