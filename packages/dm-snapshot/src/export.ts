import { createHash } from 'crypto';
import { BlockDevice, SECTOR_BYTES } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { ChangedChunks, changedRanges, readChangedChunks } from './changed-chunks';
import { SnapshotError } from './errors';
import {
  chunkDataBytes,
  encodeExportHeader,
  encodeRecordHead,
  encodeTrailer,
  EXPORT_HEADER_BYTES,
  EXPORT_VERSION,
  ExportData,
  ExportHeader,
  recordChunksFor,
  RECORD_DIGEST_BYTES,
  RECORD_HEAD_BYTES,
  streamBytesFor,
} from './export-format';

/** A record of the stream: chunks olds[first .. first + count - 1], consecutive origin chunks. */
interface PlannedRecord {
  index: number;
  first: number;
  start: number;
  count: number;
  dataBytes: number;
}

export interface ExportPlan {
  header: ExportHeader;
  chunks: ChangedChunks;
}

export interface ExportOptions {
  /** Takes each piece of the stream; awaited, so a slow reader slows the export. The buffer is reused afterwards. */
  write(piece: Buffer): Promise<void>;
  signal?: AbortSignal;
  /** Data bytes read and written so far. */
  onProgress?(dataBytes: number): void;
}

export interface ExportResult {
  header: ExportHeader;
  /** sha256 of the header and the record digests (the trailer's), hex. */
  digest: string;
}

/** Pieces smaller than this are gathered before they are written. */
const STAGING_BYTES = 1 << 20;

function* plannedRecords(c: ChangedChunks, originSectors: number, recordChunks: number): Generator<PlannedRecord> {
  const olds = c.olds;
  const cs = c.geometry.chunkSectors;
  let index = 0;
  for (let i = 0; i < olds.length;) {
    let count = 1;
    while (count < recordChunks && i + count < olds.length && olds[i + count] === olds[i] + count) count++;
    yield { index: index++, first: i, start: olds[i], count, dataBytes: chunkDataBytes(olds[i], count, cs, originSectors) };
    i += count;
  }
}

/**
 * Read the COW's table (streaming, docs/snapshot-export.md#memory) and plan
 * the stream: its header, with every count known before the first byte.
 */
export async function planExport(origin: BlockDevice, cow: BlockDevice, data: ExportData): Promise<ExportPlan> {
  const chunks = await readChangedChunks(cow, origin);
  const cs = chunks.header.chunkSectors;
  const recordChunks = recordChunksFor(cs);
  let recordCount = 0;
  let dataBytes = 0;
  for (const r of plannedRecords(chunks, origin.sizeSectors, recordChunks)) {
    recordCount++;
    dataBytes += r.dataBytes;
  }
  let rangeCount = 0;
  for (const _ of changedRanges(chunks)) rangeCount++;
  const header: ExportHeader = {
    version: EXPORT_VERSION,
    chunkSectors: cs,
    data,
    originSectors: origin.sizeSectors,
    rangeCount,
    chunkCount: chunks.olds.length,
    recordCount,
    recordChunks,
    streamBytes: streamBytesFor(recordCount, dataBytes),
    dataBytes,
    cowSectors: cow.sizeSectors,
    cowVersion: chunks.header.version,
  };
  return { header, chunks };
}

/** Gathers small pieces into one buffer; large ones go through as they are. */
class StagedWriter {
  private readonly staging = Buffer.alloc(STAGING_BYTES);
  private used = 0;

  constructor(private readonly write: (piece: Buffer) => Promise<void>) {}

  async add(piece: Buffer): Promise<void> {
    if (this.used + piece.length > STAGING_BYTES) await this.flush();
    if (piece.length >= STAGING_BYTES / 4) return this.write(piece);
    piece.copy(this.staging, this.used);
    this.used += piece.length;
  }

  async flush(): Promise<void> {
    if (this.used === 0) return;
    const n = this.used;
    this.used = 0;
    await this.write(this.staging.subarray(0, n));
  }
}

/**
 * Write the stream of a plan: the header, each record (head, data, digest),
 * the trailer. Data is read a record ahead of the writing, in one read per
 * record from the origin (`--data origin`), or one read per run of
 * consecutive COW chunks (`--data snapshot`).
 */
export async function writeExport(origin: BlockDevice, cow: BlockDevice, plan: ExportPlan, opts: ExportOptions): Promise<ExportResult> {
  const h = plan.header;
  const c = plan.chunks;
  const cs = h.chunkSectors;
  const chunkBytes = cs * SECTOR_BYTES;
  const out = new StagedWriter(opts.write);
  const streamHash = createHash('sha256');
  const headerBytes = encodeExportHeader(h);
  streamHash.update(headerBytes);
  await out.add(headerBytes);
  let bytesBefore = EXPORT_HEADER_BYTES;
  const bufBytes = Math.max(1, Math.min(h.recordChunks * chunkBytes, h.dataBytes));
  const buffers = [allocBuffer(bufBytes), allocBuffer(bufBytes)];

  const readRecord = async (r: PlannedRecord, buf: Buffer): Promise<void> => {
    if (h.data === 'origin') return origin.read(buf, 0, r.dataBytes, r.start * chunkBytes);
    for (let j = 0; j < r.count;) {
      let run = 1;
      while (j + run < r.count && c.news[r.first + j + run] === c.news[r.first + j] + run) run++;
      const at = j * chunkBytes;
      await cow.read(buf, at, Math.min(run * chunkBytes, r.dataBytes - at), c.news[r.first + j] * chunkBytes);
      j += run;
    }
  };

  const records = plannedRecords(c, h.originSectors, h.recordChunks);
  let current = records.next();
  let pending = current.done ? undefined : readRecord(current.value, buffers[0]);
  let dataDone = 0;
  for (let k = 0; !current.done; k++) {
    if (opts.signal?.aborted) {
      await pending?.catch(() => undefined);
      throw new SnapshotError('ECANCELED', 'aborted', `export stopped after ${k} of ${h.recordCount} records`);
    }
    const r = current.value;
    const buf = buffers[k % 2];
    await pending;
    const next = records.next();
    pending = next.done ? undefined : readRecord(next.value, buffers[(k + 1) % 2]);
    try {
      const head = encodeRecordHead({ start: r.start, count: r.count, index: r.index });
      const data = buf.subarray(0, r.dataBytes);
      const digest = createHash('sha256').update(head).update(data).digest();
      streamHash.update(digest);
      await out.add(head);
      await out.add(data);
      await out.add(digest);
    } catch (e) {
      await pending?.catch(() => undefined);
      throw e;
    }
    bytesBefore += RECORD_HEAD_BYTES + r.dataBytes + RECORD_DIGEST_BYTES;
    dataDone += r.dataBytes;
    opts.onProgress?.(dataDone);
    current = next;
  }
  const digest = streamHash.digest('hex');
  await out.add(encodeTrailer({ recordCount: h.recordCount, chunkCount: h.chunkCount, bytesBefore, digest }));
  await out.flush();
  return { header: h, digest };
}
