import { PersistentStore, probeHeader } from '@dmtool/dm-snapshot';
import { mapLvDevice } from './lv-device';
import { snapshotSegments } from './relations';
import { SnapshotUsage } from './report';
import { VolumeGroup } from './scan';

/**
 * The usage of every snapshot's COW in the VG, read through the COW LV as
 * dm-snapshot reads it. A COW the kernel never activated (no header yet) has
 * no entry; an invalidated one is `{ valid: false }`.
 */
export async function readSnapshotUsages(vg: VolumeGroup): Promise<Map<string, SnapshotUsage>> {
  const usages = new Map<string, SnapshotUsage>();
  for (const seg of snapshotSegments(vg.metadata)) {
    const lv = vg.metadata.lvs.find((l) => l.name === seg.cow);
    if (!lv) continue;
    const cow = mapLvDevice(vg, lv, { write: false, name: `${vg.metadata.name}/${lv.name} (COW)` });
    try {
      if ((await probeHeader(cow)).kind === 'fresh') continue;
      const store = await PersistentStore.open(cow);
      const u = store.usage();
      usages.set(
        lv.name,
        store.valid ? { valid: true, allocatedSectors: u.allocatedSectors, totalSectors: u.totalSectors } : { valid: false },
      );
    } finally {
      cow.close();
    }
  }
  return usages;
}
