import { BlockDevice, checkIo, checkRange, NativeEndpoint, SECTOR_BYTES, WriteOptions } from '@dmtool/devices';

/** A piece of a request: `bytes` at `byteOffset` of `device`, at `requestOffset` into the request. */
export interface MappedPiece {
  device: BlockDevice;
  byteOffset: number;
  bytes: number;
  requestOffset: number;
}

/**
 * A device whose every byte lives on one of several other devices: the base
 * of the concatenation and striping targets. Subclasses say where a byte
 * range goes; this class checks requests and fans them out.
 */
export abstract class MappedDevice implements BlockDevice {
  readonly writable: boolean;
  private open = true;

  protected constructor(
    readonly path: string,
    readonly identity: string,
    readonly sizeBytes: number,
    readonly parts: readonly BlockDevice[],
    readOnly: boolean,
    private readonly onClose?: () => void,
  ) {
    if (parts.length === 0) throw new RangeError(`${path}: needs at least one device`);
    this.writable = !readOnly && parts.every((p) => p.writable);
  }

  /** The pieces of the range [byteOffset, +bytes), in request order. */
  protected abstract map(byteOffset: number, bytes: number): MappedPiece[];

  get sizeSectors(): number {
    return this.sizeBytes / SECTOR_BYTES;
  }

  get logicalBlockSize(): number {
    return Math.max(...this.parts.map((p) => p.logicalBlockSize));
  }

  get physicalBlockSize(): number {
    return Math.max(...this.parts.map((p) => p.physicalBlockSize));
  }

  get ioAlignmentBytes(): number {
    return Math.max(...this.parts.map((p) => p.ioAlignmentBytes));
  }

  get isOpen(): boolean {
    return this.open && this.parts.every((p) => p.isOpen);
  }

  async read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    checkIo(this, 'read', buf, bufOffset, bytes, byteOffset);
    await Promise.all(this.map(byteOffset, bytes).map((p) => p.device.read(buf, bufOffset + p.requestOffset, p.bytes, p.byteOffset)));
  }

  async write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, opts?: WriteOptions): Promise<void> {
    checkIo(this, 'write', buf, bufOffset, bytes, byteOffset);
    await Promise.all(
      this.map(byteOffset, bytes).map((p) => p.device.write(buf, bufOffset + p.requestOffset, p.bytes, p.byteOffset, opts)),
    );
  }

  async flush(): Promise<void> {
    await Promise.all([...new Set(this.parts)].map((p) => p.flush()));
  }

  async zeroRange(byteOffset: number, bytes: number, opts?: WriteOptions): Promise<void> {
    checkRange(this, 'zero', byteOffset, bytes);
    await Promise.all(this.map(byteOffset, bytes).map((p) => p.device.zeroRange(p.byteOffset, p.bytes, opts)));
  }

  async discard(byteOffset: number, bytes: number): Promise<void> {
    checkRange(this, 'discard', byteOffset, bytes);
    await Promise.all(this.map(byteOffset, bytes).map((p) => p.device.discard(p.byteOffset, p.bytes)));
  }

  /** Closes this device; the parts stay open unless an `onClose` was given, which runs once. */
  close(): void {
    if (!this.open) return;
    this.open = false;
    this.onClose?.();
  }
}

export interface MappedDeviceOptions {
  /** Shown in messages. */
  name?: string;
  readOnly?: boolean;
  /** Runs once when the device is closed, e.g. to close the devices it was built on. */
  onClose?: () => void;
}

function checkWholeSectors(what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n <= 0 || n % SECTOR_BYTES !== 0)
    throw new RangeError(`${what} ${n} is not a whole, positive number of sectors`);
}

/** Devices one after another, as a table of several lines makes them (each line a part). */
export class ConcatDevice extends MappedDevice {
  private readonly startsBytes: number[];

  constructor(parts: readonly BlockDevice[], opts: MappedDeviceOptions = {}) {
    const starts: number[] = [];
    let total = 0;
    for (const p of parts) {
      checkWholeSectors(`part ${p.path} size`, p.sizeBytes);
      starts.push(total);
      total += p.sizeBytes;
    }
    super(
      opts.name ?? `concat:${parts.map((p) => p.path).join('+')}`,
      `concat:${parts.map((p) => p.identity).join('+')}`,
      total,
      parts,
      opts.readOnly === true,
      opts.onClose,
    );
    this.startsBytes = starts;
  }

  /** One part covers the whole device at its own offsets: its native endpoint is this device's. */
  nativeEndpoint(): NativeEndpoint | undefined {
    return this.parts.length === 1 ? this.parts[0].nativeEndpoint?.() : undefined;
  }

  protected map(byteOffset: number, bytes: number): MappedPiece[] {
    const pieces: MappedPiece[] = [];
    let i = 0;
    while (i + 1 < this.startsBytes.length && this.startsBytes[i + 1] <= byteOffset) i++;
    let at = byteOffset;
    while (at < byteOffset + bytes) {
      const part = this.parts[i];
      const inPart = at - this.startsBytes[i];
      const n = Math.min(part.sizeBytes - inPart, byteOffset + bytes - at);
      pieces.push({ device: part, byteOffset: inPart, bytes: n, requestOffset: at - byteOffset });
      at += n;
      i++;
    }
    return pieces;
  }
}

/**
 * dm-striped: chunk k of `stripeBytes` goes to stripe k mod N, at chunk
 * floor(k / N) of that stripe. Every stripe is the same size.
 */
export class StripedDevice extends MappedDevice {
  constructor(
    stripes: readonly BlockDevice[],
    readonly stripeBytes: number,
    opts: MappedDeviceOptions = {},
  ) {
    checkWholeSectors('stripe size', stripeBytes);
    const each = stripes[0]?.sizeBytes ?? 0;
    for (const s of stripes) {
      if (s.sizeBytes !== each)
        throw new RangeError(`stripes differ in size: ${s.path} has ${s.sizeBytes} bytes, ${stripes[0].path} ${each}`);
      if (s.sizeBytes % stripeBytes !== 0)
        throw new RangeError(`stripe ${s.path} (${s.sizeBytes} bytes) is not a whole number of ${stripeBytes}-byte chunks`);
    }
    super(
      opts.name ?? `striped:${stripes.map((p) => p.path).join(',')}`,
      `striped:${stripeBytes}:${stripes.map((p) => p.identity).join(',')}`,
      each * stripes.length,
      stripes,
      opts.readOnly === true,
      opts.onClose,
    );
  }

  protected map(byteOffset: number, bytes: number): MappedPiece[] {
    const pieces: MappedPiece[] = [];
    const n = this.parts.length;
    let at = byteOffset;
    while (at < byteOffset + bytes) {
      const chunk = Math.floor(at / this.stripeBytes);
      const inChunk = at - chunk * this.stripeBytes;
      const len = Math.min(this.stripeBytes - inChunk, byteOffset + bytes - at);
      const stripeByte = Math.floor(chunk / n) * this.stripeBytes + inChunk;
      pieces.push({ device: this.parts[chunk % n], byteOffset: stripeByte, bytes: len, requestOffset: at - byteOffset });
      at += len;
    }
    return pieces;
  }
}
