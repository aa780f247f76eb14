import { BlockDevice, DeviceDecorator } from '@dmtool/devices';

/**
 * A handle on a device opened once and shared by several targets: every
 * operation goes to the shared device, close() only ends this handle. The
 * owner closes the shared device once every target is done.
 */
export class BorrowedDevice extends DeviceDecorator {
  private open = true;

  constructor(base: BlockDevice) {
    super(base);
  }

  override get isOpen(): boolean {
    return this.open && this.inner.isOpen;
  }

  override close(): void {
    this.open = false;
  }
}
