import { BlockDevice, checkIo, checkRange, SECTOR_BYTES, WriteOptions } from './block-device';

const PAGE_BYTES = 64 * 1024;
let nextMemoryId = 1;

export interface MemoryDeviceOptions {
  /** Shown in messages and matched by fault rules (default `memory:<n>`). */
  name?: string;
  logicalBlockSize?: number;
  physicalBlockSize?: number;
  /** Refuse writes, as a read-only open does. */
  readOnly?: boolean;
}

/**
 * A sparse device in memory: pages are allocated on first write, unwritten
 * ranges read as zeros. For unit tests, the demo, and scratch targets. A
 * flush is a no-op, and so is FUA: what was written is as durable as this
 * device gets.
 */
export class MemoryDevice implements BlockDevice {
  readonly path: string;
  readonly sizeBytes: number;
  readonly logicalBlockSize: number;
  readonly physicalBlockSize: number;
  readonly identity: string;
  readonly writable: boolean;
  readonly ioAlignmentBytes = 1;
  private open = true;
  private readonly pages = new Map<number, Buffer>();

  constructor(sizeBytes: number, opts: MemoryDeviceOptions = {}) {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw new RangeError(`invalid device size ${sizeBytes}`);
    const id = nextMemoryId++;
    this.path = opts.name ?? `memory:${id}`;
    this.identity = `memory:${id}`;
    this.sizeBytes = sizeBytes;
    this.logicalBlockSize = opts.logicalBlockSize ?? SECTOR_BYTES;
    this.physicalBlockSize = opts.physicalBlockSize ?? 4096;
    this.writable = opts.readOnly !== true;
  }

  get sizeSectors(): number {
    return Math.floor(this.sizeBytes / SECTOR_BYTES);
  }

  get isOpen(): boolean {
    return this.open;
  }

  /** Bytes of memory the written pages hold. */
  get allocatedBytes(): number {
    return this.pages.size * PAGE_BYTES;
  }

  async read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    checkIo(this, 'read', buf, bufOffset, bytes, byteOffset);
    this.eachPage(byteOffset, bytes, (page, pageOffset, n, done) => {
      if (page) page.copy(buf, bufOffset + done, pageOffset, pageOffset + n);
      else buf.fill(0, bufOffset + done, bufOffset + done + n);
    });
  }

  async write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, _opts?: WriteOptions): Promise<void> {
    checkIo(this, 'write', buf, bufOffset, bytes, byteOffset);
    this.eachPage(byteOffset, bytes, (_page, pageOffset, n, done, index) => {
      buf.copy(this.pageFor(index), pageOffset, bufOffset + done, bufOffset + done + n);
    });
  }

  async flush(): Promise<void> {
    checkRange(this, 'read', 0, 1);
  }

  async zeroRange(byteOffset: number, bytes: number, _opts?: WriteOptions): Promise<void> {
    checkRange(this, 'zero', byteOffset, bytes);
    this.clear(byteOffset, bytes);
  }

  async discard(byteOffset: number, bytes: number): Promise<void> {
    checkRange(this, 'discard', byteOffset, bytes);
    this.clear(byteOffset, bytes);
  }

  close(): void {
    this.open = false;
  }

  private clear(byteOffset: number, bytes: number): void {
    this.eachPage(byteOffset, bytes, (page, pageOffset, n, _done, index) => {
      if (!page) return;
      if (n === PAGE_BYTES) this.pages.delete(index);
      else page.fill(0, pageOffset, pageOffset + n);
    });
  }

  private pageFor(index: number): Buffer {
    let page = this.pages.get(index);
    if (!page) this.pages.set(index, (page = Buffer.alloc(PAGE_BYTES)));
    return page;
  }

  private eachPage(
    byteOffset: number,
    bytes: number,
    visit: (page: Buffer | undefined, pageOffset: number, n: number, done: number, index: number) => void,
  ): void {
    for (let done = 0; done < bytes;) {
      const at = byteOffset + done;
      const index = Math.floor(at / PAGE_BYTES);
      const pageOffset = at - index * PAGE_BYTES;
      const n = Math.min(PAGE_BYTES - pageOffset, bytes - done);
      visit(this.pages.get(index), pageOffset, n, done, index);
      done += n;
    }
  }
}
