import { BlockDevice, crashPoint, SECTOR_BYTES } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { lvmCrc, LVM_INITIAL_CRC } from './crc';
import { LvmError } from './errors';
import { decodeMdaHeader, MDA_HEADER_BYTES, MdaHeader, RawLocation } from './mda-header';
import { PhysicalVolume } from './read-pv';

/** Metadata text starts on 512-byte boundaries of its area (lib/format_text/format-text.c, MDA_ORIGINAL_ALIGNMENT). */
const TEXT_ALIGN_BYTES = 512;
const FIRST_RAW_LOCN_BYTE = 40;
const RAW_LOCN_BYTES = 24;

/** One write of a text copy: absolute byte offset on the PV and the bytes (the text, zero-padded to a sector). */
export interface TextWrite {
  byteOffset: number;
  bytes: Buffer;
}

/** The text as lvm2 stores it: the characters, then a NUL that the size and checksum include. */
export function storedText(text: string): Buffer {
  return Buffer.concat([Buffer.from(text, 'utf8'), Buffer.alloc(1)]);
}

/**
 * Where lvm2 puts the next copy of the text in an area's circular buffer
 * (`_vg_write_raw` and `_next_rlocn_offset`): right after the committed
 * copy, rounded up to 512 bytes, or back at the start of the buffer when
 * fewer than 512 bytes are left; wrapping past the end of the area into
 * the buffer's start. A copy larger than half the buffer less 512 bytes,
 * or one that would overlap the committed copy, is refused: the committed
 * copy must stay intact until the new one is committed.
 */
export function planTextWrite(header: MdaHeader, stored: Buffer, path?: string): { location: RawLocation; writes: TextWrite[] } {
  const areaBytes = header.sizeBytes;
  const newSize = stored.length;
  const maxSize = Math.floor((areaBytes - MDA_HEADER_BYTES) / 2) - 512;
  if (newSize > maxSize) {
    throw new LvmError('metadata-write', `metadata of ${newSize} bytes exceeds the ${maxSize}-byte maximum of the metadata area`, {
      path,
      sector: header.startByte / SECTOR_BYTES,
    });
  }
  const old = header.locations[0];
  let oldStart = 0;
  let oldLast = 0;
  let oldWrap = 0;
  let newStart = MDA_HEADER_BYTES;
  if (old) {
    oldStart = old.byteOffset;
    if (old.byteOffset + old.sizeBytes > areaBytes) {
      oldWrap = old.byteOffset + old.sizeBytes - areaBytes;
      oldLast = oldWrap + MDA_HEADER_BYTES - 1;
    } else oldLast = old.byteOffset + old.sizeBytes - 1;
    if (areaBytes - oldLast < TEXT_ALIGN_BYTES) newStart = MDA_HEADER_BYTES;
    else {
      newStart = Math.ceil((oldLast + 1) / TEXT_ALIGN_BYTES) * TEXT_ALIGN_BYTES;
      if (newStart > areaBytes - TEXT_ALIGN_BYTES) newStart = MDA_HEADER_BYTES;
    }
  }
  const newWrap = Math.max(0, newStart + newSize - areaBytes);
  const newLast = newWrap ? newWrap + MDA_HEADER_BYTES - 1 : newStart + newSize - 1;
  if (old) {
    const clear =
      (!newWrap && !oldWrap && newStart > oldLast) ||
      (!newWrap && !oldWrap && newStart < oldStart && newLast < oldStart) ||
      (oldWrap > 0 && !newWrap && oldLast < newStart && newLast < oldStart) ||
      (newWrap > 0 && !oldWrap && newLast < oldStart && oldLast < newStart);
    if (!clear) {
      throw new LvmError('metadata-write', `metadata of ${newSize} bytes does not fit beside the committed copy in the circular buffer`, {
        path,
        sector: header.startByte / SECTOR_BYTES,
      });
    }
  }
  const padded = (b: Buffer) => Buffer.concat([b, Buffer.alloc((SECTOR_BYTES - (b.length % SECTOR_BYTES)) % SECTOR_BYTES)]);
  const writes: TextWrite[] = newWrap
    ? [
        { byteOffset: header.startByte + newStart, bytes: stored.subarray(0, newSize - newWrap) },
        { byteOffset: header.startByte + MDA_HEADER_BYTES, bytes: padded(stored.subarray(newSize - newWrap)) },
      ]
    : [{ byteOffset: header.startByte + newStart, bytes: padded(stored) }];
  return { location: { byteOffset: newStart, sizeBytes: newSize, checksum: lvmCrc(stored), flags: 0 }, writes };
}

/**
 * The area header with `location` committed: slot 0 points at the new
 * text, slot 1 (the precommitted copy) is cleared, the checksum is
 * recomputed; every other byte is kept (`_vg_commit_raw_rlocn`).
 */
export function committedHeader(raw: Buffer, location: RawLocation): Buffer {
  const b = Buffer.from(raw.subarray(0, MDA_HEADER_BYTES));
  const slot0 = FIRST_RAW_LOCN_BYTE;
  b.writeBigUInt64LE(BigInt(location.byteOffset), slot0);
  b.writeBigUInt64LE(BigInt(location.sizeBytes), slot0 + 8);
  b.writeUInt32LE(location.checksum, slot0 + 16);
  b.writeUInt32LE(location.flags, slot0 + 20);
  b.fill(0, slot0 + RAW_LOCN_BYTES, slot0 + 2 * RAW_LOCN_BYTES);
  b.writeUInt32LE(lvmCrc(b.subarray(4), LVM_INITIAL_CRC), 0);
  return b;
}

interface AreaUpdate {
  device: BlockDevice;
  areaByte: number;
  header: Buffer;
  writes: TextWrite[];
}

async function readBytes(device: BlockDevice, byteOffset: number, bytes: number): Promise<Buffer> {
  const buf = allocBuffer(bytes);
  await device.read(buf, 0, bytes, byteOffset);
  return buf;
}

async function writeBytes(device: BlockDevice, bytes: Buffer, byteOffset: number): Promise<void> {
  const buf = allocBuffer(bytes.length);
  bytes.copy(buf);
  await device.write(buf, 0, buf.length, byteOffset);
}

export interface WriteMetadataOptions {
  /** Only the areas holding this VG's metadata are written. */
  vgUuid: string;
  /** Plan and check everything, write nothing. */
  dryRun?: boolean;
  /** Leave out areas that already commit this seqno (finishing an update a crash cut short). */
  skipSeqno?: number;
}

/**
 * Write a new version of a VG's metadata into every metadata area of its
 * PVs that holds it, in lvm2's order (docs/lvm-format.md#writing): every
 * area's header is read again and must still commit the copy that was
 * read; every new copy is placed first (a refusal writes nothing); the
 * texts go into the free part of every circular buffer and are flushed;
 * only then is each area's header rewritten to commit its new copy, and
 * flushed. Until a header is written its area still commits the old
 * copy, intact; after, the new one.
 */
export async function writeVgMetadata(pvs: readonly PhysicalVolume[], text: string, opts: WriteMetadataOptions): Promise<number> {
  const stored = storedText(text);
  const updates: AreaUpdate[] = [];
  for (const pv of pvs) {
    for (const copy of pv.copies) {
      if (copy.vg.uuid !== opts.vgUuid || copy.vg.seqno === opts.skipSeqno) continue;
      const raw = await readBytes(pv.device, copy.areaByte, MDA_HEADER_BYTES);
      const now = decodeMdaHeader(raw, copy.areaByte, pv.device.path);
      const [was, is] = [copy.header.locations[0], now.locations[0]];
      if (!is || is.byteOffset !== was.byteOffset || is.sizeBytes !== was.sizeBytes || is.checksum !== was.checksum) {
        throw new LvmError('metadata-write', `the metadata area at byte ${copy.areaByte} changed since it was read`, {
          path: pv.device.path,
        });
      }
      const plan = planTextWrite(now, stored, pv.device.path);
      updates.push({ device: pv.device, areaByte: copy.areaByte, header: committedHeader(raw, plan.location), writes: plan.writes });
    }
  }
  if (updates.length === 0) throw new LvmError('no-metadata', `no metadata area of the given PVs holds VG ${opts.vgUuid}`);
  if (opts.dryRun) return updates.length;
  const devices = [...new Set(updates.map((u) => u.device))];
  for (const u of updates) for (const w of u.writes) await writeBytes(u.device, w.bytes, w.byteOffset);
  // The new texts are durable everywhere before any header points at them (docs/lvm-format.md#writing).
  for (const d of devices) await d.flush();
  crashPoint('lvm-metadata:texts-written');
  for (const u of updates) {
    await writeBytes(u.device, u.header, u.areaByte);
    await u.device.flush();
    crashPoint('lvm-metadata:header-written');
  }
  return updates.length;
}
