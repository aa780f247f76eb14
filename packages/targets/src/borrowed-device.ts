import { BlockDevice, NativeEndpoint } from '@dmtool/devices';

/**
 * A handle on a device opened once and shared by several targets: every
 * operation goes to the shared device, close() only ends this handle. The
 * owner closes the shared device once every target is done.
 */
export class BorrowedDevice implements BlockDevice {
  private open = true;

  constructor(readonly base: BlockDevice) {}

  get path(): string {
    return this.base.path;
  }
  get sizeBytes(): number {
    return this.base.sizeBytes;
  }
  get sizeSectors(): number {
    return this.base.sizeSectors;
  }
  get logicalBlockSize(): number {
    return this.base.logicalBlockSize;
  }
  get physicalBlockSize(): number {
    return this.base.physicalBlockSize;
  }
  get identity(): string {
    return this.base.identity;
  }
  get writable(): boolean {
    return this.base.writable;
  }
  get ioAlignmentBytes(): number {
    return this.base.ioAlignmentBytes;
  }
  get isOpen(): boolean {
    return this.open && this.base.isOpen;
  }

  read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    return this.base.read(buf, bufOffset, bytes, byteOffset);
  }
  write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    return this.base.write(buf, bufOffset, bytes, byteOffset);
  }
  flush(): Promise<void> {
    return this.base.flush();
  }
  zeroRange(byteOffset: number, bytes: number): Promise<void> {
    return this.base.zeroRange(byteOffset, bytes);
  }
  discard(byteOffset: number, bytes: number): Promise<void> {
    return this.base.discard(byteOffset, bytes);
  }
  nativeEndpoint(): NativeEndpoint | undefined {
    return this.base.nativeEndpoint?.();
  }
  close(): void {
    this.open = false;
  }
}
