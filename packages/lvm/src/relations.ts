import { MirrorSegment, SnapshotSegment, VgMetadata } from './vg-metadata';

/** The snapshot segments whose origin is `lvName`. */
export function originSnapshots(vg: VgMetadata, lvName: string): SnapshotSegment[] {
  return snapshotSegments(vg).filter((s) => s.origin === lvName);
}

/** The snapshot segment whose COW store is `lvName`: lvm2 shows that LV as the snapshot. */
export function snapshotOfCow(vg: VgMetadata, lvName: string): SnapshotSegment | undefined {
  return snapshotSegments(vg).find((s) => s.cow === lvName);
}

export function snapshotSegments(vg: VgMetadata): SnapshotSegment[] {
  return vg.lvs.flatMap((l) => l.segments.filter((s): s is SnapshotSegment => s.type === 'snapshot'));
}

/** The LV that carries a snapshot segment (lvm2's internal `snapshotN`), never listed by lvs. */
export function isSnapshotCarrier(vg: VgMetadata, lvName: string): boolean {
  return vg.lvs.some((l) => l.name === lvName && l.segments.some((s) => s.type === 'snapshot'));
}

/** The mirror segment `lvName` is a leg or the log of, and which. */
export function mirrorPart(vg: VgMetadata, lvName: string): { mirror: MirrorSegment; role: 'leg' | 'log' } | undefined {
  for (const l of vg.lvs) {
    for (const s of l.segments) {
      if (s.type !== 'mirror') continue;
      if (s.legs.some((leg) => leg.lv === lvName)) return { mirror: s, role: 'leg' };
      if (s.log === lvName) return { mirror: s, role: 'log' };
    }
  }
  return undefined;
}
