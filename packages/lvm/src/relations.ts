import { LvMetadata, MirrorSegment, SnapshotSegment, VgMetadata } from './vg-metadata';

/** How the LVs of a VG refer to each other, indexed once (listing a VG of many LVs asks for every LV). */
export interface VgRelations {
  lvs: ReadonlyMap<string, LvMetadata>;
  /** COW LV name → its snapshot segment. */
  snapshotByCow: ReadonlyMap<string, SnapshotSegment>;
  /** Origin LV name → the snapshot segments of its snapshots. */
  snapshotsByOrigin: ReadonlyMap<string, SnapshotSegment[]>;
  /** LVs that carry a snapshot segment (lvm2's internal `snapshotN`). */
  carriers: ReadonlySet<string>;
  /** Carrier LV name → its snapshot segment. */
  snapshotByCarrier: ReadonlyMap<string, SnapshotSegment>;
  /** Mirror leg or log LV name → its mirror segment and role. */
  mirrorParts: ReadonlyMap<string, { mirror: MirrorSegment; role: 'leg' | 'log' }>;
}

const cache = new WeakMap<VgMetadata, VgRelations>();

export function vgRelations(vg: VgMetadata): VgRelations {
  const known = cache.get(vg);
  if (known) return known;
  const snapshotByCow = new Map<string, SnapshotSegment>();
  const snapshotsByOrigin = new Map<string, SnapshotSegment[]>();
  const carriers = new Set<string>();
  const snapshotByCarrier = new Map<string, SnapshotSegment>();
  const mirrorParts = new Map<string, { mirror: MirrorSegment; role: 'leg' | 'log' }>();
  for (const lv of vg.lvs) {
    for (const s of lv.segments) {
      if (s.type === 'snapshot') {
        carriers.add(lv.name);
        snapshotByCarrier.set(lv.name, s);
        snapshotByCow.set(s.cow, s);
        snapshotsByOrigin.set(s.origin, [...(snapshotsByOrigin.get(s.origin) ?? []), s]);
      } else if (s.type === 'mirror') {
        for (const leg of s.legs) mirrorParts.set(leg.lv, { mirror: s, role: 'leg' });
        if (s.log !== undefined) mirrorParts.set(s.log, { mirror: s, role: 'log' });
      }
    }
  }
  const relations = {
    lvs: new Map(vg.lvs.map((l) => [l.name, l])),
    snapshotByCow,
    snapshotsByOrigin,
    carriers,
    snapshotByCarrier,
    mirrorParts,
  };
  cache.set(vg, relations);
  return relations;
}

/** The snapshot segments whose origin is `lvName`. */
export function originSnapshots(vg: VgMetadata, lvName: string): SnapshotSegment[] {
  return vgRelations(vg).snapshotsByOrigin.get(lvName) ?? [];
}

/** The snapshot segment whose COW store is `lvName`: lvm2 shows that LV as the snapshot. */
export function snapshotOfCow(vg: VgMetadata, lvName: string): SnapshotSegment | undefined {
  return vgRelations(vg).snapshotByCow.get(lvName);
}

export function snapshotSegments(vg: VgMetadata): SnapshotSegment[] {
  return [...vgRelations(vg).snapshotByCow.values()];
}

/**
 * The snapshot segment `lvName` stands for: its COW LV (what lvm2 shows as
 * the snapshot, `/dev/VG/SNAP`) or the internal LV carrying the segment.
 */
export function snapshotSegmentOf(vg: VgMetadata, lvName: string): SnapshotSegment | undefined {
  const r = vgRelations(vg);
  return r.snapshotByCow.get(lvName) ?? r.snapshotByCarrier.get(lvName);
}

/** The LV that carries a snapshot segment whose COW store is `cowName`. */
export function snapshotCarrierOf(vg: VgMetadata, cowName: string): string | undefined {
  for (const [carrier, seg] of vgRelations(vg).snapshotByCarrier) if (seg.cow === cowName) return carrier;
  return undefined;
}

/** The LV that carries a snapshot segment (lvm2's internal `snapshotN`), never listed by lvs. */
export function isSnapshotCarrier(vg: VgMetadata, lvName: string): boolean {
  return vgRelations(vg).carriers.has(lvName);
}

/** The mirror segment `lvName` is a leg or the log of, and which. */
export function mirrorPart(vg: VgMetadata, lvName: string): { mirror: MirrorSegment; role: 'leg' | 'log' } | undefined {
  return vgRelations(vg).mirrorParts.get(lvName);
}
