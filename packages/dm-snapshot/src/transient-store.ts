import { BlockDevice } from '@dmtool/devices';
import { checkChunkSectors } from './geometry';
import { ExceptionPlan, ExceptionStore, StoreUsage } from './store';
import { ExceptionTable } from './table';

/**
 * The transient store ("N", dm-snap-transient.c): chunks are handed out from
 * COW chunk 0 upward, commits succeed at once, nothing is written but data.
 */
export class TransientStore implements ExceptionStore {
  readonly type = 'N' as const;
  readonly table = new ExceptionTable();
  readonly chunkSectors: number;
  private nextFreeSectors = 0;
  private isValid = true;

  constructor(
    readonly cow: BlockDevice,
    chunkSectors: number,
  ) {
    this.chunkSectors = checkChunkSectors(chunkSectors, [cow]);
  }

  get valid(): boolean {
    return this.isValid;
  }

  prepare(): number | undefined {
    if (this.cow.sizeSectors < this.nextFreeSectors + this.chunkSectors) return undefined;
    const chunk = this.nextFreeSectors / this.chunkSectors;
    this.nextFreeSectors += this.chunkSectors;
    return chunk;
  }

  plan(count: number): ExceptionPlan {
    const freeChunks = this.isValid ? Math.floor((this.cow.sizeSectors - this.nextFreeSectors) / this.chunkSectors) : 0;
    const roomChunks = Math.min(count, freeChunks);
    const usageAfter = { ...this.usage(), allocatedSectors: this.nextFreeSectors + roomChunks * this.chunkSectors };
    return { chunks: count, roomChunks, fits: roomChunks === count, usageAfter };
  }

  async commit(entries: readonly { oldChunk: number; newChunk: number }[]): Promise<void> {
    for (const e of entries) this.table.append(e.oldChunk, e.newChunk);
  }

  async invalidate(): Promise<void> {
    this.isValid = false;
  }

  usage(): StoreUsage {
    return { allocatedSectors: this.nextFreeSectors, totalSectors: this.cow.sizeSectors, metadataSectors: 0 };
  }
}
