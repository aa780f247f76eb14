/**
 * Data extents from base:allocation answers: what counts as data, clipping,
 * and servers answering for less than asked. The answers are scripted, as a
 * server sends them; no I/O.
 */
import { dataExtents, Extent, NBD_STATE_HOLE, NBD_STATE_ZERO, ProtocolError } from '@dmtool/nbd';

const HOLE_ZERO = NBD_STATE_HOLE | NBD_STATE_ZERO;

/** A server whose export has `layout` (lengths and flags from 0), answering at most `perReply` extents. */
function server(layout: readonly Extent[], perReply = Infinity) {
  const asked: [number, number][] = [];
  const query = async (offsetBytes: number, lengthBytes: number): Promise<Extent[]> => {
    asked.push([offsetBytes, lengthBytes]);
    const out: Extent[] = [];
    let at = 0;
    for (const e of layout) {
      const end = at + e.lengthBytes;
      if (end > offsetBytes && at < offsetBytes + lengthBytes && out.length < perReply)
        out.push({ lengthBytes: end - Math.max(at, offsetBytes), flags: e.flags });
      at = end;
    }
    return out;
  };
  return { query, asked };
}

const LAYOUT: Extent[] = [
  { lengthBytes: 4096, flags: 0 },
  { lengthBytes: 8192, flags: HOLE_ZERO },
  { lengthBytes: 4096, flags: NBD_STATE_HOLE },
  { lengthBytes: 4096, flags: NBD_STATE_ZERO },
  { lengthBytes: 12288, flags: 0 },
];

test('only NBD_STATE_ZERO ranges are left out; a hole that may not read as zeros is data', async () => {
  const s = server(LAYOUT);
  expect(await dataExtents(s.query, 0, 32768, 512, 32768)).toEqual([
    { byteOffset: 0, bytes: 4096 },
    { byteOffset: 12288, bytes: 4096 },
    { byteOffset: 20480, bytes: 12288 },
  ]);
  expect(s.asked).toEqual([[0, 32768]]);
});

test('a range is clipped, asked from its aligned start, and asked again where a short answer ended', async () => {
  const s = server(LAYOUT, 2);
  expect(await dataExtents(s.query, 1024, 23552, 4096, 32768)).toEqual([
    { byteOffset: 1024, bytes: 3072 },
    { byteOffset: 12288, bytes: 4096 },
    { byteOffset: 20480, bytes: 4096 },
  ]);
  expect(s.asked).toEqual([
    [0, 24576],
    [12288, 12288],
    [20480, 4096],
  ]);
});

test('an answer without extents or with an empty extent is a broken server', async () => {
  await expect(dataExtents(async () => [], 0, 4096, 512, 4096)).rejects.toThrow(ProtocolError);
  await expect(dataExtents(async () => [{ lengthBytes: 0, flags: 0 }], 0, 4096, 512, 4096)).rejects.toThrow(
    'block status extent of length 0',
  );
});
