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

/** Read `bytes` at `byteOffset`, rounded out to the device's alignment (O_DIRECT devices need it). */
async function readBytes(device: BlockDevice, byteOffset: number, bytes: number): Promise<Buffer> {
  const align = Math.max(SECTOR_BYTES, device.ioAlignmentBytes);
  const start = Math.floor(byteOffset / align) * align;
  const end = Math.min(Math.ceil((byteOffset + bytes) / align) * align, device.sizeBytes);
  if (byteOffset + bytes > end) {
    throw new LvmError(
      'bad-text-location',
      `bytes ${byteOffset}..${byteOffset + bytes - 1} lie beyond the device end (${device.sizeBytes} bytes)`,
      {
        path: device.path,
      },
    );
  }
  const buf = allocBuffer(end - start);
  await device.read(buf, 0, end - start, start);
  return buf.subarray(byteOffset - start, byteOffset - start + bytes);
}

/** Read a PV's label, PV header and the committed metadata of each of its metadata areas. */
export async function readPhysicalVolume(device: BlockDevice): Promise<PhysicalVolume> {
  if (device.sizeBytes < LABEL_SCAN_SECTORS * SECTOR_BYTES) {
    throw new LvmError('no-label', `${device.sizeBytes} bytes cannot hold an LVM2 label`, { path: device.path });
  }
  const label = decodeLabel(await readBytes(device, 0, LABEL_SCAN_SECTORS * SECTOR_BYTES), device.path);
  const copies: MetadataCopy[] = [];
  for (const area of label.metadataAreas) {
    const header = decodeMdaHeader(await readBytes(device, area.byteOffset, MDA_HEADER_BYTES), area.byteOffset, device.path);
    const loc = header.locations[0];
    if (loc === undefined || (loc.flags & RAW_LOCN_IGNORED) !== 0) continue;
    const pieces = await Promise.all(textPieces(header, loc, device.path).map((p) => readBytes(device, p.byteOffset, p.sizeBytes)));
    const text = metadataText(pieces, loc, header, device.path);
    const vg = parseVgMetadata(text, `${device.path} metadata at byte ${area.byteOffset + loc.byteOffset}`);
    copies.push({ areaByte: area.byteOffset, header, text, vg });
  }
  return { device, label, uuid: formatLvmUuid(label.pvUuid), copies };
}
