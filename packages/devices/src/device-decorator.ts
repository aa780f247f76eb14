import { BlockDevice, DataMap, NativeEndpoint, SparseFile, WriteOptions } from './block-device';

/**
 * A device that wraps another and, until a subclass says otherwise, is it:
 * every property and operation goes to `inner`. Decorators (fault
 * injection, a volatile cache, a shared handle) override only what they
 * change.
 */
export abstract class DeviceDecorator implements BlockDevice {
  constructor(readonly inner: BlockDevice) {}

  get path(): string {
    return this.inner.path;
  }
  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  get sizeSectors(): number {
    return this.inner.sizeSectors;
  }
  get logicalBlockSize(): number {
    return this.inner.logicalBlockSize;
  }
  get physicalBlockSize(): number {
    return this.inner.physicalBlockSize;
  }
  get identity(): string {
    return this.inner.identity;
  }
  get writable(): boolean {
    return this.inner.writable;
  }
  get isOpen(): boolean {
    return this.inner.isOpen;
  }
  get ioAlignmentBytes(): number {
    return this.inner.ioAlignmentBytes;
  }

  read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    return this.inner.read(buf, bufOffset, bytes, byteOffset);
  }
  write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, opts?: WriteOptions): Promise<void> {
    return this.inner.write(buf, bufOffset, bytes, byteOffset, opts);
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
  zeroRange(byteOffset: number, bytes: number, opts?: WriteOptions): Promise<void> {
    return this.inner.zeroRange(byteOffset, bytes, opts);
  }
  discard(byteOffset: number, bytes: number): Promise<void> {
    return this.inner.discard(byteOffset, bytes);
  }
  close(): void {
    this.inner.close();
  }
  nativeEndpoint(): NativeEndpoint | undefined {
    return this.inner.nativeEndpoint?.();
  }
  sparseFile(): SparseFile | undefined {
    return this.inner.sparseFile?.();
  }
  dataMap(): DataMap | undefined {
    return this.inner.dataMap?.();
  }
}
