import { SECTOR_BYTES } from '@dmtool/devices';
import { SnapshotError } from './errors';

/** Bytes of one on-disk exception entry (old_chunk u64 LE, new_chunk u64 LE). */
export const ENTRY_BYTES = 16;
/** Chunk 0 is the header. */
export const HEADER_CHUNKS = 1;
/** Largest chunk size the kernel accepts (INT_MAX >> SECTOR_SHIFT). */
export const MAX_CHUNK_SECTORS = 0x7fffffff >> 9;

/**
 * Check a chunk size against the kernel's rules (dm-exception-store.c): a
 * power of two, a multiple of the logical block size of both devices, not
 * above INT_MAX >> 9 sectors.
 */
export function checkChunkSectors(chunkSectors: number, blockBytes: { path: string; logicalBlockSize: number }[] = []): number {
  if (!Number.isSafeInteger(chunkSectors) || chunkSectors < 1 || chunkSectors > MAX_CHUNK_SECTORS) {
    throw new SnapshotError('EINVAL', 'bad-chunk-size', `chunk size ${chunkSectors} sectors is out of range 1..${MAX_CHUNK_SECTORS}`);
  }
  if ((chunkSectors & (chunkSectors - 1)) !== 0) {
    throw new SnapshotError('EINVAL', 'bad-chunk-size', `chunk size ${chunkSectors} sectors is not a power of two`);
  }
  for (const d of blockBytes) {
    const lbs = Math.max(1, Math.floor(d.logicalBlockSize / SECTOR_BYTES));
    if (chunkSectors % lbs !== 0) {
      throw new SnapshotError(
        'EINVAL',
        'bad-chunk-size',
        `chunk size ${chunkSectors} sectors is not a multiple of the ${d.logicalBlockSize}-byte logical block size`,
        { path: d.path },
      );
    }
  }
  return chunkSectors;
}

/**
 * Layout of a persistent COW device (docs/snapshot-format.md#chunk-geometry): chunk 0 header, then metadata
 * area k at chunk 1 + k·(E+1) followed by its E data chunks.
 */
export class CowGeometry {
  readonly chunkSectors: number;
  readonly chunkBytes: number;
  /** Exceptions per metadata area (E). */
  readonly exceptionsPerArea: number;
  /** E + 1: one metadata chunk and its data chunks. */
  readonly stride: number;
  /** Whole chunks on the COW device. */
  readonly cowChunks: number;
  readonly cowSectors: number;

  constructor(chunkSectors: number, cowSectors: number) {
    this.chunkSectors = chunkSectors;
    this.chunkBytes = chunkSectors * SECTOR_BYTES;
    this.exceptionsPerArea = this.chunkBytes / ENTRY_BYTES;
    this.stride = this.exceptionsPerArea + 1;
    this.cowSectors = cowSectors;
    this.cowChunks = Math.floor(cowSectors / chunkSectors);
  }

  /** Chunk number of metadata area `area`. */
  areaChunk(area: number): number {
    return HEADER_CHUNKS + area * this.stride;
  }

  isMetadataChunk(chunk: number): boolean {
    return chunk === 0 || chunk % this.stride === 1;
  }

  /** Where the kernel puts the data of the j-th exception (0-based) of a table committed in order. */
  dataChunkOfIndex(j: number): number {
    const E = this.exceptionsPerArea;
    return 2 + Math.floor(j / E) * this.stride + (j % E);
  }

  /** Skip a metadata chunk (kernel skip_metadata). */
  skipMetadata(nextFree: number): number {
    return nextFree % this.stride === 1 ? nextFree + 1 : nextFree;
  }

  chunkToSector(chunk: number): number {
    return chunk * this.chunkSectors;
  }

  chunkToByte(chunk: number): number {
    return chunk * this.chunkBytes;
  }
}

/**
 * lvm2's COW size for a full-origin snapshot (docs/snapshot-format.md#cow-size), in sectors: header,
 * one data chunk per origin chunk, and the metadata areas with a terminator.
 */
export function cowSectorsForOrigin(originSectors: number, chunkSectors: number): number {
  const originChunks = Math.ceil(originSectors / chunkSectors);
  const perArea = (chunkSectors * SECTOR_BYTES) / ENTRY_BYTES;
  const metadataChunks = Math.floor((originChunks + perArea) / perArea);
  return (1 + originChunks + metadataChunks) * chunkSectors;
}
