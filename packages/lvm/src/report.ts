import { SECTOR_BYTES } from '@dmtool/devices';
import { isSnapshotCarrier, mirrorPart, originSnapshots, snapshotOfCow, vgRelations } from './relations';
import { LvMetadata, VgMetadata } from './vg-metadata';

/** One row of `lvs -a --reportformat json`, with its default columns. */
export interface LvReportRow {
  lv_name: string;
  vg_name: string;
  lv_attr: string;
  lv_size: string;
  pool_lv: string;
  origin: string;
  data_percent: string;
  metadata_percent: string;
  move_pv: string;
  mirror_log: string;
  copy_percent: string;
  convert_lv: string;
}

/** What a snapshot's COW says: the kernel's status numbers, or invalid. */
export type SnapshotUsage = { valid: false } | { valid: true; allocatedSectors: number; totalSectors: number };

const UNITS: [string, number][] = [
  ['e', 2 ** 60],
  ['p', 2 ** 50],
  ['t', 2 ** 40],
  ['g', 2 ** 30],
  ['m', 2 ** 20],
  ['k', 2 ** 10],
];

/**
 * A size as lvs prints it by default (`--units h`): two decimals in the
 * largest binary unit the size reaches, and `<` before a value rounded up.
 */
export function humanSize(bytes: number): string {
  if (bytes === 0) return '0 ';
  const [suffix, unit] = UNITS.find(([, u]) => bytes >= u) ?? ['b', 1];
  if (unit === 1) return `${bytes.toFixed(2)}${suffix}`;
  const hundredths = (bytes * 100) / unit;
  if (Number.isInteger(hundredths)) return `${(hundredths / 100).toFixed(2)}${suffix}`;
  return `<${(Math.ceil(hundredths) / 100).toFixed(2)}${suffix}`;
}

/** A percentage with two decimals that never shows 0.00 for a non-zero part or 100.00 for less than the whole. */
export function percent(part: number, whole: number): string {
  if (whole <= 0) return '';
  const text = ((part * 100) / whole).toFixed(2);
  if (part > 0 && text === '0.00') return '0.01';
  if (part < whole && text === '100.00') return '99.99';
  return text;
}

const ALLOCATION_CHAR: Record<string, string> = {
  contiguous: 'c',
  cling: 'l',
  cling_by_tags: 'l',
  normal: 'n',
  anywhere: 'a',
  inherit: 'i',
};

/**
 * The 10 characters of `lv_attr` for what the metadata says. The state and
 * open characters are `X` (unknown), as lvm2 prints them when it cannot ask
 * device-mapper: whether the kernel has the LV active is not on disk.
 */
export function lvAttr(vg: VgMetadata, lv: LvMetadata, missingPvs: ReadonlySet<string> = new Set()): string {
  const snap = snapshotOfCow(vg, lv.name);
  const snapshots = originSnapshots(vg, lv.name);
  const mirror = lv.segments.find((s) => s.type === 'mirror');
  const part = mirrorPart(vg, lv.name);
  const flags = new Set([...lv.status, ...lv.flags]);
  let type = '-';
  if (snap) type = snap.merging ? 'S' : 's';
  else if (snapshots.length > 0) type = snapshots.some((s) => s.merging) ? 'O' : 'o';
  else if (mirror) type = flags.has('NOTSYNCED') ? 'M' : 'm';
  // Whether a leg is in sync lives in the kernel (or the disk log); lvm2 too says I when it cannot ask.
  else if (part) type = part.role === 'leg' ? 'I' : 'l';
  const alloc = ALLOCATION_CHAR[lv.allocationPolicy ?? 'inherit'] ?? 'i';
  const target = snap || snapshots.length > 0 ? 's' : mirror || part ? 'm' : '-';
  return [
    type,
    flags.has('WRITE') ? 'w' : 'r',
    flags.has('LOCKED') ? alloc.toUpperCase() : alloc,
    flags.has('FIXED_MINOR') ? 'm' : '-',
    'X',
    'X',
    target,
    '-',
    onMissingPv(lv, missingPvs) ? 'p' : '-',
    flags.has('ACTIVATION_SKIP') ? 'k' : '-',
  ].join('');
}

/** Whether a striped segment of the LV lies on one of `missingPvs` (lvm2's "partial"). */
function onMissingPv(lv: LvMetadata, missingPvs: ReadonlySet<string>): boolean {
  return lv.segments.some((s) => s.type === 'striped' && s.stripes.some((st) => missingPvs.has(st.pv)));
}

/**
 * Whether lvs shows the LV without -a: the COW of a snapshot shows as its
 * origin does, except while it merges (lvm2 hides a merging snapshot).
 */
export function lvVisible(vg: VgMetadata, lv: LvMetadata): boolean {
  const snap = snapshotOfCow(vg, lv.name);
  if (snap) {
    if (snap.merging) return false;
    const origin = vgRelations(vg).lvs.get(snap.origin);
    return origin !== undefined && lvVisible(vg, origin);
  }
  return lv.status.includes('VISIBLE');
}

/** The name as lvs -a shows it: hidden LVs in brackets. */
export function displayName(vg: VgMetadata, lvName: string): string {
  const lv = vgRelations(vg).lvs.get(lvName);
  return lv === undefined || lvVisible(vg, lv) ? lvName : `[${lvName}]`;
}

/**
 * The rows `lvs -a` prints for a VG, sorted by name: hidden LVs in
 * brackets, the internal `snapshotN` LVs left out, Data% of a snapshot from
 * its COW's usage (empty when the COW was never activated).
 */
export function lvReport(
  vg: VgMetadata,
  usage: ReadonlyMap<string, SnapshotUsage | undefined> = new Map(),
  missingPvs: ReadonlySet<string> = new Set(),
): LvReportRow[] {
  const extentBytes = vg.extentSectors * SECTOR_BYTES;
  return vg.lvs
    .filter((lv) => !isSnapshotCarrier(vg, lv.name))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((lv) => {
      const snap = snapshotOfCow(vg, lv.name);
      const mirror = lv.segments.find((s) => s.type === 'mirror');
      const u = usage.get(lv.name);
      return {
        lv_name: displayName(vg, lv.name),
        vg_name: vg.name,
        lv_attr: lvAttr(vg, lv, missingPvs),
        lv_size: humanSize(lv.extentCount * extentBytes),
        pool_lv: '',
        origin: snap?.origin ?? '',
        data_percent: u === undefined ? '' : u.valid ? percent(u.allocatedSectors, u.totalSectors) : '100.00',
        metadata_percent: '',
        move_pv: '',
        mirror_log: mirror?.type === 'mirror' && mirror.log !== undefined ? displayName(vg, mirror.log) : '',
        copy_percent: '',
        convert_lv: '',
      };
    });
}
