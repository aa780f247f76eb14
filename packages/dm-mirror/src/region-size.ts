import { MirrorError } from './errors';

/** The kernel keeps region_size in a 32-bit field: the largest power of two it holds. */
export const MAX_REGION_SIZE = 2 ** 31;

/**
 * Whether a region size is one the kernel accepts: a power of two, at least
 * 2 sectors, at most 2^31. Tested without 32-bit bitwise operators, which
 * would see 3·2^31 as 2^31.
 */
export function isValidRegionSize(regionSize: number): boolean {
  if (!Number.isSafeInteger(regionSize) || regionSize < 2 || regionSize > MAX_REGION_SIZE) return false;
  return Number.isInteger(Math.log2(regionSize));
}

export function regionSizeMessage(regionSize: number): string {
  return `region size must be a power of two of at least 2 and at most ${MAX_REGION_SIZE} sectors (got ${regionSize})`;
}

export function checkRegionSize(regionSize: number): void {
  if (!isValidRegionSize(regionSize)) throw new MirrorError('EINVAL', 'bad-region-size', regionSizeMessage(regionSize));
}
