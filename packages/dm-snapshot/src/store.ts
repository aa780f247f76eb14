import { BlockDevice } from '@dmtool/devices';
import { ExceptionTable } from './table';

export interface StoreUsage {
  /** Sectors allocated (persistent: next_free·cs, a high-water mark including metadata). */
  allocatedSectors: number;
  /** COW device size in sectors. */
  totalSectors: number;
  /** Header and metadata sectors (0 for a transient store). */
  metadataSectors: number;
}

/** What committing new exceptions would do, worked out without allocating or writing. */
export interface ExceptionPlan {
  /** New exceptions asked for. */
  chunks: number;
  /** How many of them the COW can take and commit; equals `chunks` when they fit. */
  roomChunks: number;
  fits: boolean;
  /** Usage once they are committed (meaningful when they fit). */
  usageAfter: StoreUsage;
}

/** What a snapshot needs from its exception store (persistent or transient). */
export interface ExceptionStore {
  /** 'P', 'PO' (persistent, overflow-aware) or 'N' (transient), as in the table line. */
  readonly type: 'P' | 'PO' | 'N';
  readonly cow: BlockDevice;
  readonly chunkSectors: number;
  readonly table: ExceptionTable;
  readonly valid: boolean;
  /** Allocate a COW chunk for a new exception; undefined when the COW is full. */
  prepare(): number | undefined;
  /** The outcome of preparing and committing `count` new exceptions now, by the rules prepare and commit follow. */
  plan(count: number): ExceptionPlan;
  /**
   * Commit exceptions whose data is in place, in allocation order. Resolves
   * once they are durable; rejects (store then invalid) on a metadata error.
   */
  commit(entries: readonly { oldChunk: number; newChunk: number }[]): Promise<void>;
  /** Mark the store invalid (persistent: header rewritten with valid = 0). */
  invalidate(): Promise<void>;
  usage(): StoreUsage;
}
