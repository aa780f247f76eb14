import {
  BlockDevice,
  checkIo,
  checkRange,
  DataMap,
  dataMapOf,
  NativeEndpoint,
  NativeIoHook,
  SECTOR_BYTES,
  WriteOptions,
} from '@dmtool/devices';
import { shiftedDataMap } from './data-maps';

export interface LinearDeviceOptions {
  /** Shown in messages (default `linear:<base path>+<start sector>`). */
  name?: string;
  /** Refuse writes even when the base device takes them. */
  readOnly?: boolean;
}

/**
 * dm-linear: a device made of a range of another device. Closing it leaves
 * the base device open (several linear devices may share one base).
 */
export class LinearDevice implements BlockDevice {
  readonly path: string;
  readonly identity: string;
  readonly writable: boolean;
  private open = true;

  constructor(
    readonly base: BlockDevice,
    readonly startBytes: number,
    readonly sizeBytes: number,
    opts: LinearDeviceOptions = {},
  ) {
    for (const [what, n] of [
      ['start', startBytes],
      ['size', sizeBytes],
    ] as const) {
      if (!Number.isSafeInteger(n) || n < 0 || n % SECTOR_BYTES !== 0)
        throw new RangeError(`linear ${what} ${n} is not a whole number of sectors`);
    }
    if (startBytes + sizeBytes > base.sizeBytes) {
      throw new RangeError(
        `linear range: sectors ${startBytes / SECTOR_BYTES}+${sizeBytes / SECTOR_BYTES} end beyond ${base.path} (${base.sizeSectors} sectors)`,
      );
    }
    this.path = opts.name ?? `linear:${base.path}+${startBytes / SECTOR_BYTES}`;
    this.identity = `linear:${base.identity}:${startBytes}:${sizeBytes}`;
    this.writable = base.writable && opts.readOnly !== true;
  }

  get sizeSectors(): number {
    return this.sizeBytes / SECTOR_BYTES;
  }

  get logicalBlockSize(): number {
    return this.base.logicalBlockSize;
  }

  get physicalBlockSize(): number {
    return this.base.physicalBlockSize;
  }

  get ioAlignmentBytes(): number {
    return this.base.ioAlignmentBytes;
  }

  get isOpen(): boolean {
    return this.open && this.base.isOpen;
  }

  async read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    checkIo(this, 'read', buf, bufOffset, bytes, byteOffset);
    await this.base.read(buf, bufOffset, bytes, this.startBytes + byteOffset);
  }

  async write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, opts?: WriteOptions): Promise<void> {
    checkIo(this, 'write', buf, bufOffset, bytes, byteOffset);
    await this.base.write(buf, bufOffset, bytes, this.startBytes + byteOffset, opts);
  }

  async flush(): Promise<void> {
    await this.base.flush();
  }

  async zeroRange(byteOffset: number, bytes: number, opts?: WriteOptions): Promise<void> {
    checkRange(this, 'zero', byteOffset, bytes);
    await this.base.zeroRange(this.startBytes + byteOffset, bytes, opts);
  }

  async discard(byteOffset: number, bytes: number): Promise<void> {
    checkRange(this, 'discard', byteOffset, bytes);
    await this.base.discard(this.startBytes + byteOffset, bytes);
  }

  /**
   * The base's descriptor from `startBytes` on, so kcopyd's native copies
   * reach the range directly; the base's hooks see the base's offsets.
   */
  nativeEndpoint(): NativeEndpoint | undefined {
    const inner = this.base.nativeEndpoint?.();
    if (!inner) return undefined;
    const start = this.startBytes;
    const hooks: NativeIoHook[] = inner.hooks.map((h) => ({
      before: (op, byteOffset, bytes) => h.before(op, start + byteOffset, bytes),
      afterWrite: () => h.afterWrite(),
    }));
    return { fd: inner.fd, baseByteOffset: (inner.baseByteOffset ?? 0) + start, hooks };
  }

  /** The base's data map from `startBytes` on (a file's holes, for a range of a sparse image). */
  dataMap(): DataMap | undefined {
    const map = dataMapOf(this.base);
    return map && shiftedDataMap(map, this.startBytes);
  }

  close(): void {
    this.open = false;
  }
}
