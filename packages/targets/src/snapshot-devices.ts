import { Origin, Snapshot } from '@dmtool/dm-snapshot';
import { ByteExtent, DataMap, dataMapOf, SECTOR_BYTES, WriteOptions } from '@dmtool/devices';
import { heldChunkExtents, snapshotDataMap } from './data-maps';
import { SectorDevice } from './sector-device';

export interface TargetDeviceOptions {
  /** Shown in messages (default: made from the table). */
  name?: string;
  /** Refuse writes even when the devices underneath take them. */
  readOnly?: boolean;
}

/**
 * dm-snapshot's `snapshot-origin` target as a device: reads see the origin,
 * a write first copies the chunks it changes into every snapshot of the
 * origin that lacks them and commits their exceptions (Origin.write), so
 * it is acknowledged only once the COW data and exception areas are
 * durable. A flush reaches the origin and every COW.
 */
export class SnapshotOriginDevice extends SectorDevice {
  readonly path: string;
  readonly identity: string;
  readonly writable: boolean;

  constructor(
    readonly origin: Origin,
    opts: TargetDeviceOptions = {},
  ) {
    super();
    this.path = opts.name ?? `snapshot-origin:${origin.device.path}`;
    this.identity = `snapshot-origin:${origin.device.identity}`;
    this.writable = origin.device.writable && opts.readOnly !== true;
  }

  get sizeBytes(): number {
    return this.origin.sizeSectors * SECTOR_BYTES;
  }

  protected readSectors(buf: Buffer, sector: number): Promise<void> {
    return this.origin.read(buf, sector);
  }

  protected writeSectors(buf: Buffer, sector: number, opts?: WriteOptions): Promise<void> {
    return this.origin.write(buf, sector, opts);
  }

  async flush(): Promise<void> {
    await Promise.all([this.origin.flush(), ...this.origin.snapshots.filter((s) => s.cow.writable).map((s) => s.flush())]);
  }

  /** Reads see the origin, so its map is this device's. */
  dataMap(): DataMap | undefined {
    return dataMapOf(this.origin.device);
  }

  /** `dmsetup status` line (the kernel prints nothing after the target name). */
  statusLine(): string {
    return `0 ${this.origin.sizeSectors} snapshot-origin `;
  }

  tableLine(): string {
    return `0 ${this.origin.sizeSectors} snapshot-origin ${this.origin.device.path}`;
  }

  close(): void {
    this.closed = true;
  }
}

/**
 * dm-snapshot's `snapshot` target as a device: the origin as it was when
 * the snapshot was taken, plus what was written to the snapshot. An
 * invalid snapshot fails every request with EIO, as the kernel's does. A
 * flush reaches the COW and the origin.
 */
export class SnapshotDevice extends SectorDevice {
  readonly path: string;
  readonly identity: string;
  readonly writable: boolean;

  constructor(
    readonly snapshot: Snapshot,
    opts: TargetDeviceOptions = {},
  ) {
    super();
    this.path = opts.name ?? `snapshot:${snapshot.cow.path}`;
    this.identity = `snapshot:${snapshot.cow.identity}`;
    this.writable = snapshot.cow.writable && opts.readOnly !== true;
  }

  get sizeBytes(): number {
    return this.snapshot.sizeSectors * SECTOR_BYTES;
  }

  protected readSectors(buf: Buffer, sector: number): Promise<void> {
    return this.snapshot.read(buf, sector);
  }

  protected writeSectors(buf: Buffer, sector: number, opts?: WriteOptions): Promise<void> {
    return this.snapshot.write(buf, sector, opts);
  }

  async flush(): Promise<void> {
    const flushes = [this.snapshot.flush()];
    if (this.snapshot.origin.device.writable) flushes.push(this.snapshot.origin.flush());
    await Promise.all(flushes);
  }

  /** Chunks with an exception are data; the others are what the origin's map says. */
  dataMap(): DataMap | undefined {
    return snapshotDataMap(this.snapshot, dataMapOf(this.snapshot.origin.device));
  }

  /**
   * The byte ranges of [byteOffset, +bytes) in chunks the snapshot holds
   * (chunks with an exception), clipped to the range, neighbours joined.
   */
  heldExtents(byteOffset: number, bytes: number): ByteExtent[] {
    return heldChunkExtents(this.snapshot, byteOffset, bytes);
  }

  statusLine(): string {
    return this.snapshot.statusLine();
  }

  tableLine(): string {
    return this.snapshot.tableLine();
  }

  /** Detaches the snapshot from its origin: origin writes stop copying into it. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.snapshot.close();
  }
}
