import { ConfigScalar, ConfigSection, ConfigValue, parseConfig } from './config-parser';
import { LvmError } from './errors';

export interface PvMetadata {
  /** The key in `physical_volumes`, e.g. `pv0`: what segments name. */
  key: string;
  /** UUID with dashes, as lvm2 writes it. */
  uuid: string;
  /** The device path lvm2 last saw (a hint only). */
  deviceHint?: string;
  peStartSectors: number;
  peCount: number;
  status: string[];
}

export interface StripedSegment {
  type: 'striped';
  startExtent: number;
  extentCount: number;
  /** 0 for a single stripe (linear). */
  stripeSectors: number;
  /** Each stripe: the PV key and its first physical extent. */
  stripes: { pv: string; startPe: number }[];
}

export interface SnapshotSegment {
  type: 'snapshot';
  startExtent: number;
  extentCount: number;
  chunkSectors: number;
  origin: string;
  cow: string;
  /** `merging_store` instead of `cow_store`: a merge into the origin is pending or running. */
  merging: boolean;
}

export interface MirrorSegment {
  type: 'mirror';
  startExtent: number;
  extentCount: number;
  regionSectors: number;
  /** The log LV; undefined for a core (in-memory) log. */
  log?: string;
  legs: { lv: string; startExtent: number }[];
}

/** A segment type lvm2 knows that this version only lists (raid, thin, cache, ...). */
export interface OtherSegment {
  type: 'other';
  segtype: string;
  startExtent: number;
  extentCount: number;
}

export type Segment = StripedSegment | SnapshotSegment | MirrorSegment | OtherSegment;

export interface LvMetadata {
  name: string;
  uuid: string;
  status: string[];
  flags: string[];
  allocationPolicy?: string;
  segments: Segment[];
  extentCount: number;
}

export interface VgMetadata {
  name: string;
  uuid: string;
  seqno: number;
  extentSectors: number;
  status: string[];
  pvs: PvMetadata[];
  lvs: LvMetadata[];
}

/** Segment types lvm2 writes that are recognised but not mapped here. */
const OTHER_SEGMENT_TYPES = new Set([
  'error',
  'zero',
  'free',
  'thin',
  'thin-pool',
  'cache',
  'cache-pool',
  'writecache',
  'integrity',
  'vdo',
  'vdo-pool',
  'raid0',
  'raid0_meta',
  'raid1',
  'raid10',
  'raid4',
  'raid5',
  'raid5_la',
  'raid5_ra',
  'raid5_ls',
  'raid5_rs',
  'raid5_n',
  'raid6',
  'raid6_zr',
  'raid6_nr',
  'raid6_nc',
  'raid6_ls_6',
  'raid6_rs_6',
  'raid6_la_6',
  'raid6_ra_6',
  'raid6_n_6',
]);

class Reader {
  constructor(
    readonly s: ConfigSection,
    readonly where: string,
  ) {}

  fail(message: string): never {
    throw new LvmError('bad-metadata', `${this.where}: ${message}`);
  }

  private get(key: string): ConfigValue | undefined {
    return this.s.values.get(key);
  }

  string(key: string): string {
    const v = this.get(key);
    if (typeof v !== 'string') this.fail(v === undefined ? `${key} is missing` : `${key} must be a string`);
    return v;
  }

  optionalString(key: string): string | undefined {
    return this.get(key) === undefined ? undefined : this.string(key);
  }

  count(key: string, min = 0): number {
    const v = this.get(key);
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
      this.fail(v === undefined ? `${key} is missing` : `${key} must be a whole number of at least ${min}`);
    }
    return v;
  }

  strings(key: string): string[] {
    const v = this.get(key);
    if (v === undefined) return [];
    if (!Array.isArray(v) || !v.every((x) => typeof x === 'string')) this.fail(`${key} must be a list of strings`);
    return v as string[];
  }

  /** A list of (name, number) pairs such as `stripes` and `mirrors`. */
  pairs(key: string): [string, number][] {
    const v = this.get(key);
    if (!Array.isArray(v)) this.fail(v === undefined ? `${key} is missing` : `${key} must be a list`);
    const list = v as ConfigScalar[];
    if (list.length % 2 !== 0) this.fail(`${key} must hold name, extent pairs`);
    const out: [string, number][] = [];
    for (let i = 0; i < list.length; i += 2) {
      const [name, n] = [list[i], list[i + 1]];
      if (typeof name !== 'string' || typeof n !== 'number' || !Number.isSafeInteger(n) || n < 0) {
        this.fail(`${key} entry ${i / 2} must be a name and an extent number`);
      }
      out.push([name, n]);
    }
    return out;
  }

  section(key: string): ConfigSection {
    const sub = this.s.sections.get(key);
    if (!sub) this.fail(`section ${key} is missing`);
    return sub;
  }
}

/** Parse a VG's metadata text (as stored in a metadata area, or a `vgcfgbackup` file) and check it. */
export function parseVgMetadata(text: string, source = 'metadata'): VgMetadata {
  const root = parseConfig(text, source);
  const vgs = [...root.sections.values()];
  if (vgs.length !== 1) throw new LvmError('bad-metadata', `${source}: expected one volume group section, found ${vgs.length}`);
  return vgFromSection(vgs[0]);
}

export function vgFromSection(s: ConfigSection): VgMetadata {
  const r = new Reader(s, `VG ${s.name}`);
  const extentSectors = r.count('extent_size', 1);
  const pvSection = r.section('physical_volumes');
  const pvs = [...pvSection.sections.values()].map((p) => {
    const pr = new Reader(p, `VG ${s.name} PV ${p.name}`);
    return {
      key: p.name,
      uuid: pr.string('id'),
      deviceHint: pr.optionalString('device'),
      peStartSectors: pr.count('pe_start'),
      peCount: pr.count('pe_count'),
      status: pr.strings('status'),
    };
  });
  const lvSection = s.sections.get('logical_volumes');
  const lvs = lvSection ? [...lvSection.sections.values()].map((l) => lvFromSection(l, s.name)) : [];
  const vg: VgMetadata = {
    name: s.name,
    uuid: r.string('id'),
    seqno: r.count('seqno'),
    extentSectors,
    status: r.strings('status'),
    pvs,
    lvs,
  };
  checkReferences(vg);
  return vg;
}

function lvFromSection(l: ConfigSection, vgName: string): LvMetadata {
  const where = `VG ${vgName} LV ${l.name}`;
  const r = new Reader(l, where);
  const segmentCount = r.count('segment_count', 1);
  const segments: Segment[] = [];
  let nextExtent = 0;
  for (let i = 1; i <= segmentCount; i++) {
    const seg = segmentFromSection(r.section(`segment${i}`), `${where} segment${i}`);
    if (seg.startExtent !== nextExtent) {
      throw new LvmError('bad-metadata', `${where} segment${i}: starts at extent ${seg.startExtent}, expected ${nextExtent}`);
    }
    nextExtent += seg.extentCount;
    segments.push(seg);
  }
  return {
    name: l.name,
    uuid: r.string('id'),
    status: r.strings('status'),
    flags: r.strings('flags'),
    allocationPolicy: r.optionalString('allocation_policy'),
    segments,
    extentCount: nextExtent,
  };
}

function segmentFromSection(s: ConfigSection, where: string): Segment {
  const r = new Reader(s, where);
  const startExtent = r.count('start_extent');
  const extentCount = r.count('extent_count', 1);
  const type = r.string('type');
  switch (type) {
    case 'striped': {
      const stripeCount = r.count('stripe_count', 1);
      const stripes = r.pairs('stripes').map(([pv, startPe]) => ({ pv, startPe }));
      if (stripes.length !== stripeCount) r.fail(`stripe_count is ${stripeCount} but ${stripes.length} stripes are listed`);
      if (extentCount % stripeCount !== 0) r.fail(`extent_count ${extentCount} is not a multiple of stripe_count ${stripeCount}`);
      const stripeSectors = stripeCount > 1 ? r.count('stripe_size', 1) : 0;
      return { type, startExtent, extentCount, stripeSectors, stripes };
    }
    case 'snapshot': {
      const cowStore = r.optionalString('cow_store');
      const mergingStore = r.optionalString('merging_store');
      if ((cowStore === undefined) === (mergingStore === undefined)) r.fail('needs exactly one of cow_store and merging_store');
      return {
        type,
        startExtent,
        extentCount,
        chunkSectors: r.count('chunk_size', 1),
        origin: r.string('origin'),
        cow: (cowStore ?? mergingStore) as string,
        merging: mergingStore !== undefined,
      };
    }
    case 'mirror': {
      const mirrorCount = r.count('mirror_count', 1);
      const legs = r.pairs('mirrors').map(([lv, start]) => ({ lv, startExtent: start }));
      if (legs.length !== mirrorCount) r.fail(`mirror_count is ${mirrorCount} but ${legs.length} mirrors are listed`);
      return { type, startExtent, extentCount, regionSectors: r.count('region_size', 1), log: r.optionalString('mirror_log'), legs };
    }
    default:
      if (OTHER_SEGMENT_TYPES.has(type)) return { type: 'other', segtype: type, startExtent, extentCount };
      throw new LvmError('unknown-segment-type', `${where}: unknown segment type ${JSON.stringify(type)}`);
  }
}

/** Every name a segment uses must exist, and stripes must stay inside their PV. */
function checkReferences(vg: VgMetadata): void {
  const pvs = new Map(vg.pvs.map((p) => [p.key, p]));
  const lvs = new Map(vg.lvs.map((l) => [l.name, l]));
  for (const lv of vg.lvs) {
    lv.segments.forEach((seg, i) => {
      const where = `VG ${vg.name} LV ${lv.name} segment${i + 1}`;
      const needLv = (name: string, what: string) => {
        if (!lvs.has(name)) throw new LvmError('bad-metadata', `${where}: ${what} ${JSON.stringify(name)} is not an LV of the VG`);
      };
      if (seg.type === 'striped') {
        const perStripe = seg.extentCount / seg.stripes.length;
        for (const st of seg.stripes) {
          const pv = pvs.get(st.pv);
          if (!pv) throw new LvmError('bad-metadata', `${where}: stripe on ${JSON.stringify(st.pv)}, which is not a PV of the VG`);
          if (st.startPe + perStripe > pv.peCount) {
            throw new LvmError(
              'bad-metadata',
              `${where}: extents ${st.startPe}..${st.startPe + perStripe - 1} of ${st.pv} lie beyond its ${pv.peCount} extents`,
            );
          }
        }
      } else if (seg.type === 'snapshot') {
        needLv(seg.origin, 'origin');
        needLv(seg.cow, 'COW store');
      } else if (seg.type === 'mirror') {
        for (const leg of seg.legs) needLv(leg.lv, 'mirror leg');
        if (seg.log !== undefined) needLv(seg.log, 'mirror log');
      }
    });
  }
}
