import { BlockDevice, checkIo, checkRange, DeviceError, DeviceOp, errnoOf, SECTOR_BYTES, WriteOptions } from '@dmtool/devices';

/** Bytes of zeros written at once by zeroRange through a target. */
const ZERO_PIECE_BYTES = 1 << 20;

/**
 * The part every target device over a dm engine shares: whole sectors only
 * (the engines take whole sectors; any buffer memory will do), zeroing as ordinary writes of
 * zeros (so copy-on-write and mirroring apply to it), and no discard (the
 * kernel's snapshot and mirror targets do not pass discards on either).
 */
export abstract class SectorDevice implements BlockDevice {
  abstract readonly path: string;
  abstract readonly identity: string;
  abstract readonly sizeBytes: number;
  abstract readonly writable: boolean;
  protected closed = false;

  get sizeSectors(): number {
    return this.sizeBytes / SECTOR_BYTES;
  }
  get logicalBlockSize(): number {
    return SECTOR_BYTES;
  }
  get physicalBlockSize(): number {
    return SECTOR_BYTES;
  }
  /** Any buffer will do (nothing here uses O_DIRECT); offsets and lengths are checked for whole sectors. */
  get ioAlignmentBytes(): number {
    return 1;
  }
  get isOpen(): boolean {
    return !this.closed;
  }

  /** Read whole sectors: `buf` holds exactly the request. */
  protected abstract readSectors(buf: Buffer, sector: number): Promise<void>;
  /** Write whole sectors: `buf` holds exactly the request; with `fua` they are durable when this resolves. */
  protected abstract writeSectors(buf: Buffer, sector: number, opts?: WriteOptions): Promise<void>;
  abstract flush(): Promise<void>;
  abstract close(): void;

  async read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    checkIo(this, 'read', buf, bufOffset, bytes, byteOffset);
    this.checkSectors('read', byteOffset, bytes);
    await this.readSectors(buf.subarray(bufOffset, bufOffset + bytes), byteOffset / SECTOR_BYTES);
  }

  async write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, opts?: WriteOptions): Promise<void> {
    checkIo(this, 'write', buf, bufOffset, bytes, byteOffset);
    this.checkSectors('write', byteOffset, bytes);
    await this.writeSectors(buf.subarray(bufOffset, bufOffset + bytes), byteOffset / SECTOR_BYTES, opts);
  }

  async zeroRange(byteOffset: number, bytes: number, opts?: WriteOptions): Promise<void> {
    checkRange(this, 'zero', byteOffset, bytes);
    this.checkSectors('zero', byteOffset, bytes);
    const zeros = Buffer.alloc(Math.min(bytes, ZERO_PIECE_BYTES));
    for (let done = 0; done < bytes; done += zeros.length) {
      const n = Math.min(zeros.length, bytes - done);
      await this.writeSectors(zeros.subarray(0, n), (byteOffset + done) / SECTOR_BYTES, opts);
    }
  }

  private checkSectors(op: DeviceOp, byteOffset: number, bytes: number): void {
    if (byteOffset % SECTOR_BYTES !== 0 || bytes % SECTOR_BYTES !== 0) {
      throw new DeviceError(errnoOf('EINVAL'), op, this.path, byteOffset, bytes, 'offset and length must be whole 512-byte sectors');
    }
  }

  async discard(byteOffset: number, bytes: number): Promise<void> {
    checkRange(this, 'discard', byteOffset, bytes);
    throw new DeviceError(errnoOf('EOPNOTSUPP'), 'discard', this.path, byteOffset, bytes, 'this target does not support discard');
  }
}
