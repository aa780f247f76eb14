import { BlockDevice, checkIo, checkRange, NativeEndpoint, NativeIoHook, SparseFile, WriteOptions } from './block-device';
import { DeviceDecorator } from './device-decorator';
import { DeviceError } from './errors';
import { FaultInjector, FaultOp } from './fault-plan';

/**
 * A decorator that injects a fault plan's failures into a real device:
 * errno per operation and byte range, short writes, a SIGKILL after n
 * completed writes. It keeps the inner device's native-copy capability,
 * adding its checks as hooks, so a copy through a faulty device runs the
 * same native code as one through the bare device.
 */
export class FaultyDevice extends DeviceDecorator {
  constructor(
    inner: BlockDevice,
    private readonly faults: FaultInjector,
  ) {
    super(inner);
  }

  override async read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    checkIo(this, 'read', buf, bufOffset, bytes, byteOffset);
    this.throwIfInjected('read', byteOffset, bytes);
    await this.inner.read(buf, bufOffset, bytes, byteOffset);
  }

  override async write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, opts?: WriteOptions): Promise<void> {
    checkIo(this, 'write', buf, bufOffset, bytes, byteOffset);
    const failed = await this.injectWrite(buf, bufOffset, bytes, byteOffset);
    if (failed) throw failed;
    await this.inner.write(buf, bufOffset, bytes, byteOffset, opts);
    this.faults.writeCompleted();
  }

  override async flush(): Promise<void> {
    checkRange(this, 'read', 0, 1);
    this.throwIfInjected('flush', 0, 0);
    await this.inner.flush();
  }

  override async zeroRange(byteOffset: number, bytes: number, opts?: WriteOptions): Promise<void> {
    checkRange(this, 'zero', byteOffset, bytes);
    this.throwIfInjected('zero', byteOffset, bytes);
    await this.inner.zeroRange(byteOffset, bytes, opts);
  }

  /** The inner file's holes; punching one is a `zero` operation for the fault rules (it makes the range read as zeros). */
  override sparseFile(): SparseFile | undefined {
    const inner = this.inner.sparseFile?.();
    if (!inner) return undefined;
    return {
      dataExtents: (byteOffset, bytes) => inner.dataExtents(byteOffset, bytes),
      punchHole: async (byteOffset, bytes) => {
        checkRange(this, 'discard', byteOffset, bytes);
        this.throwIfInjected('zero', byteOffset, bytes);
        await inner.punchHole(byteOffset, bytes);
      },
    };
  }

  override nativeEndpoint(): NativeEndpoint | undefined {
    const inner = this.inner.nativeEndpoint?.();
    if (!inner) return undefined;
    const hook: NativeIoHook = {
      before: (op, byteOffset, bytes) => {
        const f = this.faults.check(op, this.path, byteOffset, bytes);
        if (!f) return undefined;
        const error = new DeviceError(f.errno, op, this.path, byteOffset, bytes, 'injected fault');
        return { error, partialBytes: op === 'write' ? f.shortBytes : 0 };
      },
      afterWrite: () => this.faults.writeCompleted(),
    };
    return { fd: inner.fd, baseByteOffset: inner.baseByteOffset, hooks: [hook, ...inner.hooks] };
  }

  private injected(op: FaultOp, byteOffset: number, bytes: number): DeviceError | undefined {
    const f = this.faults.check(op, this.path, byteOffset, bytes);
    return f && new DeviceError(f.errno, op, this.path, byteOffset, bytes, 'injected fault');
  }

  private throwIfInjected(op: FaultOp, byteOffset: number, bytes: number): void {
    const e = this.injected(op, byteOffset, bytes);
    if (e) throw e;
  }

  /** A write fault, after writing its `shortBytes` for real (a short write). */
  private async injectWrite(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<DeviceError | undefined> {
    const f = this.faults.check('write', this.path, byteOffset, bytes);
    if (!f) return undefined;
    if (f.shortBytes > 0) await this.inner.write(buf, bufOffset, f.shortBytes, byteOffset);
    return new DeviceError(f.errno, 'write', this.path, byteOffset, bytes, 'injected fault');
  }
}
