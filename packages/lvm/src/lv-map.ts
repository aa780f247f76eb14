import { SECTOR_BYTES } from '@dmtool/devices';
import { LvmError } from './errors';
import { LvMetadata, VgMetadata } from './vg-metadata';

/** A byte range on one PV (named by its key in the metadata, e.g. `pv0`). */
export interface PvRange {
  pv: string;
  byteOffset: number;
  sizeBytes: number;
}

/**
 * One segment of an LV as the kernel's `linear`/`striped` target maps it:
 * `sizeBytes` of the LV from `lvByteOffset`, spread over `stripes` in
 * `stripeBytes` chunks (0: one stripe, linear).
 */
export interface MappedSegment {
  lvByteOffset: number;
  sizeBytes: number;
  stripeBytes: number;
  stripes: PvRange[];
}

/** The byte offset of physical extent `pe` on a PV: pe_start, then whole extents. */
export function extentByteOffset(vg: VgMetadata, pvKey: string, pe: number): number {
  const pv = vg.pvs.find((p) => p.key === pvKey);
  if (!pv) throw new LvmError('bad-metadata', `VG ${vg.name} has no PV ${pvKey}`);
  return (pv.peStartSectors + pe * vg.extentSectors) * SECTOR_BYTES;
}

/**
 * Map an LV made of striped (and linear) segments to byte ranges on its PVs.
 * Snapshot and mirror LVs are not plain ranges: they are refused here.
 */
export function mapLogicalVolume(vg: VgMetadata, lv: LvMetadata): MappedSegment[] {
  const extentBytes = vg.extentSectors * SECTOR_BYTES;
  return lv.segments.map((seg) => {
    if (seg.type !== 'striped') {
      const what = seg.type === 'other' ? seg.segtype : seg.type;
      throw new LvmError(
        'unsupported-lv',
        `${vg.name}/${lv.name} has a ${what} segment; only linear and striped LVs can be opened as devices`,
      );
    }
    const perStripeExtents = seg.extentCount / seg.stripes.length;
    return {
      lvByteOffset: seg.startExtent * extentBytes,
      sizeBytes: seg.extentCount * extentBytes,
      stripeBytes: seg.stripes.length > 1 ? seg.stripeSectors * SECTOR_BYTES : 0,
      stripes: seg.stripes.map((st) => ({
        pv: st.pv,
        byteOffset: extentByteOffset(vg, st.pv, st.startPe),
        sizeBytes: perStripeExtents * extentBytes,
      })),
    };
  });
}
