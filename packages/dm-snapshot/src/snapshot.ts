import { DestinationRegion, KcopydClient, KcopydIoError, MAX_DESTINATIONS } from '@dmtool/kcopyd';
import { BlockDevice, SECTOR_BYTES, WriteOptions } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { SnapshotError } from './errors';
import { PersistentStore } from './persistent-store';
import { ChunkTracker } from './chunk-tracker';
import { formatUsage, storeStatus } from './status';
import { ExceptionPlan, ExceptionStore, StoreUsage } from './store';
import { TransientStore } from './transient-store';

export interface OriginOptions {
  /** kcopyd client for copy-outs (default: one made here, destroyed by close()). */
  kcopyd?: KcopydClient;
  /** Copy-out jobs in flight at once (default 16). */
  copyConcurrency?: number;
}

export interface CreateSnapshotOptions {
  chunkSectors: number;
  /** 'P' (default), 'PO' (overflow-aware) or 'N' (transient). */
  type?: 'P' | 'PO' | 'N';
  /** Format over a COW whose first bytes are not zero. */
  force?: boolean;
}

/** What a write would do to a snapshot (Snapshot.planWrite). */
export interface WritePlan extends ExceptionPlan {
  /** The status line's INFO once the write is done: usage, or Invalid / Overflow when the COW cannot hold it. */
  statusAfter: string;
}

export interface OpenSnapshotOptions {
  /** Refuse a COW whose header has another chunk size. */
  chunkSectors?: number;
  overflow?: boolean;
}

interface Piece {
  chunk: number;
  /** Sector inside the chunk and length of the part of the request in it. */
  offsetSectors: number;
  sectors: number;
  /** Offset of this part in the caller's buffer, in bytes. */
  bufByte: number;
}

function checkRequest(what: string, device: BlockDevice, buf: Buffer, sector: number, limitSectors: number): number {
  if (!Buffer.isBuffer(buf)) throw new TypeError('data must be a Buffer');
  if (buf.length === 0 || buf.length % SECTOR_BYTES !== 0) {
    throw new SnapshotError('EINVAL', 'misaligned', `${what}: length ${buf.length} bytes is not a positive multiple of 512`, {
      path: device.path,
    });
  }
  const sectors = buf.length / SECTOR_BYTES;
  if (!Number.isSafeInteger(sector) || sector < 0 || sector + sectors > limitSectors) {
    throw new SnapshotError('ERANGE', 'out-of-range', `${what}: range lies outside the ${limitSectors}-sector device`, {
      path: device.path,
      sector,
      sectors,
    });
  }
  return sectors;
}

function pieces(sector: number, sectors: number, chunkSectors: number): Piece[] {
  const out: Piece[] = [];
  let s = sector;
  const end = sector + sectors;
  while (s < end) {
    const chunk = Math.floor(s / chunkSectors);
    const offsetSectors = s - chunk * chunkSectors;
    const n = Math.min(chunkSectors - offsetSectors, end - s);
    out.push({ chunk, offsetSectors, sectors: n, bufByte: (s - sector) * SECTOR_BYTES });
    s += n;
  }
  return out;
}

/** Run async tasks with at most `limit` in flight. */
async function runLimited<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

interface PendingOriginWrite {
  data: Buffer;
  sector: number;
  sectors: number;
  opts: WriteOptions | undefined;
  resolve: () => void;
  reject: (e: unknown) => void;
}

interface CopyOut {
  chunkSectors: number;
  oldChunk: number;
  chunks: number;
  dests: { snap: Snapshot; newChunk: number }[];
}

/**
 * An origin device and the snapshots taken of it. Writes through the origin
 * copy each untouched chunk into every snapshot's COW first (one kcopyd job
 * for all snapshots of the same chunk size), commit the exceptions, and
 * only then reach the origin (docs/snapshot-format.md#origin-writes).
 */
export class Origin {
  readonly device: BlockDevice;
  readonly kcopyd: KcopydClient;
  private readonly ownsKcopyd: boolean;
  private readonly copyConcurrency: number;
  private snaps: Snapshot[] = [];
  private queue: Promise<unknown> = Promise.resolve();
  /** Origin writes waiting for their turn; the next batch takes them all. */
  private waiting: PendingOriginWrite[] = [];

  constructor(device: BlockDevice, opts: OriginOptions = {}) {
    this.device = device;
    this.ownsKcopyd = opts.kcopyd === undefined;
    this.kcopyd = opts.kcopyd ?? new KcopydClient();
    this.copyConcurrency = opts.copyConcurrency ?? 16;
  }

  get sizeSectors(): number {
    return this.device.sizeSectors;
  }

  /** Snapshots, largest chunk size first (the kernel's order). */
  get snapshots(): readonly Snapshot[] {
    return this.snaps;
  }

  /**
   * @internal Writes (origin and snapshot) run one at a time, so two writes
   * to one chunk never both create its exception.
   */
  serialize<T>(work: () => Promise<T>): Promise<T> {
    const run = this.queue.then(work, work);
    this.queue = run.catch(() => undefined);
    return run;
  }

  /** @internal */
  attach(snap: Snapshot): void {
    if (snap.cow.identity === this.device.identity) {
      throw new SnapshotError('EINVAL', 'same-device', 'the COW device is the origin device', { path: snap.cow.path });
    }
    if (this.snaps.some((s) => s.cow.identity === snap.cow.identity)) {
      throw new SnapshotError('EBUSY', 'same-device', 'this COW device already backs a snapshot of the origin', { path: snap.cow.path });
    }
    this.snaps.push(snap);
    this.snaps.sort((a, b) => b.chunkSectors - a.chunkSectors);
  }

  /** @internal */
  detach(snap: Snapshot): void {
    this.snaps = this.snaps.filter((s) => s !== snap);
  }

  /** Read the origin as it is now. */
  async read(buf: Buffer, sector: number): Promise<void> {
    const sectors = checkRequest('origin read', this.device, buf, sector, this.sizeSectors);
    await this.device.read(buf, 0, sectors * SECTOR_BYTES, sector * SECTOR_BYTES);
  }

  /**
   * Write to the origin with copy-on-write into every valid snapshot. A
   * snapshot that runs out of COW space, or whose copy or commit fails, is
   * invalidated (as the kernel does) and the write goes on. With `fua` the
   * origin write is FUA; the exceptions it made are durable anyway (every
   * commit ends with a flush of the COW, as the kernel's PREFLUSH + FUA).
   * Writes that wait for their turn together go as one batch: their chunks
   * are copied and their exceptions committed at once (one pair of COW
   * flushes), as the kernel commits the exceptions pending at once
   * (drivers/md/dm-snap-persistent.c, persistent_commit_exception), and
   * then each is written to the origin in arrival order.
   */
  async write(data: Buffer, sector: number, opts?: WriteOptions): Promise<void> {
    const sectors = checkRequest('origin write', this.device, data, sector, this.sizeSectors);
    return new Promise<void>((resolve, reject) => {
      this.waiting.push({ data, sector, sectors, opts, resolve, reject });
      if (this.waiting.length === 1) void this.serialize(() => this.writeBatch());
    });
  }

  private async writeBatch(): Promise<void> {
    const batch = this.waiting.splice(0);
    try {
      await this.copyBeforeWrite(batch);
    } catch (e) {
      for (const w of batch) w.reject(e);
      return;
    }
    // In arrival order, so that of two overlapping writes the later one's bytes are the ones left.
    for (const w of batch) {
      try {
        await this.device.write(w.data, 0, w.data.length, w.sector * SECTOR_BYTES, w.opts);
        w.resolve();
      } catch (e) {
        w.reject(e);
      }
    }
  }

  /** Copy the chunks the writes change into every snapshot lacking them, and commit their exceptions. */
  private async copyBeforeWrite(writes: readonly PendingOriginWrite[]): Promise<void> {
    const perSnap = new Map<Snapshot, { oldChunk: number; newChunk: number }[]>();
    for (const snap of this.snaps) {
      if (!snap.valid || snap.merging) continue;
      const cs = snap.chunkSectors;
      const wanted: { oldChunk: number; newChunk: number }[] = [];
      const seen = new Set<number>();
      allocate: for (const { sector, sectors } of writes) {
        for (let chunk = Math.floor(sector / cs); chunk <= Math.floor((sector + sectors - 1) / cs); chunk++) {
          if (seen.has(chunk) || snap.store.table.lookup(chunk) >= 0) continue;
          const newChunk = snap.store.prepare();
          if (newChunk === undefined) {
            wanted.length = 0;
            await snap.invalidateQuietly();
            break allocate;
          }
          seen.add(chunk);
          wanted.push({ oldChunk: chunk, newChunk });
        }
      }
      if (wanted.length > 0) perSnap.set(snap, wanted);
    }
    if (perSnap.size === 0) return;
    const failed = await this.copyOut(perSnap);
    for (const [snap, entries] of perSnap) {
      if (failed.has(snap)) {
        await snap.invalidateQuietly();
        continue;
      }
      try {
        await snap.store.commit(entries);
      } catch {
        // The store invalidated itself; the origin write still proceeds.
      }
    }
    // Snapshot reads that looked a chunk up before its exception existed
    // read it from the origin: the write waits for them, as the kernel's
    // __check_for_conflicting_io does (later reads find the exception).
    for (const [snap, entries] of perSnap) await snap.originReads.drain(entries.map((e) => e.oldChunk));
  }

  async flush(): Promise<void> {
    await this.device.flush();
  }

  /** Wait for copy-outs and release the kcopyd client if this origin made it. */
  async close(): Promise<void> {
    if (this.ownsKcopyd) await this.kcopyd.destroy();
  }

  /** @internal Copy origin chunks into COWs; returns the snapshots whose copy failed. */
  async copyOut(perSnap: Map<Snapshot, { oldChunk: number; newChunk: number }[]>): Promise<Set<Snapshot>> {
    // One group per origin chunk and chunk size, split every MAX_DESTINATIONS snapshots.
    const open = new Map<string, CopyOut>();
    const groups: CopyOut[] = [];
    for (const [snap, entries] of perSnap) {
      for (const e of entries) {
        const key = `${snap.chunkSectors}:${e.oldChunk}`;
        let g = open.get(key);
        if (!g || g.dests.length === MAX_DESTINATIONS) {
          g = { chunkSectors: snap.chunkSectors, oldChunk: e.oldChunk, chunks: 1, dests: [] };
          open.set(key, g);
          groups.push(g);
        }
        g.dests.push({ snap, newChunk: e.newChunk });
      }
    }
    const jobs = coalesce(groups);
    const failed = new Set<Snapshot>();
    const originSectors = this.sizeSectors;
    await runLimited(jobs, this.copyConcurrency, async (job) => {
      const sector = job.oldChunk * job.chunkSectors;
      const count = Math.min(job.chunks * job.chunkSectors, originSectors - sector);
      const to: DestinationRegion[] = job.dests.map((d) => ({ device: d.snap.cow, sector: d.newChunk * job.chunkSectors }));
      try {
        await this.kcopyd.copy({ device: this.device, sector, count }, to);
      } catch (e) {
        // A COW that missed its copy is invalidated; the others keep theirs.
        job.dests.forEach((d, i) => {
          if (!(e instanceof KcopydIoError) || e.readErr || (e.writeErr & (1 << i)) !== 0) failed.add(d.snap);
        });
      }
    });
    return failed;
  }
}

/** Merge jobs for consecutive chunks whose every destination is consecutive too. */
function coalesce(jobs: CopyOut[]): CopyOut[] {
  jobs.sort((a, b) => a.chunkSectors - b.chunkSectors || a.oldChunk - b.oldChunk);
  const out: CopyOut[] = [];
  for (const j of jobs) {
    const p = out[out.length - 1];
    if (
      p &&
      p.chunkSectors === j.chunkSectors &&
      p.oldChunk + p.chunks === j.oldChunk &&
      p.chunks * p.chunkSectors < 2048 &&
      p.dests.length === j.dests.length &&
      p.dests.every((d, i) => d.snap === j.dests[i].snap && d.newChunk + p.chunks === j.dests[i].newChunk)
    ) {
      p.chunks++;
    } else {
      out.push({ ...j, dests: [...j.dests] });
    }
  }
  return out;
}

/**
 * A snapshot of an origin: reads resolve through the exception table, writes
 * allocate exceptions (a whole-chunk write needs no copy, docs/snapshot-format.md#snapshot-writes).
 */
export class Snapshot {
  readonly origin: Origin;
  readonly store: ExceptionStore;
  private overflowFlag = false;
  /** Set while a merge owns this snapshot: origin writes skip it. */
  merging = false;
  /** @internal Snapshot reads in flight that go to the origin, by origin chunk. */
  readonly originReads = new ChunkTracker();

  private constructor(origin: Origin, store: ExceptionStore) {
    this.origin = origin;
    this.store = store;
  }

  /** Format a COW and attach a new snapshot to the origin. */
  static async create(origin: Origin, cow: BlockDevice, opts: CreateSnapshotOptions): Promise<Snapshot> {
    checkPair(origin, cow);
    const type = opts.type ?? 'P';
    const store =
      type === 'N'
        ? new TransientStore(cow, opts.chunkSectors)
        : await PersistentStore.format(cow, opts.chunkSectors, { origin: origin.device, overflow: type === 'PO', force: opts.force });
    const snap = new Snapshot(origin, store);
    origin.attach(snap);
    return snap;
  }

  /** What create would do, refused alike but without writing: the status the new snapshot would show. */
  static async planCreate(origin: Origin, cow: BlockDevice, opts: CreateSnapshotOptions): Promise<string> {
    checkPair(origin, cow);
    const type = opts.type ?? 'P';
    const usage =
      type === 'N'
        ? new TransientStore(cow, opts.chunkSectors).usage()
        : await PersistentStore.planFormat(cow, opts.chunkSectors, { origin: origin.device, overflow: type === 'PO', force: opts.force });
    return formatUsage(usage);
  }

  /** Open an existing persistent COW (validated) and attach it to the origin. */
  static async open(origin: Origin, cow: BlockDevice, opts: OpenSnapshotOptions = {}): Promise<Snapshot> {
    checkPair(origin, cow);
    const store = await PersistentStore.open(cow, {
      chunkSectors: opts.chunkSectors,
      originSectors: origin.sizeSectors,
      origin: origin.device,
      overflow: opts.overflow,
    });
    const snap = new Snapshot(origin, store);
    origin.attach(snap);
    return snap;
  }

  get cow(): BlockDevice {
    return this.store.cow;
  }

  get chunkSectors(): number {
    return this.store.chunkSectors;
  }

  get valid(): boolean {
    return this.store.valid;
  }

  get overflowed(): boolean {
    return this.overflowFlag;
  }

  /** The snapshot device is as long as the origin. */
  get sizeSectors(): number {
    return this.origin.sizeSectors;
  }

  get exceptionCount(): number {
    return this.store.table.size;
  }

  usage(): StoreUsage {
    return this.store.usage();
  }

  /** `dmsetup status` INFO text: `Invalid`, `Overflow` or `<allocated>/<total> <metadata>`. */
  status(): string {
    if (this.valid && this.overflowFlag) return 'Overflow';
    return storeStatus(this.store);
  }

  /** The whole `dmsetup status` line of the snapshot target. */
  statusLine(target: 'snapshot' | 'snapshot-merge' = 'snapshot'): string {
    return `0 ${this.sizeSectors} ${target} ${this.status()}`;
  }

  /** `dmsetup table` line (device paths instead of major:minor). */
  tableLine(): string {
    return `0 ${this.sizeSectors} snapshot ${this.origin.device.path} ${this.cow.path} ${this.store.type} ${this.chunkSectors}`;
  }

  /**
   * What a write to the origin or to the snapshot would do here, without
   * doing it: both need a new exception for every chunk of the range that
   * has none. When the COW cannot hold them all, an origin write invalidates
   * the snapshot, a snapshot write invalidates it ("P") or overflows ("PO").
   */
  planWrite(target: 'origin' | 'snapshot', sector: number, sectors: number): WritePlan {
    const cs = this.chunkSectors;
    let chunks = 0;
    if (this.valid && !this.merging && sectors > 0) {
      for (let chunk = Math.floor(sector / cs); chunk <= Math.floor((sector + sectors - 1) / cs); chunk++) {
        if (this.store.table.lookup(chunk) < 0) chunks++;
      }
    }
    const plan = this.store.plan(chunks);
    let statusAfter: string;
    if (!this.valid) statusAfter = 'Invalid';
    else if (plan.fits) statusAfter = formatUsage(plan.usageAfter);
    else statusAfter = target === 'snapshot' && this.store.type === 'PO' ? 'Overflow' : 'Invalid';
    return { ...plan, statusAfter };
  }

  /** Whether origin chunk `chunk` has an exception: the snapshot reads it from the COW. */
  holdsChunk(chunk: number): boolean {
    return this.store.table.lookup(chunk) >= 0;
  }

  /** Exceptions in table order. */
  *exceptions(): IterableIterator<{ index: number; oldChunk: number; newChunk: number }> {
    const t = this.store.table;
    for (let index = 0; index < t.size; index++) yield { index, oldChunk: t.oldAt(index), newChunk: t.newAt(index) };
  }

  /** Detach from the origin (origin writes stop copying into it). */
  close(): void {
    this.origin.detach(this);
  }

  private checkUsable(what: string, sector: number, sectors: number): void {
    if (!this.valid) {
      throw new SnapshotError('EIO', 'invalid', `${what}: snapshot is invalid`, { path: this.cow.path, sector, sectors });
    }
  }

  /** Read the snapshot view: exceptions from the COW, the rest from the origin. */
  async read(buf: Buffer, sector: number): Promise<void> {
    const sectors = checkRequest('snapshot read', this.cow, buf, sector, this.sizeSectors);
    this.checkUsable('snapshot read', sector, sectors);
    const cs = this.chunkSectors;
    const table = this.store.table;
    // Every chunk is looked up before the first read is issued, and chunks
    // read from the origin are tracked until their read is done, so an
    // origin write that adds their exception meanwhile waits for the read.
    const runs: { device: BlockDevice; devSector: number; sectors: number; bufByte: number }[] = [];
    const fromOrigin: number[] = [];
    for (const p of pieces(sector, sectors, cs)) {
      const nc = table.lookup(p.chunk);
      const device = nc >= 0 ? this.cow : this.origin.device;
      if (nc < 0) fromOrigin.push(p.chunk);
      const devSector = (nc >= 0 ? nc : p.chunk) * cs + p.offsetSectors;
      const run = runs[runs.length - 1];
      // Coalesce neighbouring pieces that land next to each other on one device.
      if (run && run.device === device && run.devSector + run.sectors === devSector) run.sectors += p.sectors;
      else runs.push({ device, devSector, sectors: p.sectors, bufByte: p.bufByte });
    }
    this.originReads.add(fromOrigin);
    try {
      for (const run of runs) await run.device.read(buf, run.bufByte, run.sectors * SECTOR_BYTES, run.devSector * SECTOR_BYTES);
    } finally {
      this.originReads.remove(fromOrigin);
    }
  }

  /**
   * Write to the snapshot. Chunks with an exception are written in the COW;
   * others get one: a write covering the whole chunk goes straight to the new
   * COW chunk, a partial one first copies the origin chunk. New exceptions
   * are committed before the partial writes land (docs/snapshot-format.md#snapshot-writes). No COW space: "P"
   * invalidates the snapshot, "PO" sets Overflow; either way the write fails
   * (chunks before the one that did not fit are written). With `fua` the
   * pieces written after the commit are FUA, and so are all of them when
   * there is no commit; those before it are made durable by the commit's
   * flush of the COW (the kernel sends the write with its FUA once the
   * exception is committed with PREFLUSH + FUA).
   */
  async write(data: Buffer, sector: number, opts?: WriteOptions): Promise<void> {
    const sectors = checkRequest('snapshot write', this.cow, data, sector, this.sizeSectors);
    return this.origin.serialize(() => this.writeNow(data, sector, sectors, opts));
  }

  private async writeNow(data: Buffer, sector: number, sectors: number, opts: WriteOptions | undefined): Promise<void> {
    this.checkUsable('snapshot write', sector, sectors);
    if (this.overflowFlag) {
      throw new SnapshotError('EIO', 'overflow', 'snapshot write: snapshot has overflowed', { path: this.cow.path, sector, sectors });
    }
    const cs = this.chunkSectors;
    const originSectors = this.origin.sizeSectors;
    const direct: { piece: Piece; newChunk: number }[] = [];
    const later: { piece: Piece; newChunk: number }[] = [];
    const created: { oldChunk: number; newChunk: number }[] = [];
    const copies: { oldChunk: number; newChunk: number }[] = [];
    let noSpace: SnapshotError | undefined;
    for (const p of pieces(sector, sectors, cs)) {
      const existing = this.store.table.lookup(p.chunk);
      if (existing >= 0) {
        direct.push({ piece: p, newChunk: existing });
        continue;
      }
      const newChunk = this.store.prepare();
      if (newChunk === undefined) {
        const at = p.chunk * cs;
        noSpace = new SnapshotError(
          this.store.type === 'PO' ? 'ENOSPC' : 'EIO',
          this.store.type === 'PO' ? 'overflow' : 'no-space',
          this.store.type === 'PO'
            ? 'snapshot write: COW is full, snapshot overflowed'
            : 'snapshot write: COW is full, snapshot invalidated',
          { path: this.cow.path, sector: at, sectors: cs },
        );
        break;
      }
      created.push({ oldChunk: p.chunk, newChunk });
      const whole = p.sectors === cs && (p.chunk + 1) * cs <= originSectors;
      if (whole) direct.push({ piece: p, newChunk });
      else {
        copies.push({ oldChunk: p.chunk, newChunk });
        later.push({ piece: p, newChunk });
      }
    }
    if (copies.length > 0) {
      const failed = await this.origin.copyOut(new Map([[this as Snapshot, copies]]));
      if (failed.size > 0) {
        await this.invalidateQuietly();
        throw new SnapshotError('EIO', 'copy-failed', 'snapshot write: copying the origin chunk failed, snapshot invalidated', {
          path: this.cow.path,
          sector,
          sectors,
        });
      }
    }
    // A persistent store's commit flushes the COW, covering the pieces written before it; a transient one does not.
    const commits = created.length > 0 && this.store.type !== 'N';
    for (const d of direct) await this.writePiece(data, d.piece, d.newChunk, commits ? undefined : opts);
    if (created.length > 0) await this.store.commit(created);
    for (const d of later) await this.writePiece(data, d.piece, d.newChunk, opts);
    if (noSpace) {
      if (this.store.type === 'PO') this.overflowFlag = true;
      else await this.invalidateQuietly();
      throw noSpace;
    }
  }

  private async writePiece(data: Buffer, p: Piece, newChunk: number, opts: WriteOptions | undefined): Promise<void> {
    const byte = (newChunk * this.chunkSectors + p.offsetSectors) * SECTOR_BYTES;
    await this.cow.write(data, p.bufByte, p.sectors * SECTOR_BYTES, byte, opts);
  }

  /** @internal invalidate, ignoring a failure to rewrite the header. */
  async invalidateQuietly(): Promise<void> {
    if (!this.valid) return;
    await this.store.invalidate().catch(() => undefined);
  }

  /** Flush the COW device. */
  async flush(): Promise<void> {
    await this.cow.flush();
  }
}

function checkPair(origin: Origin, cow: BlockDevice): void {
  if (cow.identity === origin.device.identity) {
    throw new SnapshotError('EINVAL', 'same-device', 'the COW device and the origin are the same device', { path: cow.path });
  }
}

/** A zero-filled buffer aligned for O_DIRECT. */
export function snapshotBuffer(bytes: number): Buffer {
  return allocBuffer(bytes);
}
