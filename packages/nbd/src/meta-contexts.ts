/**
 * Metadata contexts: what NBD_CMD_BLOCK_STATUS reports about an export.
 * Every export has `base:allocation`; snapshot exports add
 * `dmtool:exceptions`.
 */
import { BlockDevice, ByteExtent, dataMapOf } from '@dmtool/devices';
import { BASE_ALLOCATION, NBD_STATE_HOLE, NBD_STATE_ZERO } from './constants';
import type { Extent } from './codec';

/** The context of a snapshot export that says which chunks the snapshot holds. */
export const DMTOOL_EXCEPTIONS = 'dmtool:exceptions';
/** `dmtool:exceptions` flag: the range is in chunks the snapshot holds (an exception exists). */
export const DMTOOL_STATE_EXCEPTION = 1 << 0;

/** Descriptors in one reply at most; a reply may cover less than was asked. */
export const MAX_EXTENTS_PER_REPLY = 1 << 16;

export interface MetaContext {
  /** `namespace:leaf`. */
  readonly name: string;
  /** Descriptors from `byteOffset` on, in order, covering at least one byte and at most `bytes`. */
  extents(byteOffset: number, bytes: number): Promise<Extent[]>;
}

/**
 * Descriptors for [byteOffset, +bytes): `inFlags` inside the ascending
 * `ranges`, `outFlags` between them; neighbours with equal flags joined.
 */
export function extentsOfRanges(
  ranges: readonly ByteExtent[],
  byteOffset: number,
  bytes: number,
  inFlags: number,
  outFlags: number,
): Extent[] {
  const out: Extent[] = [];
  const push = (lengthBytes: number, flags: number) => {
    if (lengthBytes <= 0) return;
    const last = out[out.length - 1];
    if (last && last.flags === flags) last.lengthBytes += lengthBytes;
    else out.push({ lengthBytes, flags });
  };
  const end = byteOffset + bytes;
  let at = byteOffset;
  for (const r of ranges) {
    const from = Math.max(r.byteOffset, at);
    const to = Math.min(r.byteOffset + r.bytes, end);
    if (to <= from) continue;
    push(from - at, outFlags);
    push(to - from, inFlags);
    at = to;
  }
  push(end - at, outFlags);
  return out.slice(0, MAX_EXTENTS_PER_REPLY);
}

/**
 * `base:allocation` from the device's data map: holes are
 * NBD_STATE_HOLE | NBD_STATE_ZERO; a device that cannot tell reports
 * everything as data (status 0, always a truthful answer).
 */
export function allocationContext(device: BlockDevice): MetaContext {
  return {
    name: BASE_ALLOCATION,
    async extents(byteOffset, bytes) {
      const map = dataMapOf(device);
      if (!map) return [{ lengthBytes: bytes, flags: 0 }];
      return extentsOfRanges(await map.dataExtents(byteOffset, bytes), byteOffset, bytes, 0, NBD_STATE_HOLE | NBD_STATE_ZERO);
    },
  };
}

/** `dmtool:exceptions` from a snapshot's held ranges: DMTOOL_STATE_EXCEPTION where it holds the chunk, 0 elsewhere. */
export function exceptionsContext(heldExtents: (byteOffset: number, bytes: number) => ByteExtent[]): MetaContext {
  return {
    name: DMTOOL_EXCEPTIONS,
    extents: (byteOffset, bytes) =>
      Promise.resolve(extentsOfRanges(heldExtents(byteOffset, bytes), byteOffset, bytes, DMTOOL_STATE_EXCEPTION, 0)),
  };
}

/**
 * The contexts a query list names. Listing: no query means all, and
 * `namespace:` means all of that namespace. Selecting: full names only.
 */
export function matchingContexts(contexts: readonly MetaContext[], queries: readonly string[], listing: boolean): MetaContext[] {
  if (listing && queries.length === 0) return [...contexts];
  return contexts.filter((c) =>
    queries.some((q) => q === c.name || (listing && q.endsWith(':') && q.indexOf(':') === q.length - 1 && c.name.startsWith(q))),
  );
}
