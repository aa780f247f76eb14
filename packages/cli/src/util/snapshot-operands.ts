import { BlockDevice } from '@dmtool/kcopyd';
import type { SnapshotParts } from '@dmtool/lvm';
import { lvmPackage } from './lazy-packages';
import { closeAll, openAll, refusePartialSectors } from './devices';
import { CliError } from './errors';
import { openPvFile, volumeOperand } from './open-device';

/** The origin and COW a snapshot command works on, and how to close them. */
export interface OriginAndCow {
  origin: BlockDevice;
  cow: BlockDevice;
  /** Set when one `PV...:VG/SNAP` operand named both: the VG they came from. */
  lvm?: SnapshotParts;
  /** Everything read: origin, COW and, for an LVM snapshot, its PVs (an output must be none of them). */
  inputs: BlockDevice[];
  close(): void;
}

/**
 * `ORIGIN COW`, or one LVM snapshot `PV[,PV...]:VG/SNAP` in their place:
 * the origin LV and the COW LV are then found in the snapshot segment and
 * mapped over the PVs, each PV opened once. Writing the origin of an LV
 * that has other snapshots is refused: those would not get copy-on-write.
 */
export async function openOriginAndCow(
  o: { origin: string; cow?: string },
  write: { origin: boolean; cow: boolean },
): Promise<OriginAndCow> {
  if (o.cow !== undefined) {
    const devices = await openAll([
      { path: o.origin, role: 'origin', write: write.origin },
      { path: o.cow, role: 'COW', write: write.cow },
    ]);
    return { origin: devices[0], cow: devices[1], inputs: devices, close: () => closeAll(devices) };
  }
  const volume = volumeOperand(o.origin);
  if (!volume) {
    throw new CliError('usage', `${o.origin}: give ORIGIN and COW, or one LVM snapshot as PV[,PV...]:VG/SNAP`);
  }
  refusePartialSectors(volume.pvs.map((p, i) => ({ path: p, role: `PV ${i + 1}` })));
  const parts = await lvmPackage().openSnapshotParts(volume, {
    write: write.origin || write.cow,
    writeOrigin: write.origin,
    openPv: openPvFile({}),
  });
  const close = () => {
    closeAll([parts.origin, parts.cow]);
    parts.close();
  };
  if (write.origin && parts.otherSnapshots.length > 0) {
    close();
    throw new (lvmPackage().LvmError)(
      'unsupported-lv',
      `${volume.vg}/${parts.segment.origin} is also the origin of ${parts.otherSnapshots.join(', ')}: writing it here would not copy into their COWs`,
    );
  }
  return { origin: parts.origin, cow: parts.cow, lvm: parts, inputs: [parts.origin, parts.cow, ...parts.pvs.map((p) => p.device)], close };
}
