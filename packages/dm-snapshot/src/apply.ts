import { createHash, Hash } from 'crypto';
import { BlockDevice, DeviceError, DmtoolError, SECTOR_BYTES } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { ChunkRange } from './delta';
import { SnapshotError } from './errors';
import {
  chunkDataBytes,
  decodeExportHeader,
  decodeRecordHead,
  decodeTrailer,
  EXPORT_HEADER_BYTES,
  EXPORT_TRAILER_BYTES,
  ExportHeader,
  RECORD_DIGEST_BYTES,
  RECORD_HEAD_BYTES,
  RecordHead,
} from './export-format';

/** Where a stream is read from: `read` fills up to `bytes` of `buf` and returns how many; fewer only at the end. */
export interface ByteReader {
  read(buf: Buffer, bytes: number): Promise<number>;
}

function badStream(message: string): SnapshotError {
  return new SnapshotError('EINVAL', 'bad-stream', message);
}

function chunksText(start: number, count: number): string {
  return count === 1 ? `chunk ${start}` : `chunks ${start}..${start + count - 1}`;
}

export interface StreamRecord {
  head: RecordHead;
  /** The record's data; valid until the next record is read. */
  data: Buffer;
}

export interface StreamSummary {
  header: ExportHeader;
  digest: string;
}

/**
 * Reads an export stream record by record and checks each rule of
 * docs/snapshot-export.md before handing a record out: the record's digest,
 * its index, its chunks inside the origin, ascending and not overlapping
 * the ones before, the counts of the header; at the end the trailer and the
 * stream digest, and nothing after it.
 */
export class ExportStreamReader {
  private readonly streamHash: Hash = createHash('sha256');
  private readonly head = Buffer.alloc(RECORD_HEAD_BYTES);
  private readonly digestBuf = Buffer.alloc(RECORD_DIGEST_BYTES);
  private readonly data: Buffer;
  private records = 0;
  private chunks = 0;
  private ranges = 0;
  private dataBytes = 0;
  private bytes = EXPORT_HEADER_BYTES;
  private nextChunk = 0;
  private finished?: StreamSummary;

  private constructor(
    private readonly source: ByteReader,
    readonly header: ExportHeader,
    headerBytes: Buffer,
  ) {
    this.streamHash.update(headerBytes);
    this.data = allocBuffer(Math.max(1, Math.min(header.recordChunks * header.chunkSectors * SECTOR_BYTES, header.dataBytes)));
  }

  /** Read and check the header. */
  static async open(source: ByteReader): Promise<ExportStreamReader> {
    const b = Buffer.alloc(EXPORT_HEADER_BYTES);
    const n = await source.read(b, b.length);
    const header = decodeExportHeader(b.subarray(0, n));
    return new ExportStreamReader(source, header, b);
  }

  /** Data bytes handed out so far. */
  get dataBytesRead(): number {
    return this.dataBytes;
  }

  /** Stream bytes read so far. */
  get bytesRead(): number {
    return this.bytes;
  }

  private async readFully(buf: Buffer, bytes: number, what: () => string): Promise<void> {
    const n = await this.source.read(buf, bytes);
    this.bytes += n;
    if (n < bytes)
      throw badStream(`the stream ends inside ${what()} (${this.bytes} bytes of ${this.header.streamBytes}): it was cut short`);
  }

  /** The next record, checked; undefined once the trailer has been read and checked. */
  async next(): Promise<StreamRecord | undefined> {
    const h = this.header;
    if (this.records === h.recordCount) {
      await this.finish();
      return undefined;
    }
    const k = this.records;
    await this.readFully(this.head, RECORD_HEAD_BYTES, () => `record ${k}'s head`);
    const r = decodeRecordHead(this.head);
    const where = `record ${k} (${chunksText(r.start, r.count)})`;
    if (r.index !== k) throw badStream(`record ${k} says it is record ${r.index}: records are missing, repeated or out of order`);
    if (r.count < 1 || r.count > h.recordChunks) throw badStream(`${where}: a record holds 1..${h.recordChunks} chunks`);
    const originChunks = Math.ceil(h.originSectors / h.chunkSectors);
    if (r.start + r.count > originChunks)
      throw badStream(
        `${where} lies past the origin end (${originChunks} chunks of ${h.chunkSectors} sectors, ${h.originSectors} sectors)`,
      );
    if (r.start < this.nextChunk)
      throw badStream(`${where} overlaps or precedes the record before it, which ends at chunk ${this.nextChunk - 1}: ranges must ascend`);
    if (this.chunks + r.count > h.chunkCount || k + 1 > h.recordCount)
      throw badStream(`${where}: more chunks than the header's ${h.chunkCount}`);
    const bytes = chunkDataBytes(r.start, r.count, h.chunkSectors, h.originSectors);
    const data = this.data.subarray(0, bytes);
    await this.readFully(data, bytes, () => `the data of ${where}`);
    await this.readFully(this.digestBuf, RECORD_DIGEST_BYTES, () => `the digest of ${where}`);
    const digest = createHash('sha256').update(this.head).update(data).digest();
    if (!digest.equals(this.digestBuf)) throw badStream(`${where}: checksum mismatch, its head or data is damaged`);
    this.streamHash.update(digest);
    if (r.start !== this.nextChunk || k === 0) this.ranges++;
    this.nextChunk = r.start + r.count;
    this.chunks += r.count;
    this.dataBytes += bytes;
    this.records++;
    return { head: r, data };
  }

  private async finish(): Promise<void> {
    const h = this.header;
    const bytesBefore = this.bytes;
    const t = Buffer.alloc(EXPORT_TRAILER_BYTES);
    await this.readFully(t, EXPORT_TRAILER_BYTES, () => 'the trailer');
    const trailer = decodeTrailer(t);
    if (this.chunks !== h.chunkCount || this.ranges !== h.rangeCount || this.dataBytes !== h.dataBytes)
      throw badStream(
        `the records hold ${this.chunks} chunks in ${this.ranges} ranges, the header says ${h.chunkCount} in ${h.rangeCount}`,
      );
    if (trailer.recordCount !== this.records || trailer.chunkCount !== this.chunks || trailer.bytesBefore !== bytesBefore)
      throw badStream(
        `trailer: ${trailer.recordCount} records, ${trailer.chunkCount} chunks and ${trailer.bytesBefore} bytes before it, the stream has ${this.records}, ${this.chunks} and ${bytesBefore}`,
      );
    const digest = this.streamHash.digest('hex');
    if (trailer.digest !== digest) throw badStream(`trailer: stream digest mismatch (${trailer.digest}, the records give ${digest})`);
    const extra = await this.source.read(Buffer.alloc(1), 1);
    if (extra > 0) throw badStream(`bytes follow the trailer at byte ${this.bytes}: not one whole stream`);
    this.finished = { header: h, digest };
  }

  /** The checked stream, once next() returned undefined. */
  get summary(): StreamSummary {
    if (!this.finished) throw new Error('the stream has not been read to its end');
    return this.finished;
  }
}

/** Read a whole stream and check it, writing nothing. */
export async function verifyStream(
  source: ByteReader,
  opts: { signal?: AbortSignal; onProgress?(streamBytes: number): void; onHeader?(h: ExportHeader): void } = {},
): Promise<StreamSummary> {
  const reader = await ExportStreamReader.open(source);
  opts.onHeader?.(reader.header);
  while (await reader.next()) {
    if (opts.signal?.aborted) throw new SnapshotError('ECANCELED', 'aborted', 'stopped while checking the stream; nothing written');
    opts.onProgress?.(reader.bytesRead);
  }
  opts.onProgress?.(reader.bytesRead);
  return reader.summary;
}

/** The chunks an apply has written so far, as coalesced ranges, for the message of an apply that stopped. */
export class AppliedChunks {
  private readonly shown: ChunkRange[] = [];
  private ranges = 0;
  chunks = 0;
  records = 0;

  add(r: RecordHead): void {
    const last = this.shown.at(-1);
    this.records++;
    this.chunks += r.count;
    if (last && last.start + last.count === r.start && this.ranges === this.shown.length) {
      last.count += r.count;
      return;
    }
    this.ranges++;
    if (this.shown.length < 8) this.shown.push({ start: r.start, count: r.count });
  }

  /** What was written: every record up to the one that failed, as chunk ranges. */
  describe(): string {
    if (this.records === 0) return 'nothing was written';
    const list = this.shown.map((r) => (r.count === 1 ? `${r.start}` : `${r.start}..${r.start + r.count - 1}`)).join(', ');
    const more = this.ranges > this.shown.length ? `, and ${this.ranges - this.shown.length} more ranges` : '';
    return `records 0..${this.records - 1} were written and flushed: ${this.chunks} chunks in ${this.ranges} ranges (chunks ${list}${more}); no later chunk was written`;
  }
}

export interface ApplyOptions {
  signal?: AbortSignal;
  /** Data bytes written so far. */
  onProgress?(dataBytes: number): void;
  /** Filled as records are written; says what was written if the apply stops. */
  applied?: AppliedChunks;
}

/**
 * Write a stream's records to `target` as they are read, each only after
 * its own checks passed, then flush. A stream found broken after a record
 * was written, an I/O error or an interrupt flushes what was written and
 * says exactly which chunks that was (docs/snapshot-export.md#apply).
 * Refuses a target whose size is not the origin's.
 */
export async function applyStream(source: ByteReader, target: BlockDevice, opts: ApplyOptions = {}): Promise<StreamSummary> {
  const reader = await ExportStreamReader.open(source);
  const h = reader.header;
  checkTargetSize(h, target);
  const written = opts.applied ?? new AppliedChunks();
  const chunkBytes = h.chunkSectors * SECTOR_BYTES;
  try {
    for (let rec = await reader.next(); rec; rec = await reader.next()) {
      if (opts.signal?.aborted) throw new SnapshotError('ECANCELED', 'aborted', 'apply stopped');
      await target.write(rec.data, 0, rec.data.length, rec.head.start * chunkBytes);
      written.add(rec.head);
      opts.onProgress?.(reader.dataBytesRead);
    }
    await target.flush();
    return reader.summary;
  } catch (e) {
    if (written.records === 0) throw e;
    let flushed = '';
    try {
      await target.flush();
    } catch (f) {
      flushed = ` (the flush failed too: ${(f as Error).message.split('\n')[0]})`;
    }
    const what = `${written.describe()}${flushed}`;
    if (e instanceof SnapshotError && e.reason === 'aborted') throw new SnapshotError('ECANCELED', 'aborted', what, { path: target.path });
    const code = e instanceof DeviceError || e instanceof SnapshotError ? e.code : 'EIO';
    throw new SnapshotError(code, 'apply-stopped', `${withoutCode(e)}; ${what}`, { path: target.path });
  }
}

/** An error's first line without the errno name dmtool's errors start with (the new error carries it). */
function withoutCode(e: unknown): string {
  const line = e instanceof Error ? e.message.split('\n')[0] : String(e);
  return e instanceof DmtoolError && line.startsWith(`${e.code}: `) ? line.slice(e.code.length + 2) : line;
}

/** The target must be exactly the origin's size: the stream's chunks are positions on it. */
export function checkTargetSize(h: ExportHeader, target: BlockDevice): void {
  if (target.sizeSectors !== h.originSectors) {
    throw new SnapshotError(
      'EINVAL',
      'bad-stream',
      `target ${target.path} is ${target.sizeSectors} sectors, the stream's origin ${h.originSectors}: a stream applies only to a device of its origin's size`,
    );
  }
}
