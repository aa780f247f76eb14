/**
 * An export's data extents from NBD_CMD_BLOCK_STATUS replies of the
 * `base:allocation` context. Only ranges the server marks NBD_STATE_ZERO
 * are left out: NBD_STATE_HOLE alone says nothing about what a range reads
 * as (a backing image may show through), so it is data. See
 * docs/nbd.md#holes.
 */
import type { ByteExtent } from '@dmtool/devices';
import type { Extent } from './codec';
import { ProtocolError } from './codec';
import { NBD_STATE_ZERO } from './constants';

/** One BLOCK_STATUS request: the extents the server reported from `offsetBytes` on (at least one, in order). */
export type StatusQuery = (offsetBytes: number, lengthBytes: number) => Promise<Extent[]>;

/** The longest range one request asks about: below 2^32 and a multiple of any minimum block size. */
export const MAX_STATUS_REQUEST_BYTES = 2 ** 31;

/**
 * The data extents of [byteOffset, byteOffset + bytes), in order, merged
 * and clipped to the range. Requests start at `alignBytes` boundaries; each
 * next one starts where the server's answer ended, so a server answering
 * for less than asked is asked again.
 */
export async function dataExtents(
  query: StatusQuery,
  byteOffset: number,
  bytes: number,
  alignBytes: number,
  exportBytes: number,
): Promise<ByteExtent[]> {
  const end = byteOffset + bytes;
  const out: ByteExtent[] = [];
  let at = byteOffset - (byteOffset % alignBytes);
  while (at < end) {
    const alignedEnd = Math.min(exportBytes, Math.ceil(end / alignBytes) * alignBytes);
    const extents = await query(at, Math.min(alignedEnd - at, MAX_STATUS_REQUEST_BYTES));
    let covered = 0;
    for (const e of extents) {
      if (e.lengthBytes === 0) throw new ProtocolError('invalid', 'block status extent of length 0');
      if (!(e.flags & NBD_STATE_ZERO)) addData(out, Math.max(at + covered, byteOffset), Math.min(at + covered + e.lengthBytes, end));
      covered += e.lengthBytes;
      if (at + covered >= end) break;
    }
    if (covered === 0) throw new ProtocolError('invalid', 'block status reply without extents');
    at += covered;
  }
  return out;
}

function addData(out: ByteExtent[], start: number, stop: number): void {
  if (stop <= start) return;
  const last = out[out.length - 1];
  if (last && last.byteOffset + last.bytes === start) last.bytes += stop - start;
  else out.push({ byteOffset: start, bytes: stop - start });
}
