import { BlockDevice, DataMap, SECTOR_BYTES, WriteOptions } from '@dmtool/devices';
import { formatUsage, mergeClient, mergeSnapshot, MergeResult, PersistentStore } from '@dmtool/dm-snapshot';
import { SectorDevice } from './sector-device';
import { TargetDeviceOptions } from './snapshot-devices';

export interface SnapshotMergeOptions extends TargetDeviceOptions {
  /** Average merge copy rate cap in bytes per second (default none; changeable with setMergeRate). */
  rateBytesPerSecond?: number;
}

/** A piece of a request inside one chunk. */
interface ChunkPiece {
  chunk: number;
  /** Sector of the request's start within its chunk. */
  inChunkSectors: number;
  sectors: number;
  /** Sectors from the request's start. */
  requestSectors: number;
}

/**
 * dm-snapshot's `snapshot-merge` target as a device (docs/nbd.md#targets):
 * it shows the snapshot's view of the origin while the COW is merged into
 * the origin in the background, tail first, one run of chunks per batch as
 * the kernel does (snapshot_merge_next_chunks), crash-safe as the offline
 * merge. A chunk that still has an exception is read from, and written to,
 * its COW chunk (so a write is merged later); a write to a chunk of the
 * batch being merged waits until that batch is retired, then goes to the
 * origin; every other chunk is the origin's. Once the table is empty the
 * device is the origin.
 */
export class SnapshotMergeDevice extends SectorDevice {
  readonly path: string;
  readonly identity: string;
  readonly writable: boolean;
  private readonly copier: ReturnType<typeof mergeClient>;
  private readonly abort = new AbortController();
  /** Origin chunks of the batch being merged: writes to them wait. */
  private readonly merging = new Set<number>();
  private batchRetired: Promise<void> = Promise.resolve();
  private releaseBatch = () => {};
  /** Writes in flight per chunk that has an exception: the merge of that chunk waits for them. */
  private readonly writesInFlight = new Map<number, number>();
  private writesDone: (() => void)[] = [];
  private readonly run: Promise<void>;
  /** Set while the device is suspended: the next batch waits for resumeMerge. */
  private pause?: { resumed: Promise<void>; resume: () => void };
  /** The merge's outcome once it ended. */
  result?: MergeResult;
  /** The error that stopped the merge (the kernel's `Merge failed`). */
  mergeError?: unknown;

  constructor(
    readonly origin: BlockDevice,
    readonly store: PersistentStore,
    opts: SnapshotMergeOptions = {},
  ) {
    super();
    this.path = opts.name ?? `snapshot-merge:${origin.path}`;
    this.identity = `snapshot-merge:${origin.identity}`;
    this.writable = origin.writable && store.cow.writable && opts.readOnly !== true;
    this.copier = mergeClient(opts.rateBytesPerSecond);
    const merge =
      store.valid && origin.writable && store.cow.writable
        ? mergeSnapshot(origin, store.cow, {
            store,
            kcopyd: this.copier,
            kernelBatches: true,
            signal: this.abort.signal,
            batchHooks: { beforeCopy: (runs) => this.holdBatch(runs), afterBatch: () => this.releaseBatch() },
          }).then((r) => {
            this.result = r;
          })
        : Promise.resolve();
    this.run = merge
      .catch((e: unknown) => {
        if (!this.abort.signal.aborted) this.mergeError = e;
      })
      .finally(() => this.copier.destroy());
  }

  get sizeBytes(): number {
    return this.origin.sizeBytes;
  }

  get chunkSectors(): number {
    return this.store.chunkSectors;
  }

  /** Resolves when the merge has ended (finished, failed or stopped). */
  mergeDone(): Promise<void> {
    return this.run;
  }

  /** Change the merge's rate cap while it runs (undefined: no cap); false once it ended. */
  setMergeRate(bytesPerSecond: number | undefined): boolean {
    if (this.result !== undefined || this.mergeError !== undefined || this.abort.signal.aborted) return false;
    this.copier.setRate(bytesPerSecond);
    return true;
  }

  /** The kernel's `dmsetup status` line: `<allocated>/<total> <metadata>` shrinking as the merge goes. */
  statusLine(): string {
    const info = !this.store.valid ? 'Invalid' : this.mergeError !== undefined ? 'Merge failed' : formatUsage(this.store.usage());
    return `0 ${this.origin.sizeSectors} snapshot-merge ${info}`;
  }

  /** No map: what is data changes under the merge, so block status reports everything as data. */
  dataMap(): DataMap | undefined {
    return undefined;
  }

  tableLine(): string {
    return `0 ${this.origin.sizeSectors} snapshot-merge ${this.origin.path} ${this.store.cow.path} P ${this.chunkSectors}`;
  }

  /**
   * As the kernel stops merging when the device is suspended: the batch
   * under way is finished and retired, the next one waits for resumeMerge.
   */
  async pauseMerge(): Promise<void> {
    if (!this.pause) {
      let resume!: () => void;
      const resumed = new Promise<void>((r) => (resume = r));
      this.pause = { resumed, resume };
    }
    if (this.merging.size > 0) await this.batchRetired;
  }

  resumeMerge(): void {
    const p = this.pause;
    this.pause = undefined;
    p?.resume();
  }

  private async holdBatch(runs: readonly { oldChunk: number; chunks: number }[]): Promise<void> {
    while (this.pause && !this.abort.signal.aborted) await this.pause.resumed;
    for (const r of runs) for (let c = r.oldChunk; c < r.oldChunk + r.chunks; c++) this.merging.add(c);
    this.batchRetired = new Promise((resolve) => {
      this.releaseBatch = () => {
        this.merging.clear();
        resolve();
      };
    });
    // Writes already under way to these chunks (to their COW chunks) finish before the copy reads them.
    while ([...this.merging].some((c) => this.writesInFlight.has(c))) await new Promise<void>((resolve) => this.writesDone.push(resolve));
  }

  private pieces(sector: number, sectors: number): ChunkPiece[] {
    const cs = this.chunkSectors;
    const out: ChunkPiece[] = [];
    for (let at = sector; at < sector + sectors;) {
      const chunk = Math.floor(at / cs);
      const n = Math.min((chunk + 1) * cs, sector + sectors) - at;
      out.push({ chunk, inChunkSectors: at - chunk * cs, sectors: n, requestSectors: at - sector });
      at += n;
    }
    return out;
  }

  /** Where a chunk's bytes are now: its COW chunk while it has an exception, else the origin. */
  private place(p: ChunkPiece): { device: BlockDevice; byteOffset: number } {
    const newChunk = this.store.valid ? this.store.table.lookup(p.chunk) : -1;
    const sectorOf = (chunk: number) => chunk * this.chunkSectors + p.inChunkSectors;
    return newChunk >= 0
      ? { device: this.store.cow, byteOffset: sectorOf(newChunk) * SECTOR_BYTES }
      : { device: this.origin, byteOffset: sectorOf(p.chunk) * SECTOR_BYTES };
  }

  protected async readSectors(buf: Buffer, sector: number): Promise<void> {
    await Promise.all(
      this.pieces(sector, buf.length / SECTOR_BYTES).map((p) => {
        const at = this.place(p);
        return at.device.read(buf, p.requestSectors * SECTOR_BYTES, p.sectors * SECTOR_BYTES, at.byteOffset);
      }),
    );
  }

  /** A FUA write is FUA on whichever device holds each piece now (the COW before its chunk is merged, the origin after). */
  protected async writeSectors(buf: Buffer, sector: number, opts?: WriteOptions): Promise<void> {
    await Promise.all(this.pieces(sector, buf.length / SECTOR_BYTES).map((p) => this.writePiece(buf, p, opts)));
  }

  private async writePiece(buf: Buffer, p: ChunkPiece, opts: WriteOptions | undefined): Promise<void> {
    // As the kernel queues a write to a chunk being merged until its batch is retired; then it goes to the origin.
    while (this.merging.has(p.chunk)) await this.batchRetired;
    const at = this.place(p);
    const toCow = at.device === this.store.cow;
    // Counted before the first await, so that a batch taking this chunk waits for the write.
    if (toCow) this.writesInFlight.set(p.chunk, (this.writesInFlight.get(p.chunk) ?? 0) + 1);
    try {
      await at.device.write(buf, p.requestSectors * SECTOR_BYTES, p.sectors * SECTOR_BYTES, at.byteOffset, opts);
    } finally {
      if (toCow) {
        const left = this.writesInFlight.get(p.chunk)! - 1;
        if (left === 0) this.writesInFlight.delete(p.chunk);
        else this.writesInFlight.set(p.chunk, left);
        for (const w of this.writesDone.splice(0)) w();
      }
    }
  }

  async flush(): Promise<void> {
    await Promise.all([this.origin.flush(), this.store.cow.writable ? this.store.cow.flush() : Promise.resolve()]);
  }

  /** Stop the merge after the batch under way (what it merged is retired); the devices stay open. */
  async stop(): Promise<void> {
    this.abort.abort();
    this.resumeMerge();
    await this.run;
  }

  close(): void {
    this.closed = true;
    this.abort.abort();
    this.resumeMerge();
  }
}
