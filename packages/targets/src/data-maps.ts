/**
 * Where the target devices hold data (the `dataMap` capability), worked
 * out from the devices underneath, and which chunks a snapshot holds.
 */
import { ByteExtent, DataMap, SECTOR_BYTES } from '@dmtool/devices';
import type { Snapshot } from '@dmtool/dm-snapshot';

/** `map` seen from `startBytes` on: byte 0 here is byte `startBytes` there. */
export function shiftedDataMap(map: DataMap, startBytes: number): DataMap {
  if (startBytes === 0) return map;
  return {
    async dataExtents(byteOffset, bytes) {
      const extents = await map.dataExtents(startBytes + byteOffset, bytes);
      return extents.map((e) => ({ byteOffset: e.byteOffset - startBytes, bytes: e.bytes }));
    },
  };
}

/**
 * The byte ranges of [byteOffset, +bytes) in chunks that have an exception,
 * clipped to the range, neighbours joined.
 */
export function heldChunkExtents(snapshot: Snapshot, byteOffset: number, bytes: number): ByteExtent[] {
  const chunkBytes = snapshot.chunkSectors * SECTOR_BYTES;
  const end = byteOffset + bytes;
  const out: ByteExtent[] = [];
  for (let chunk = Math.floor(byteOffset / chunkBytes); chunk * chunkBytes < end; chunk++) {
    if (!snapshot.holdsChunk(chunk)) continue;
    const from = Math.max(chunk * chunkBytes, byteOffset);
    const to = Math.min((chunk + 1) * chunkBytes, end);
    const last = out[out.length - 1];
    if (last && last.byteOffset + last.bytes === from) last.bytes += to - from;
    else out.push({ byteOffset: from, bytes: to - from });
  }
  return out;
}

/** The union of two ascending lists of extents that do not overlap within themselves. */
export function unionOfExtents(a: readonly ByteExtent[], b: readonly ByteExtent[]): ByteExtent[] {
  const all = [...a, ...b].sort((x, y) => x.byteOffset - y.byteOffset);
  const out: ByteExtent[] = [];
  for (const e of all) {
    const last = out[out.length - 1];
    if (last && e.byteOffset <= last.byteOffset + last.bytes) {
      last.bytes = Math.max(last.bytes, e.byteOffset + e.bytes - last.byteOffset);
    } else out.push({ ...e });
  }
  return out;
}

/**
 * A snapshot's data: a chunk with an exception is data (its COW chunk was
 * written); any other chunk reads from the origin, so the origin's map
 * says. Without an origin map, undefined.
 */
export function snapshotDataMap(snapshot: Snapshot, originMap: DataMap | undefined): DataMap | undefined {
  if (!originMap) return undefined;
  return {
    async dataExtents(byteOffset, bytes) {
      const held = heldChunkExtents(snapshot, byteOffset, bytes);
      return unionOfExtents(await originMap.dataExtents(byteOffset, bytes), held);
    },
  };
}
