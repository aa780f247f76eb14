import { SECTOR_BYTES } from '@dmtool/devices';
import { lvmCrc } from './crc';
import { LvmError } from './errors';

/** LVM2 looks for its label in the first four sectors (lib/label/label.h, LABEL_SCAN_SECTORS). */
export const LABEL_SCAN_SECTORS = 4;
export const LABEL_ID = 'LABELONE';
export const LVM2_LABEL_TYPE = 'LVM2 001';
/** Bytes 0-19 of the label header: id, sector, crc; the CRC covers the rest of the sector. */
const LABEL_CRC_FROM_BYTE = 20;
const PV_UUID_BYTES = 32;
const DISK_LOCN_BYTES = 16;

/** A (byte offset, byte size) area on the PV; size 0 means "to the end of the device". */
export interface DiskArea {
  byteOffset: number;
  sizeBytes: number;
}

export interface PvLabel {
  /** The sector (0-3) the label was found in. */
  labelSector: number;
  /** The PV UUID as stored: 32 characters, no dashes. */
  pvUuid: string;
  deviceSizeBytes: number;
  dataAreas: DiskArea[];
  metadataAreas: DiskArea[];
  /** pv_header_extension version, 0 when there is none. */
  extensionVersion: number;
}

/** `abcdef` → `abcdef`-style UUID with LVM2's dashes (6-4-4-4-4-4-6), as `pvs -o pv_uuid` prints it. */
export function formatLvmUuid(raw: string): string {
  if (raw.length !== PV_UUID_BYTES) return raw;
  const parts = [6, 4, 4, 4, 4, 4, 6];
  let i = 0;
  return parts
    .map((n) => {
      const s = raw.slice(i, i + n);
      i += n;
      return s;
    })
    .join('-');
}

function u64(buf: Buffer, at: number, what: string, path?: string, sector?: number): number {
  const v = buf.readBigUInt64LE(at);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new LvmError('bad-pv-header', `${what} ${v} is too large`, { path, sector });
  return Number(v);
}

/**
 * Find and decode the label and PV header (lib/label/label.c,
 * lib/format_text/text_label.c) in the first four sectors of a device:
 * `head` holds at least LABEL_SCAN_SECTORS sectors from byte 0.
 */
export function decodeLabel(head: Buffer, path?: string): PvLabel {
  if (head.length < LABEL_SCAN_SECTORS * SECTOR_BYTES) throw new RangeError(`the label scan needs ${LABEL_SCAN_SECTORS} sectors`);
  for (let sector = 0; sector < LABEL_SCAN_SECTORS; sector++) {
    const s = head.subarray(sector * SECTOR_BYTES, (sector + 1) * SECTOR_BYTES);
    if (s.toString('latin1', 0, 8) !== LABEL_ID) continue;
    const place = { path, sector, sectors: 1 };
    const sectorXl = s.readBigUInt64LE(8);
    if (sectorXl !== BigInt(sector)) throw new LvmError('bad-label', `label in sector ${sector} says it is in sector ${sectorXl}`, place);
    const storedCrc = s.readUInt32LE(16);
    const crc = lvmCrc(s.subarray(LABEL_CRC_FROM_BYTE));
    if (crc !== storedCrc) {
      throw new LvmError(
        'label-crc',
        `label checksum 0x${storedCrc.toString(16)} does not match its contents (0x${crc.toString(16)})`,
        place,
      );
    }
    const type = s.toString('latin1', 24, 32);
    if (type !== LVM2_LABEL_TYPE)
      throw new LvmError('bad-label', `label type ${JSON.stringify(type)} is not ${JSON.stringify(LVM2_LABEL_TYPE)}`, place);
    const pvOffset = s.readUInt32LE(20);
    if (pvOffset < 32 || pvOffset + PV_UUID_BYTES + 8 + 2 * DISK_LOCN_BYTES > SECTOR_BYTES) {
      throw new LvmError('bad-pv-header', `PV header offset ${pvOffset} does not fit in the label sector`, place);
    }
    return { labelSector: sector, ...decodePvHeader(s, pvOffset, place) };
  }
  throw new LvmError('no-label', `no LVM2 label (${LABEL_ID}) in sectors 0-${LABEL_SCAN_SECTORS - 1}: not a physical volume`, {
    path,
    sector: 0,
    sectors: LABEL_SCAN_SECTORS,
  });
}

function decodePvHeader(s: Buffer, at: number, place: { path?: string; sector: number }): Omit<PvLabel, 'labelSector'> {
  const pvUuid = s.toString('latin1', at, at + PV_UUID_BYTES);
  if (!/^[A-Za-z0-9!#]{32}$/.test(pvUuid))
    throw new LvmError('bad-pv-header', `PV UUID ${JSON.stringify(pvUuid)} is not 32 UUID characters`, place);
  const deviceSizeBytes = u64(s, at + PV_UUID_BYTES, 'device size', place.path, place.sector);
  let p = at + PV_UUID_BYTES + 8;
  const readList = (what: string): DiskArea[] => {
    const list: DiskArea[] = [];
    for (;;) {
      if (p + DISK_LOCN_BYTES > s.length) throw new LvmError('bad-pv-header', `${what} list runs past the label sector`, place);
      const byteOffset = u64(s, p, `${what} offset`, place.path, place.sector);
      const sizeBytes = u64(s, p + 8, `${what} size`, place.path, place.sector);
      p += DISK_LOCN_BYTES;
      if (byteOffset === 0) return list;
      list.push({ byteOffset, sizeBytes });
    }
  };
  const dataAreas = readList('data area');
  const metadataAreas = readList('metadata area');
  const extensionVersion = p + 8 <= s.length ? s.readUInt32LE(p) : 0;
  if (dataAreas.length === 0) throw new LvmError('bad-pv-header', 'PV header lists no data area', place);
  return { pvUuid, deviceSizeBytes, dataAreas, metadataAreas, extensionVersion };
}
