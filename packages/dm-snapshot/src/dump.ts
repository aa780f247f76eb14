import { BlockDevice } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { decodeArea } from './area';
import { SnapshotError } from './errors';
import { checkChunkSectors, CowGeometry } from './geometry';
import { DumpHeader } from './dump-format';
import { probeHeader } from './persistent-store';

/** Receives a COW's table as `dumpCow` reads it, one area's entries at a time (awaited: output keeps pace). */
export interface DumpSink {
  header(h: DumpHeader): void | Promise<void>;
  entries(olds: readonly number[], news: readonly number[]): void | Promise<void>;
}

/**
 * Read a COW's header and table as stored (docs/snapshot-dump.md), for
 * snapshot-dump: the table of an invalidated snapshot too, and entries the
 * loader would refuse (so a damaged table can be dumped, edited and
 * restored). Refuses what leaves no table to read: no or a foreign header,
 * a bad chunk size, no terminator before the COW end. Resolves to the
 * number of entries.
 */
export async function dumpCow(cow: BlockDevice, sink: DumpSink): Promise<number> {
  const state = await probeHeader(cow);
  if (state.kind === 'fresh') {
    throw new SnapshotError('EINVAL', 'not-formatted', 'COW has no snapshot header (magic is 0): nothing to dump', {
      path: cow.path,
      sector: 0,
      sectors: 1,
    });
  }
  const h = state.header;
  checkChunkSectors(h.chunkSectors, [cow]);
  const g = new CowGeometry(h.chunkSectors, cow.sizeSectors);
  if (g.cowChunks < 2) {
    throw new SnapshotError('ENOSPC', 'cow-too-small', `COW of ${cow.sizeSectors} sectors is smaller than its header and first area`, {
      path: cow.path,
    });
  }
  await sink.header({ cowSectors: cow.sizeSectors, valid: h.valid, chunkSectors: h.chunkSectors });
  const buf = allocBuffer(g.chunkBytes);
  let count = 0;
  for (let area = 0; ; area++) {
    const chunk = g.areaChunk(area);
    if (chunk + 1 > g.cowChunks) {
      throw new SnapshotError(
        'EINVAL',
        'area-past-cow-end',
        `metadata area ${area} at chunk ${chunk} lies beyond the COW end: the table has no terminator`,
        {
          path: cow.path,
          sector: g.chunkToSector(chunk),
          sectors: g.chunkSectors,
        },
      );
    }
    await cow.read(buf, 0, g.chunkBytes, g.chunkToByte(chunk));
    const decoded = decodeArea(buf, g.exceptionsPerArea, area, cow.path);
    if (decoded.olds.length > 0) await sink.entries(decoded.olds, decoded.news);
    count += decoded.olds.length;
    if (!decoded.full) return count;
  }
}
