import { BlockDevice, SECTOR_BYTES } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { MirrorError } from './errors';

export interface CheckOptions {
  regionSize: number;
  lengthSectors: number;
  offsetsSectors?: number[];
  /** Largest read, in sectors (default 2048 = 1 MiB). */
  chunkSectors?: number;
  signal?: AbortSignal;
  onProgress?: (p: { sectorsDone: number; sectorsTotal: number; differing: number }) => void;
}

export interface CheckResult {
  regions: number;
  regionSize: number;
  lengthSectors: number;
  /** Regions where some leg differs from leg 0. */
  differingRegions: number[];
  /** For each differing region, the legs that differ from leg 0. */
  differingLegs: Record<number, number[]>;
}

/** Compare legs region by region against leg 0 (read only). */
export async function checkLegs(legs: BlockDevice[], opts: CheckOptions): Promise<CheckResult> {
  if (legs.length < 2) throw new MirrorError('EINVAL', 'leg-count', 'checking needs at least 2 legs');
  const { regionSize, lengthSectors } = opts;
  if (regionSize < 1 || !Number.isSafeInteger(regionSize))
    throw new MirrorError('EINVAL', 'bad-region-size', `invalid region size ${regionSize}`);
  const offsets = opts.offsetsSectors ?? legs.map(() => 0);
  const chunk = Math.max(1, opts.chunkSectors ?? 2048);
  const bufs = legs.map(() => allocBuffer(chunk * SECTOR_BYTES));
  const regions = Math.ceil(lengthSectors / regionSize);
  const differingRegions: number[] = [];
  const differingLegs: Record<number, number[]> = {};
  for (let r = 0; r < regions; r++) {
    if (opts.signal?.aborted) throw new MirrorError('ABORT_ERR', 'aborted', 'check aborted');
    const start = r * regionSize;
    const end = Math.min(lengthSectors, start + regionSize);
    const differ = new Set<number>();
    for (let s = start; s < end; s += chunk) {
      const n = Math.min(chunk, end - s);
      const bytes = n * SECTOR_BYTES;
      await Promise.all(legs.map((d, i) => d.read(bufs[i], 0, bytes, (offsets[i] + s) * SECTOR_BYTES)));
      for (let i = 1; i < legs.length; i++) {
        if (differ.has(i)) continue;
        if (bufs[i].compare(bufs[0], 0, bytes, 0, bytes) !== 0) differ.add(i);
      }
    }
    if (differ.size > 0) {
      differingRegions.push(r);
      differingLegs[r] = [...differ].sort((a, b) => a - b);
    }
    opts.onProgress?.({ sectorsDone: end, sectorsTotal: lengthSectors, differing: differingRegions.length });
  }
  return { regions, regionSize, lengthSectors, differingRegions, differingLegs };
}
