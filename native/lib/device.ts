import * as fs from 'fs';
import { constants as osConstants } from 'os';
import {
  BlockDevice,
  checkIo,
  checkRange,
  DeviceError,
  DeviceOp,
  ByteExtent,
  DeviceResolver,
  errnoHint,
  errnoName,
  errnoOf,
  NativeEndpoint,
  SECTOR_BYTES,
  SparseFile,
  WriteOptions,
} from '@dmtool/devices';
import { binding } from './binding';
import { loopBackingFile, statIds, storageIdentity } from './identity';
import { lockHolder } from './lock-holder';

export interface OpenOptions {
  /** Open read-write (default: read-only). */
  write?: boolean;
  /** O_DIRECT: bypass the page cache; offsets, lengths and buffers must be block aligned. */
  direct?: boolean;
  /** O_EXCL on block devices, so a mounted or busy device is refused (default: true). */
  exclusive?: boolean;
  /**
   * flock held until close, on the file or device and on a loop device's
   * backing file; a conflicting holder makes open fail with EWOULDBLOCK.
   * Default: 'exclusive' when writing, 'shared' when reading.
   */
  lock?: LockMode;
  /**
   * Create the file: a new regular file of sizeBytes bytes (O_CREAT |
   * O_EXCL, so an existing path fails with EEXIST). Needs `write`.
   */
  create?: { sizeBytes: number };
}

export type LockMode = 'exclusive' | 'shared' | 'none';

const LOCK_MODE_NATIVE: Record<LockMode, number> = { none: 0, shared: 1, exclusive: 2 };
const DIRECT_BUFFER_ALIGN = 4096;
const ZERO_FALLBACK_BYTES = 1 << 20;

/**
 * The file backend of BlockDevice: an open regular file or block device.
 * The only holder of a file descriptor; it offers the native-copy
 * capability, so kcopyd moves its data in one native call.
 */
export class FileDevice implements BlockDevice {
  readonly path: string;
  readonly sizeBytes: number;
  readonly logicalBlockSize: number;
  readonly physicalBlockSize: number;
  readonly isBlockDevice: boolean;
  readonly writable: boolean;
  readonly direct: boolean;
  /** This open created the file. */
  readonly created: boolean;
  /** Same value for two opens of the same file or block device. */
  readonly identity: string;
  private fd: number;
  /** Descriptors that only hold the lock on a loop device's backing file. */
  private lockFds: number[];

  private constructor(path: string, fd: number, lockFds: number[], info: ReturnType<typeof binding.open>, opts: OpenOptions) {
    this.path = path;
    this.fd = fd;
    this.lockFds = lockFds;
    this.sizeBytes = info.sizeBytes;
    this.logicalBlockSize = info.logicalBlockSize;
    this.physicalBlockSize = info.physicalBlockSize;
    this.isBlockDevice = info.isBlockDevice;
    this.writable = opts.write === true;
    this.direct = opts.direct === true;
    this.created = opts.create !== undefined;
    this.identity = storageIdentity({
      isBlockDevice: info.isBlockDevice,
      dev: BigInt(info.dev),
      ino: BigInt(info.ino),
      rdev: BigInt(info.rdev),
    });
  }

  static open(path: string, opts: OpenOptions = {}): FileDevice {
    if (typeof path !== 'string' || path.length === 0) throw new TypeError('device path must be a non-empty string');
    const lock = LOCK_MODE_NATIVE[opts.lock ?? (opts.write ? 'exclusive' : 'shared')];
    const create = opts.create;
    if (create && (!opts.write || !Number.isSafeInteger(create.sizeBytes) || create.sizeBytes < 0))
      throw new RangeError(`create needs write and a size in bytes (got ${JSON.stringify(create)})`);
    const info = binding.open(
      path,
      opts.write === true,
      opts.direct === true,
      opts.exclusive !== false,
      lock,
      create !== undefined,
      create?.sizeBytes ?? 0,
    );
    if (info.errno !== 0) {
      const hint = isLockConflict(info.errno) ? `locked by ${lockHolder(path)}` : openHint(info.errno, opts);
      throw new DeviceError(info.errno, 'open', path, 0, 0, hint);
    }
    const lockFds: number[] = [];
    const backing = info.isBlockDevice && lock !== 0 ? loopBackingFile(BigInt(info.rdev)) : undefined;
    if (backing !== undefined) {
      // Commands given the file and commands given its loop device must exclude each other.
      const held = binding.lock(backing, lock);
      if (held.errno === 0) lockFds.push(held.fd);
      else if (isLockConflict(held.errno)) {
        binding.close(info.fd);
        throw new DeviceError(held.errno, 'open', path, 0, 0, `backing file ${backing} is locked by ${lockHolder(backing)}`);
      }
      // A backing file this process cannot open (deleted, another mount namespace) is not locked.
    }
    return new FileDevice(path, info.fd, lockFds, info, opts);
  }

  /**
   * The identity `open` would report, from stat alone: lets callers refuse
   * the same device given twice before opening (and O_EXCL-claiming) any.
   */
  static identityOf(path: string, role?: string): string {
    const fail = (errno: number) => {
      const detail = role ? `${role}: ${errnoHint(errnoName(errno))}` : undefined;
      return new DeviceError(errno, 'open', path, 0, 0, detail);
    };
    let st: fs.BigIntStats;
    try {
      st = fs.statSync(path, { bigint: true });
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'ENOENT';
      throw fail((osConstants.errno as Record<string, number>)[code] ?? errnoOf('ENOENT'));
    }
    if (st.isBlockDevice() || st.isFile()) return storageIdentity(statIds(st));
    throw fail(errnoOf('ENODEV'));
  }

  get sizeSectors(): number {
    return Math.floor(this.sizeBytes / SECTOR_BYTES);
  }

  get isOpen(): boolean {
    return this.fd >= 0;
  }

  /** Alignment every offset and length must have on this device. */
  get ioAlignmentBytes(): number {
    return this.direct ? Math.max(this.logicalBlockSize, SECTOR_BYTES) : 1;
  }

  async read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    checkIo(this, 'read', buf, bufOffset, bytes, byteOffset);
    const done = await new Promise<[number, number]>((resolve) =>
      binding.read(this.fd, buf, bufOffset, bytes, byteOffset, (e, n) => resolve([e, n])),
    );
    if (done[0] !== 0) throw new DeviceError(done[0], 'read', this.path, byteOffset, bytes);
    if (done[1] < bytes) {
      throw new DeviceError(errnoOf('EIO'), 'read', this.path, byteOffset, bytes, 'device ended before the range did');
    }
  }

  /** With `fua`, pwritev2 with RWF_DSYNC (pwrite then fdatasync where the kernel lacks it): those bytes are durable. */
  async write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, opts?: WriteOptions): Promise<void> {
    checkIo(this, 'write', buf, bufOffset, bytes, byteOffset);
    const write = opts?.fua ? binding.writeDurable : binding.write;
    const done = await new Promise<[number, number]>((resolve) =>
      write(this.fd, buf, bufOffset, bytes, byteOffset, (e, n) => resolve([e, n])),
    );
    if (done[0] !== 0) throw new DeviceError(done[0], 'write', this.path, byteOffset, bytes);
  }

  /** fdatasync: everything written before is durable when this resolves. */
  async flush(): Promise<void> {
    this.checkOpen('flush');
    const errno = await new Promise<number>((resolve) => binding.datasync(this.fd, resolve));
    if (errno !== 0) throw new DeviceError(errno, 'flush', this.path);
  }

  /**
   * Zero a byte range: BLKZEROOUT / FALLOC_FL_ZERO_RANGE, else plain writes
   * of zeros. Neither call takes a FUA flag, so `fua` adds an fdatasync.
   */
  async zeroRange(byteOffset: number, bytes: number, opts?: WriteOptions): Promise<void> {
    checkRange(this, 'zero', byteOffset, bytes);
    const errno = await new Promise<number>((resolve) => binding.zeroRange(this.fd, this.isBlockDevice, byteOffset, bytes, resolve));
    if (errno !== 0) {
      if (!isUnsupported(errno)) throw new DeviceError(errno, 'zero', this.path, byteOffset, bytes);
      const zeros = allocBuffer(Math.min(bytes, ZERO_FALLBACK_BYTES));
      for (let done = 0; done < bytes; done += zeros.length) {
        const n = Math.min(zeros.length, bytes - done);
        await this.write(zeros, 0, n, byteOffset + done);
      }
    }
    if (opts?.fua) await this.flush();
  }

  /** Discard (BLKDISCARD / punch hole). Content afterwards is unspecified on block devices. */
  async discard(byteOffset: number, bytes: number): Promise<void> {
    checkRange(this, 'discard', byteOffset, bytes);
    const errno = await new Promise<number>((resolve) => binding.discard(this.fd, this.isBlockDevice, byteOffset, bytes, resolve));
    if (errno !== 0) throw new DeviceError(errno, 'discard', this.path, byteOffset, bytes);
  }

  close(): void {
    if (this.fd < 0) return;
    const errno = binding.close(this.fd);
    this.fd = -1;
    for (const fd of this.lockFds.splice(0)) binding.close(fd);
    if (errno !== 0) throw new DeviceError(errno, 'close', this.path);
  }

  nativeEndpoint(): NativeEndpoint {
    this.checkOpen('read');
    return { fd: this.fd, hooks: [] };
  }

  /** Regular files only: their holes (SEEK_DATA/SEEK_HOLE) and punching new ones. */
  sparseFile(): SparseFile | undefined {
    if (this.isBlockDevice) return undefined;
    return {
      dataExtents: (byteOffset, bytes) => Promise.resolve(this.dataExtents(byteOffset, bytes)),
      punchHole: (byteOffset, bytes) => this.punchHole(byteOffset, bytes),
    };
  }

  /** FALLOC_FL_PUNCH_HOLE; where the file system cannot punch, the range is zeroed instead (same content). */
  private async punchHole(byteOffset: number, bytes: number): Promise<void> {
    checkRange(this, 'discard', byteOffset, bytes);
    const errno = await new Promise<number>((resolve) => binding.discard(this.fd, false, byteOffset, bytes, resolve));
    if (errno === 0) return;
    if (!isUnsupported(errno)) throw new DeviceError(errno, 'discard', this.path, byteOffset, bytes);
    await this.zeroRange(byteOffset, bytes);
  }

  private dataExtents(byteOffset: number, bytes: number): ByteExtent[] {
    checkRange(this, 'read', byteOffset, bytes);
    const end = byteOffset + bytes;
    const extents: ByteExtent[] = [];
    // Each turn moves past one data extent, so the loop ends within the file's extent count.
    for (let at = byteOffset; at < end;) {
      const data = this.seek(at, false);
      if (data === undefined || data >= end) break;
      const hole = Math.min(this.seek(data, true) ?? end, end);
      extents.push({ byteOffset: data, bytes: hole - data });
      at = hole;
    }
    return extents;
  }

  /** The next data (or hole) offset at or after `byteOffset`; undefined when no data follows. */
  private seek(byteOffset: number, hole: boolean): number | undefined {
    const r = binding.seekExtent(this.fd, byteOffset, hole);
    if (r.errno === errnoOf('ENXIO')) return undefined;
    if (r.errno !== 0) throw new DeviceError(r.errno, 'read', this.path, byteOffset, 0, `SEEK_${hole ? 'HOLE' : 'DATA'} failed`);
    return r.byteOffset;
  }

  private checkOpen(op: DeviceOp): void {
    if (this.fd < 0) throw new DeviceError(errnoOf('EBADF'), op, this.path, 0, 0, 'device is closed');
  }
}

function isUnsupported(errno: number): boolean {
  return ['EOPNOTSUPP', 'ENOTSUP', 'EINVAL', 'ENOTTY', 'ENOSYS'].some((c) => {
    try {
      return errnoOf(c) === errno;
    } catch {
      return false;
    }
  });
}

function isLockConflict(errno: number): boolean {
  return errno === errnoOf('EWOULDBLOCK') || errno === errnoOf('EAGAIN');
}

function openHint(errno: number, opts: OpenOptions): string | undefined {
  const code = errnoName(errno);
  if (code === 'EBUSY') return 'device is mounted or in use (refused: opened with O_EXCL)';
  if ((code === 'EROFS' || code === 'EACCES' || code === 'EPERM') && opts.write)
    return 'cannot open for writing: device or file is read-only';
  if (code === 'EINVAL' && opts.direct) return 'O_DIRECT is not supported here';
  return undefined;
}

/** A zero-filled buffer aligned for O_DIRECT, freed when garbage-collected. */
export function allocBuffer(bytes: number): Buffer {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new RangeError(`invalid buffer size ${bytes}`);
  const rounded = Math.ceil(Math.max(bytes, 1) / DIRECT_BUFFER_ALIGN) * DIRECT_BUFFER_ALIGN;
  return binding.allocAligned(rounded).subarray(0, bytes);
}

/** Names are paths of regular files or block devices. */
export const fileResolver: DeviceResolver = {
  identify: (name, role) => FileDevice.identityOf(name, role),
  open: (name, opts) => FileDevice.open(name, opts),
};
