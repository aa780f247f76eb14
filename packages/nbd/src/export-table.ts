import type { BlockDevice } from '@dmtool/devices';
import {
  MAX_STRING_BYTES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_CACHE,
  NBD_FLAG_SEND_DF,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
} from './constants';
import type { BlockSizeInfo } from './codec';
import { allocationContext, MetaContext } from './meta-contexts';

/** Smallest block size advertised: what the kernel's client and qemu assume anyway. */
export const MINIMUM_BLOCK_BYTES = 512;
export const DEFAULT_PREFERRED_BLOCK_BYTES = 4096;
/** Largest read or write payload accepted (the protocol's interoperable maximum). */
export const MAXIMUM_PAYLOAD_BYTES = 32 << 20;

export interface ExportOptions {
  description?: string;
  /** Refuse writes (NBD_FLAG_READ_ONLY) even when the device is writable. */
  readOnly?: boolean;
  /** Preferred block size in bytes: a power of two from 512 to 32 MiB (default 4096). */
  preferredBlockBytes?: number;
  /** Metadata contexts beside `base:allocation` (which every export has), e.g. `dmtool:exceptions`. */
  metaContexts?: readonly MetaContext[];
}

export interface Export {
  readonly name: string;
  readonly description: string;
  readonly device: BlockDevice;
  readonly readOnly: boolean;
  readonly blockSizes: BlockSizeInfo;
  /** `base:allocation` first; a context's id is its index here plus one. */
  readonly metaContexts: readonly MetaContext[];
}

const isPowerOfTwo = (n: number) => Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;

/**
 * The named devices a server offers. The first export added is also the
 * default export, which clients reach with the empty name.
 */
export class ExportTable {
  private readonly byName = new Map<string, Export>();

  add(name: string, device: BlockDevice, opts: ExportOptions = {}): Export {
    const nameBytes = Buffer.byteLength(name, 'utf8');
    if (nameBytes === 0 || nameBytes > MAX_STRING_BYTES || name.includes('\0')) {
      throw new RangeError(`export name must be 1 to ${MAX_STRING_BYTES} bytes of UTF-8 without NUL`);
    }
    if (this.byName.has(name)) throw new RangeError(`export ${name} is given twice`);
    const minimumBytes = Math.max(MINIMUM_BLOCK_BYTES, device.ioAlignmentBytes);
    const preferredBytes = opts.preferredBlockBytes ?? Math.max(DEFAULT_PREFERRED_BLOCK_BYTES, minimumBytes);
    if (!isPowerOfTwo(preferredBytes) || preferredBytes < minimumBytes || preferredBytes > MAXIMUM_PAYLOAD_BYTES) {
      throw new RangeError(
        `export ${name}: preferred block size ${preferredBytes} must be a power of two from ${minimumBytes} to ${MAXIMUM_PAYLOAD_BYTES} bytes`,
      );
    }
    const metaContexts = [allocationContext(device), ...(opts.metaContexts ?? [])];
    if (new Set(metaContexts.map((c) => c.name)).size !== metaContexts.length) {
      throw new RangeError(`export ${name}: a metadata context is given twice`);
    }
    if (device.sizeBytes % minimumBytes !== 0) {
      throw new RangeError(`export ${name}: size ${device.sizeBytes} bytes is not a multiple of ${minimumBytes}`);
    }
    const e: Export = {
      name,
      description: opts.description ?? '',
      device,
      readOnly: opts.readOnly === true || !device.writable,
      blockSizes: { minimumBytes, preferredBytes, maximumBytes: MAXIMUM_PAYLOAD_BYTES },
      metaContexts,
    };
    this.byName.set(name, e);
    return e;
  }

  /** The export of that name; the empty name is the default export. */
  find(name: string): Export | undefined {
    if (name === '') return this.byName.values().next().value;
    return this.byName.get(name);
  }

  /** Take an export out: clients no longer see it in NBD_OPT_LIST or reach it; false if there was none. */
  remove(name: string): boolean {
    return this.byName.delete(name);
  }

  list(): Export[] {
    return [...this.byName.values()];
  }
}

/**
 * The transmission flags of an export. Every connection shares the one
 * device object of this process, with no cache of its own, and its flush
 * reaches every file underneath, so a flush or FUA on any connection
 * covers the writes answered on all of them (NBD_FLAG_CAN_MULTI_CONN;
 * docs/nbd.md#multi-conn says why for each target).
 */
export function transmissionFlags(e: Export, structuredReplies: boolean): number {
  let flags = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE;
  if (e.readOnly) flags |= NBD_FLAG_READ_ONLY;
  else flags |= NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES;
  if (structuredReplies) flags |= NBD_FLAG_SEND_DF;
  return flags;
}
