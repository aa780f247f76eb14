import { BlockDevice, SECTOR_BYTES } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { LvmError } from './errors';
import { decodeLabel, formatLvmUuid, LABEL_SCAN_SECTORS, PvLabel } from './label';
import { decodeMdaHeader, MDA_HEADER_BYTES, MdaHeader, metadataText, RAW_LOCN_IGNORED, textPieces } from './mda-header';
import { parseVgMetadata, VgMetadata } from './vg-metadata';

/** One metadata copy found in a metadata area of a PV. */
export interface MetadataCopy {
  areaByte: number;
  header: MdaHeader;
  text: string;
  vg: VgMetadata;
}

export interface PhysicalVolume {
  device: BlockDevice;
  label: PvLabel;
  /** The PV UUID with dashes, as in the VG metadata. */
  uuid: string;
  /** Metadata copies in the order of the PV header's areas; areas holding none are left out. */
  copies: MetadataCopy[];
}

/** A read the PV steps need: `bytes` at `byteOffset`. */
export interface ReadRequest {
  byteOffset: number;
  bytes: number;
}

/**
 * Reading a PV as a sequence of reads: the label, then each metadata area's
 * header, then its text. Driven by `readPhysicalVolume` (async device reads)
 * or `readPhysicalVolumeSync` (a synchronous reader, for callers that must
 * open a volume synchronously).
 */
function* pvSteps(device: BlockDevice): Generator<ReadRequest, PhysicalVolume, Buffer> {
  if (device.sizeBytes < LABEL_SCAN_SECTORS * SECTOR_BYTES) {
    throw new LvmError('no-label', `${device.sizeBytes} bytes cannot hold an LVM2 label`, { path: device.path });
  }
  const label = decodeLabel(yield { byteOffset: 0, bytes: LABEL_SCAN_SECTORS * SECTOR_BYTES }, device.path);
  const copies: MetadataCopy[] = [];
  for (const area of label.metadataAreas) {
    if (area.byteOffset + MDA_HEADER_BYTES > device.sizeBytes) {
      throw new LvmError(
        'bad-pv-header',
        `metadata area at byte ${area.byteOffset} lies beyond the device end (${device.sizeBytes} bytes)`,
        {
          path: device.path,
        },
      );
    }
    const header = decodeMdaHeader(yield { byteOffset: area.byteOffset, bytes: MDA_HEADER_BYTES }, area.byteOffset, device.path);
    if (header.startByte + header.sizeBytes > device.sizeBytes) {
      throw new LvmError(
        'bad-mda-header',
        `metadata area of ${header.sizeBytes} bytes at byte ${header.startByte} runs past the device end`,
        {
          path: device.path,
        },
      );
    }
    const loc = header.locations[0];
    if (loc === undefined || (loc.flags & RAW_LOCN_IGNORED) !== 0) continue;
    const pieces: Buffer[] = [];
    for (const p of textPieces(header, loc, device.path)) pieces.push(yield { byteOffset: p.byteOffset, bytes: p.sizeBytes });
    const text = metadataText(pieces, loc, header, device.path);
    const vg = parseVgMetadata(text, `${device.path} metadata at byte ${area.byteOffset + loc.byteOffset}`);
    copies.push({ areaByte: area.byteOffset, header, text, vg });
  }
  return { device, label, uuid: formatLvmUuid(label.pvUuid), copies };
}

/** The request rounded out to the device's alignment (O_DIRECT devices need it), in a buffer aligned for it. */
function alignedRange(device: BlockDevice, r: ReadRequest): { start: number; bytes: number } {
  const align = Math.max(SECTOR_BYTES, device.ioAlignmentBytes);
  const start = Math.floor(r.byteOffset / align) * align;
  const end = Math.min(Math.ceil((r.byteOffset + r.bytes) / align) * align, device.sizeBytes);
  return { start, bytes: end - start };
}

/** Read a PV's label, PV header and the committed metadata of each of its metadata areas. */
export async function readPhysicalVolume(device: BlockDevice): Promise<PhysicalVolume> {
  const steps = pvSteps(device);
  let next = steps.next();
  while (!next.done) {
    const r = next.value;
    const { start, bytes } = alignedRange(device, r);
    const buf = allocBuffer(bytes);
    await device.read(buf, 0, bytes, start);
    next = steps.next(buf.subarray(r.byteOffset - start, r.byteOffset - start + r.bytes));
  }
  return next.value;
}

/** `readPhysicalVolume` with a synchronous reader of the device's bytes (`readSync(buf, byteOffset)` fills `buf`). */
export function readPhysicalVolumeSync(device: BlockDevice, readSync: (buf: Buffer, byteOffset: number) => void): PhysicalVolume {
  const steps = pvSteps(device);
  let next = steps.next();
  while (!next.done) {
    const r = next.value;
    const { start, bytes } = alignedRange(device, r);
    const buf = allocBuffer(bytes);
    readSync(buf, start);
    next = steps.next(buf.subarray(r.byteOffset - start, r.byteOffset - start + r.bytes));
  }
  return next.value;
}
