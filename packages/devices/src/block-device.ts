import { DeviceError, DeviceOp, errnoOf } from './errors';

export const SECTOR_BYTES = 512;

/**
 * A block device: everything above this layer (kcopyd, the snapshot and
 * mirror stores, the CLI) holds these, never paths or file descriptors.
 * Offsets and lengths are bytes; a device opened for O_DIRECT I/O needs them
 * aligned to `ioAlignmentBytes`. Every method validates its range with
 * `checkIo`/`checkRange` and fails with a DeviceError naming the device.
 */
export interface BlockDevice {
  /** Where the device came from (file path, device node, URI): used in messages and fault rules. */
  readonly path: string;
  readonly sizeBytes: number;
  readonly sizeSectors: number;
  readonly logicalBlockSize: number;
  readonly physicalBlockSize: number;
  /** Equal for two opens of the same underlying storage: refuses "the same device twice". */
  readonly identity: string;
  readonly writable: boolean;
  readonly isOpen: boolean;
  /** Alignment every offset and length must have (1 when any byte range will do). */
  readonly ioAlignmentBytes: number;

  read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void>;
  /** With `{ fua: true }` the written bytes are durable when this resolves (see WriteOptions). */
  write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, opts?: WriteOptions): Promise<void>;
  /** Everything written before is durable when this resolves. */
  flush(): Promise<void>;
  /** With `{ fua: true }` the zeroed range is durable when this resolves. */
  zeroRange(byteOffset: number, bytes: number, opts?: WriteOptions): Promise<void>;
  /** Content of the range is unspecified afterwards. */
  discard(byteOffset: number, bytes: number): Promise<void>;
  close(): void;

  /**
   * Capability: the native binding can move this device's data by file
   * descriptor (kcopyd's one-call read-once/write-to-N copy). Undefined for
   * devices it cannot reach; decorators pass it through with their hooks.
   */
  nativeEndpoint?(): NativeEndpoint | undefined;

  /**
   * Capability: the device is a regular file (or an NBD export) that can
   * say where it holds data and can give blocks back (holes). Undefined
   * for block devices and anything else that cannot.
   */
  sparseFile?(): SparseFile | undefined;

  /**
   * Capability: where a device built on other devices (a range of a file,
   * a snapshot, a mirror) holds data, from what its devices underneath
   * say. Undefined when it cannot tell. A regular file answers through
   * `sparseFile()` instead; `dataMapOf` asks both.
   */
  dataMap?(): DataMap | undefined;
}

/**
 * How a write (or a zeroing) is done. `fua` (Force Unit Access, the
 * kernel's REQ_FUA, NBD_CMD_FLAG_FUA): the range written is durable when
 * the promise resolves. It says nothing about other writes, which a
 * flush() makes durable; a device without a cheaper way writes, then
 * flushes. Every device and decorator passes the options on to the
 * devices that hold the range.
 */
export interface WriteOptions {
  fua?: boolean;
}

/** A byte range: `bytes` bytes from `byteOffset`. */
export interface ByteExtent {
  byteOffset: number;
  bytes: number;
}

/** Where a device holds data; the rest reads as zeros. */
export interface DataMap {
  /**
   * The parts of [byteOffset, byteOffset + bytes) that hold data, in
   * order, clipped to the range; the rest reads as zeros. A device that
   * cannot tell for some part reports it as data.
   */
  dataExtents(byteOffset: number, bytes: number): Promise<ByteExtent[]>;
}

/** What a regular file offers beyond a block device: its holes (SEEK_DATA/SEEK_HOLE for `dataExtents`). */
export interface SparseFile extends DataMap {
  /** Give the range's blocks back (a hole): it reads as zeros afterwards; the size stays. */
  punchHole(byteOffset: number, bytes: number): Promise<void>;
}

/** A device as the native copy sees it: a descriptor, and the decorators' hooks around it. */
export interface NativeEndpoint {
  readonly fd: number;
  /** Where the device's byte 0 lies on the descriptor (a linear range of a file); 0 when absent. */
  readonly baseByteOffset?: number;
  /** Outermost decorator first. */
  readonly hooks: readonly NativeIoHook[];
}

/**
 * What a decorator does around native I/O it does not perform itself:
 * `before` may fail the operation; `afterWrite` runs once a write completed.
 */
export interface NativeIoHook {
  before(op: 'read' | 'write', byteOffset: number, bytes: number): NativeIoFailure | undefined;
  afterWrite(): void;
}

/** An operation a decorator fails: `partialBytes` of a write still reach the device first (a short write). */
export interface NativeIoFailure {
  error: DeviceError;
  partialBytes: number;
}

/** The validation every device applies to a byte range before any I/O. */
export function checkRange(device: BlockDevice, op: DeviceOp, byteOffset: number, bytes: number): void {
  if (!device.isOpen) throw new DeviceError(errnoOf('EBADF'), op, device.path, 0, 0, 'device is closed');
  if (!Number.isSafeInteger(byteOffset) || byteOffset < 0 || !Number.isSafeInteger(bytes) || bytes <= 0) {
    throw new RangeError(`invalid byte range [${byteOffset}, +${bytes}) for ${op} on ${device.path}`);
  }
  if (op !== 'read' && !device.writable) {
    throw new DeviceError(errnoOf('EBADF'), op, device.path, byteOffset, bytes, 'device was opened read-only');
  }
  if (byteOffset + bytes > device.sizeBytes) {
    throw new DeviceError(
      errnoOf('ENOSPC'),
      op,
      device.path,
      byteOffset,
      bytes,
      `range ends beyond the device end (${device.sizeBytes} bytes)`,
    );
  }
  const align = device.ioAlignmentBytes;
  if (align > 1 && (byteOffset % align !== 0 || bytes % align !== 0)) {
    throw new DeviceError(
      errnoOf('EINVAL'),
      op,
      device.path,
      byteOffset,
      bytes,
      `O_DIRECT needs ${align}-byte aligned offsets and lengths`,
    );
  }
}

/** checkRange plus the buffer: the range must lie inside it. */
export function checkIo(device: BlockDevice, op: DeviceOp, buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): void {
  checkRange(device, op, byteOffset, bytes);
  if (!Buffer.isBuffer(buf)) throw new TypeError('buffer must be a Buffer');
  if (!Number.isSafeInteger(bufOffset) || bufOffset < 0 || bufOffset + bytes > buf.length) {
    throw new RangeError(`buffer range [${bufOffset}, +${bytes}) is outside a ${buf.length}-byte buffer`);
  }
  if (device.ioAlignmentBytes > 1 && (buf.byteOffset + bufOffset) % SECTOR_BYTES !== 0) {
    throw new DeviceError(errnoOf('EINVAL'), op, device.path, byteOffset, bytes, 'O_DIRECT needs an aligned buffer');
  }
}

/**
 * Turns the names a user gives (paths today; URIs and volumes later) into
 * devices. Front ends hold one and hand it to the engines that open devices
 * named inside tables; the engines never open anything themselves.
 */
export interface DeviceResolver {
  /**
   * The identity `open` would give, without opening: lets a caller refuse
   * the same device twice before claiming any. `role` names it in errors.
   */
  identify(name: string, role?: string): string;
  /** Local devices open at once; network devices resolve once connected. Callers always await. */
  open(name: string, opts: { write: boolean; direct?: boolean }): BlockDevice | Promise<BlockDevice>;
}

/** The device's data map: its own (`dataMap`), else a regular file's holes, else undefined (everything is data). */
export function dataMapOf(device: BlockDevice): DataMap | undefined {
  return device.dataMap?.() ?? device.sparseFile?.();
}
