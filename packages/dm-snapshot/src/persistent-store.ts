import { BlockDevice, crashPoint, DeviceError, SECTOR_BYTES } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { encodeEntry } from './area';
import { SnapshotError } from './errors';
import { checkChunkSectors, CowGeometry } from './geometry';
import { CowHeader, decodeHeader, encodeHeader, HeaderState } from './header';
import { ExceptionPlan, ExceptionStore, StoreUsage } from './store';
import { persistentUsage } from './status';
import { ExceptionTable } from './table';
import { checkEntry, duplicateNewChunkError, duplicateOldChunkError, FIRST_FREE_CHUNK, forEachArea } from './table-scan';

export interface OpenStoreOptions {
  /** Expected chunk size; an on-disk header with another one is refused. */
  chunkSectors?: number;
  /** Origin size: entries whose old_chunk lies beyond it are refused. */
  originSectors?: number;
  /** The origin device, for the chunk size / logical block size rule. */
  origin?: BlockDevice;
  /** "PO": a snapshot write that finds the COW full sets Overflow instead of invalidating. */
  overflow?: boolean;
}

export interface FormatOptions {
  origin?: BlockDevice;
  overflow?: boolean;
  /** Format even if the COW's first bytes are not zero (they are overwritten). */
  force?: boolean;
}

/** Read the first bytes of a COW: fresh (magic 0) or a snapshot header. */
export async function probeHeader(cow: BlockDevice): Promise<HeaderState> {
  if (cow.sizeBytes < SECTOR_BYTES) {
    throw new SnapshotError('ENOSPC', 'cow-too-small', `COW device is ${cow.sizeBytes} bytes, smaller than one sector`, { path: cow.path });
  }
  const n = Math.max(SECTOR_BYTES, cow.ioAlignmentBytes);
  const buf = allocBuffer(n);
  await cow.read(buf, 0, n, 0);
  return decodeHeader(buf, cow.path);
}

/**
 * Read and check a COW's header (docs/snapshot-format.md#validity): refuses an unformatted COW, a
 * chunk size other than the caller's, a bad chunk size and a COW too small
 * for its first area. Nothing is written.
 */
export async function readCowHeader(
  cow: BlockDevice,
  opts: OpenStoreOptions = {},
): Promise<{ valid: boolean; geometry: CowGeometry; header: CowHeader }> {
  const state = await probeHeader(cow);
  if (state.kind === 'fresh') {
    throw new SnapshotError('EINVAL', 'not-formatted', 'COW has no snapshot header (magic is 0); create the snapshot first', {
      path: cow.path,
      sector: 0,
      sectors: 1,
    });
  }
  const h = state.header;
  if (opts.chunkSectors !== undefined && opts.chunkSectors !== h.chunkSectors) {
    throw new SnapshotError(
      'EINVAL',
      'chunk-size-mismatch',
      `chunk size ${opts.chunkSectors} does not match the COW header's ${h.chunkSectors} sectors`,
      { path: cow.path, sector: 0, sectors: 1 },
    );
  }
  checkChunkSectors(h.chunkSectors, opts.origin ? [cow, opts.origin] : [cow]);
  const geometry = new CowGeometry(h.chunkSectors, cow.sizeSectors);
  if (geometry.cowChunks < 2) {
    throw new SnapshotError('ENOSPC', 'cow-too-small', `COW of ${cow.sizeSectors} sectors is smaller than its header and first area`, {
      path: cow.path,
    });
  }
  return { valid: h.valid, geometry, header: h };
}

/**
 * The persistent exception store in the kernel's on-disk format
 * (dm-snap-persistent.c): header chunk, metadata areas of E entries
 * interleaved with data chunks, first new_chunk 0 ends the table.
 */
export class PersistentStore implements ExceptionStore {
  readonly table: ExceptionTable;
  readonly geometry: CowGeometry;
  readonly chunkSectors: number;
  /** Next chunk to allocate (kernel next_free). */
  nextFree: number;
  /** Metadata area being filled, and how many of its entries are committed. */
  currentArea: number;
  currentCommitted: number;
  private isValid: boolean;
  private readonly overflowMode: boolean;
  private readonly area: Buffer;
  private readonly scratch: Buffer;

  private constructor(
    readonly cow: BlockDevice,
    geometry: CowGeometry,
    valid: boolean,
    overflow: boolean,
    table: ExceptionTable,
  ) {
    this.geometry = geometry;
    this.chunkSectors = geometry.chunkSectors;
    this.isValid = valid;
    this.overflowMode = overflow;
    this.table = table;
    this.area = allocBuffer(geometry.chunkBytes);
    this.scratch = allocBuffer(geometry.chunkBytes);
    this.nextFree = FIRST_FREE_CHUNK;
    this.currentArea = 0;
    this.currentCommitted = 0;
  }

  get type(): 'P' | 'PO' {
    return this.overflowMode ? 'PO' : 'P';
  }

  get valid(): boolean {
    return this.isValid;
  }

  get exceptionsPerArea(): number {
    return this.geometry.exceptionsPerArea;
  }

  /** Everything format checks, without writing: the usage the formatted COW would show. */
  static async planFormat(cow: BlockDevice, chunkSectors: number, opts: FormatOptions = {}): Promise<StoreUsage> {
    return (await PersistentStore.checkFormat(cow, chunkSectors, opts)).usage();
  }

  /** Refuse what format refuses; the empty store it would write, in memory only. */
  private static async checkFormat(cow: BlockDevice, chunkSectors: number, opts: FormatOptions): Promise<PersistentStore> {
    checkChunkSectors(chunkSectors, opts.origin ? [cow, opts.origin] : [cow]);
    const geometry = new CowGeometry(chunkSectors, cow.sizeSectors);
    if (geometry.cowChunks < 3) {
      throw new SnapshotError(
        'ENOSPC',
        'cow-too-small',
        `COW of ${cow.sizeSectors} sectors cannot hold a header, a metadata area and one ${chunkSectors}-sector chunk (needs ${3 * chunkSectors})`,
        { path: cow.path },
      );
    }
    if (!opts.force) {
      const state = await probeHeader(cow);
      if (state.kind !== 'fresh') {
        throw new SnapshotError('EEXIST', 'cow-not-empty', 'COW already holds a snapshot header (refusing to format over it)', {
          path: cow.path,
          sector: 0,
          sectors: chunkSectors,
        });
      }
    }
    return new PersistentStore(cow, geometry, true, opts.overflow === true, new ExceptionTable());
  }

  /**
   * Format a COW (docs/snapshot-format.md#formatting): zero area 0, write the header, flush. Refuses a COW
   * that already carries a header (or any non-zero magic) unless `force`.
   */
  static async format(cow: BlockDevice, chunkSectors: number, opts: FormatOptions = {}): Promise<PersistentStore> {
    const store = await PersistentStore.checkFormat(cow, chunkSectors, opts);
    const geometry = store.geometry;
    // A failure here is not an invalidation: until the header is written the
    // COW holds no snapshot, and nothing else may be written to it.
    let headerWritten = false;
    try {
      store.scratch.fill(0);
      await cow.write(store.scratch, 0, geometry.chunkBytes, geometry.chunkToByte(geometry.areaChunk(0)));
      // The empty area 0 must be durable before a valid header can point at it.
      await cow.flush();
      encodeHeader(store.scratch, { valid: true, chunkSectors });
      await cow.write(store.scratch, 0, geometry.chunkBytes, 0);
      headerWritten = true;
      await cow.flush();
    } catch (e) {
      if (!(e instanceof DeviceError)) throw e;
      const what = headerWritten ? 'the header was written but may not be durable' : 'no snapshot header was written';
      throw new SnapshotError(e.code, 'metadata-io', `formatting the COW failed, ${what}: ${e.message}`);
    }
    return store;
  }

  /**
   * Read and validate an existing COW (docs/snapshot-format.md#validity). Every broken rule is one
   * SnapshotError naming the device and sectors; nothing is written.
   */
  static async open(cow: BlockDevice, opts: OpenStoreOptions = {}): Promise<PersistentStore> {
    const { valid, geometry } = await readCowHeader(cow, opts);
    const store = new PersistentStore(cow, geometry, valid, opts.overflow === true, new ExceptionTable());
    if (valid) await store.readTable(opts.originSectors);
    return store;
  }

  private async readTable(originSectors?: number): Promise<void> {
    const g = this.geometry;
    const path = this.cow.path;
    const E = g.exceptionsPerArea;
    let monotonic = true;
    let lastNew = 0;
    let nextFree = FIRST_FREE_CHUNK;
    await forEachArea(this.cow, g, (area, decoded) => {
      for (let i = 0; i < decoded.count; i++) {
        const oldChunk = decoded.olds[i];
        const newChunk = decoded.news[i];
        checkEntry(g, path, area, i, oldChunk, newChunk, originSectors);
        if (!this.table.append(oldChunk, newChunk)) throw duplicateOldChunkError(g, path, area * E + i, oldChunk, newChunk);
        if (newChunk <= lastNew) monotonic = false;
        lastNew = newChunk;
        if (nextFree <= newChunk) nextFree = newChunk + 1;
      }
      if (!decoded.full) {
        this.currentArea = area;
        this.currentCommitted = decoded.count;
      }
    });
    if (!monotonic) this.checkDistinctNewChunks();
    this.nextFree = g.skipMetadata(nextFree);
    // Keep the in-memory area exactly as the table says (bytes after the terminator zero).
    this.rebuildArea();
  }

  private checkDistinctNewChunks(): void {
    const n = this.table.size;
    const news = new Float64Array(n);
    for (let i = 0; i < n; i++) news[i] = this.table.newAt(i);
    news.sort();
    for (let i = 1; i < n; i++) {
      if (news[i] === news[i - 1]) throw duplicateNewChunkError(this.geometry, this.cow.path, news[i]);
    }
  }

  /** Room check of the kernel's persistent_prepare_exception: the chunk at `nextFree` lies wholly on the COW. */
  private fitsAt(nextFree: number): boolean {
    return this.cow.sizeSectors >= (nextFree + 1) * this.chunkSectors;
  }

  prepare(): number | undefined {
    if (!this.isValid || !this.fitsAt(this.nextFree)) return undefined;
    const chunk = this.nextFree;
    this.nextFree = this.geometry.skipMetadata(this.nextFree + 1);
    return chunk;
  }

  plan(count: number): ExceptionPlan {
    const g = this.geometry;
    const E = this.exceptionsPerArea;
    let nextFree = this.nextFree;
    let allocatable = 0;
    while (allocatable < count && this.isValid && this.fitsAt(nextFree)) {
      nextFree = g.skipMetadata(nextFree + 1);
      allocatable++;
    }
    // Filling an area zeroes the next one (commit): when that one lies past
    // the COW end the commit fails, so the entry that fills the area is lost.
    const areasFilled = Math.floor((this.currentCommitted + allocatable) / E);
    const nextAreaMissing = areasFilled > 0 && g.areaChunk(this.currentArea + areasFilled) >= g.cowChunks;
    const roomChunks = nextAreaMissing ? areasFilled * E - this.currentCommitted - 1 : allocatable;
    return {
      chunks: count,
      roomChunks,
      fits: roomChunks === count,
      usageAfter: {
        allocatedSectors: nextFree * this.chunkSectors,
        totalSectors: this.cow.sizeSectors,
        metadataSectors: (this.currentArea + areasFilled + 2) * this.chunkSectors,
      },
    };
  }

  /**
   * Commit exceptions in order (docs/snapshot-format.md#commit): each goes into the in-memory area;
   * the area is written when it becomes full (after zeroing the next area)
   * and once at the end. Every area write is preceded by a flush of the COW
   * (data copies and next-area zeroing durable first) and followed by one
   * (the entries durable), the user-space form of PREFLUSH + FUA.
   */
  async commit(entries: readonly { oldChunk: number; newChunk: number }[]): Promise<void> {
    if (!this.isValid) throw this.invalidError();
    const E = this.exceptionsPerArea;
    let dirty = false;
    for (const e of entries) {
      if (!this.table.append(e.oldChunk, e.newChunk)) {
        throw new SnapshotError('EINVAL', 'duplicate-old-chunk', `origin chunk ${e.oldChunk} already has an exception`, {
          path: this.cow.path,
        });
      }
      encodeEntry(this.area, this.currentCommitted++, e.oldChunk, e.newChunk);
      dirty = true;
      if (this.currentCommitted === E) {
        await this.writeArea(true);
        dirty = false;
      }
    }
    if (dirty) await this.writeArea(false);
  }

  private async writeArea(full: boolean): Promise<void> {
    const g = this.geometry;
    const areaByte = g.chunkToByte(g.areaChunk(this.currentArea));
    await this.ioMetadata(
      async () => {
        if (full) {
          const next = g.areaChunk(this.currentArea + 1);
          this.scratch.fill(0);
          await this.cow.write(this.scratch, 0, g.chunkBytes, g.chunkToByte(next));
          crashPoint('snapshot-commit:next-area-zeroed');
        }
        await this.cow.flush();
        crashPoint('snapshot-commit:before-area-write');
        await this.cow.write(this.area, 0, g.chunkBytes, areaByte);
        await this.cow.flush();
        crashPoint('snapshot-commit:area-written');
      },
      g.chunkToSector(g.areaChunk(this.currentArea)),
    );
    if (full) {
      this.currentArea++;
      this.currentCommitted = 0;
      this.area.fill(0);
    }
  }

  /** Run metadata I/O; an I/O error invalidates the store (as the kernel does) and is rethrown as one error. */
  private async ioMetadata(work: () => Promise<void>, sector: number): Promise<void> {
    try {
      await work();
    } catch (e) {
      if (!(e instanceof DeviceError)) throw e;
      const invalidated = this.isValid
        ? await this.invalidate().then(
            () => 'snapshot invalidated',
            () => 'snapshot invalid in memory, header write failed too',
          )
        : 'snapshot already invalid';
      throw new SnapshotError(e.code, 'metadata-io', `metadata write failed, ${invalidated}: ${e.message}`, {
        path: this.cow.path,
        sector,
        sectors: this.chunkSectors,
      });
    }
  }

  /** Invalidate (docs/snapshot-format.md#invalidation-and-overflow): valid = 0 in memory, header rewritten; the table is left as it is. */
  async invalidate(): Promise<void> {
    this.isValid = false;
    const g = this.geometry;
    encodeHeader(this.scratch, { valid: false, chunkSectors: this.chunkSectors });
    await this.cow.write(this.scratch, 0, g.chunkBytes, 0);
    await this.cow.flush();
  }

  /** Usage with no exceptions, only the header and area 0: a fresh COW's, and a fully merged one's. */
  emptyUsage(): StoreUsage {
    const sectors = FIRST_FREE_CHUNK * this.chunkSectors;
    return { allocatedSectors: sectors, totalSectors: this.cow.sizeSectors, metadataSectors: sectors };
  }

  usage(): StoreUsage {
    return persistentUsage(this.geometry, this.cow.sizeSectors, this.nextFree, this.currentArea);
  }

  /**
   * Forget the last `count` exceptions in memory, after the merge retired
   * them from the on-disk table (MergeTail.retire): a device serving the
   * merge keeps its table as the disk's.
   */
  forgetTail(count: number): void {
    if (count <= 0) return;
    const n = this.table.size;
    if (count > n) throw new RangeError(`cannot forget ${count} of ${n} exceptions`);
    const g = this.geometry;
    const E = this.exceptionsPerArea;
    const keep = n - count;
    for (let i = 0; i < count; i++) this.table.pop();
    this.currentArea = Math.floor(keep / E);
    this.currentCommitted = keep % E;
    this.nextFree = g.areaChunk(this.currentArea) + this.currentCommitted + 1;
    this.rebuildArea();
  }

  /** Encode area `area` holding table entries [area·E, min(limit, (area+1)·E)). */
  private fillArea(buf: Buffer, area: number, limit: number): void {
    const E = this.exceptionsPerArea;
    buf.fill(0);
    const end = Math.min(limit, (area + 1) * E);
    for (let j = area * E; j < end; j++) encodeEntry(buf, j - area * E, this.table.oldAt(j), this.table.newAt(j));
  }

  private rebuildArea(): void {
    this.fillArea(this.area, this.currentArea, this.table.size);
  }

  private invalidError(): SnapshotError {
    return new SnapshotError('EIO', 'invalid', 'snapshot is invalid', { path: this.cow.path });
  }
}
