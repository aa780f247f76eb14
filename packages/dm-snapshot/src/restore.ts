import { BlockDevice, DeviceError } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { encodeEntry } from './area';
import { SnapshotError } from './errors';
import { checkChunkSectors, CowGeometry } from './geometry';
import { encodeHeader } from './header';
import { DumpEvent } from './dump-parse';
import { DumpHeader } from './dump-format';
import { ExceptionTable } from './table';

export interface RestorePlan {
  header: DumpHeader;
  table: ExceptionTable;
  /** Areas the table occupies, the last holding the terminator. */
  areas: number;
  /** Areas from the start to zero past the table (repair: the stale ones it found); at least the one after the table. */
  zeroAreasTo?: number;
}

/**
 * Read a dump's events and check them against the target COW by the
 * loader's rules (docs/snapshot-format.md#validity), before anything is
 * written: one SnapshotError for the first broken rule.
 */
export function planRestore(cow: BlockDevice, events: Iterable<DumpEvent>): RestorePlan {
  const it = events[Symbol.iterator]();
  const first = it.next();
  if (first.done || first.value.kind !== 'header') throw new SnapshotError('EINVAL', 'bad-dump', 'the dump has no header');
  const header = first.value.header;
  const path = cow.path;
  checkChunkSectors(header.chunkSectors, [cow]);
  const g = new CowGeometry(header.chunkSectors, cow.sizeSectors);
  if (g.cowChunks < 2) {
    throw new SnapshotError(
      'ENOSPC',
      'cow-too-small',
      `COW of ${cow.sizeSectors} sectors cannot hold a header and an area of ${header.chunkSectors} sectors`,
      {
        path,
      },
    );
  }
  const table = new ExceptionTable();
  const usedNew = new Uint8Array(Math.ceil(g.cowChunks / 8));
  for (let r = it.next(); !r.done; r = it.next()) {
    const e = r.value;
    if (e.kind !== 'entry') throw new SnapshotError('EINVAL', 'bad-dump', 'the dump has two headers');
    const j = table.size;
    const entry = `dump exception ${j} (old ${e.oldChunk} → new ${e.newChunk})`;
    if (e.newChunk === 0) throw new SnapshotError('EINVAL', 'bad-dump', `${entry}: new chunk 0 would end the table there`);
    if (e.newChunk + 1 > g.cowChunks) {
      throw new SnapshotError('EINVAL', 'entry-past-cow-end', `${entry} points past the COW end (${g.cowChunks} chunks)`, { path });
    }
    if (g.isMetadataChunk(e.newChunk))
      throw new SnapshotError('EINVAL', 'entry-in-metadata', `${entry} points into a metadata chunk`, { path });
    const bit = 1 << (e.newChunk & 7);
    if (usedNew[e.newChunk >>> 3] & bit) {
      throw new SnapshotError('EINVAL', 'duplicate-new-chunk', `${entry} shares COW chunk ${e.newChunk} with an earlier exception`, {
        path,
      });
    }
    usedNew[e.newChunk >>> 3] |= bit;
    if (!table.append(e.oldChunk, e.newChunk)) {
      throw new SnapshotError('EINVAL', 'duplicate-old-chunk', `${entry} repeats origin chunk ${e.oldChunk}`, { path });
    }
  }
  const areas = Math.floor(table.size / g.exceptionsPerArea) + 1;
  const lastAreaChunk = g.areaChunk(areas - 1);
  if (lastAreaChunk + 1 > g.cowChunks) {
    throw new SnapshotError(
      'EINVAL',
      'area-past-cow-end',
      `${table.size} exceptions need ${areas} metadata areas, and area ${areas - 1} at chunk ${lastAreaChunk} lies past the COW end (${g.cowChunks} chunks)`,
      { path },
    );
  }
  return { header, table, areas };
}

/**
 * Write a checked plan's metadata (docs/snapshot-dump.md#restore): the
 * header as invalid first, so that no reader trusts a half-written table;
 * every area of the table, and the area after it zeroed, as the kernel
 * leaves them; a flush; then the header as the dump gives it, and a flush.
 * Data chunks are not touched.
 */
export async function restoreCow(cow: BlockDevice, plan: RestorePlan): Promise<void> {
  const g = new CowGeometry(plan.header.chunkSectors, cow.sizeSectors);
  const E = g.exceptionsPerArea;
  const buf = allocBuffer(g.chunkBytes);
  const t = plan.table;
  try {
    encodeHeader(buf, { valid: false, chunkSectors: g.chunkSectors });
    await cow.write(buf, 0, g.chunkBytes, 0);
    await cow.flush();
    let zeroedAreas = Math.max(plan.areas + 1, plan.zeroAreasTo ?? 0);
    while (zeroedAreas > plan.areas && g.areaChunk(zeroedAreas - 1) + 1 > g.cowChunks) zeroedAreas--;
    for (let area = 0; area < zeroedAreas; area++) {
      buf.fill(0);
      const end = Math.min(t.size, (area + 1) * E);
      for (let j = area * E; j < end; j++) encodeEntry(buf, j - area * E, t.oldAt(j), t.newAt(j));
      await cow.write(buf, 0, g.chunkBytes, g.chunkToByte(g.areaChunk(area)));
    }
    // The table must be durable before a header that may be valid points at it.
    await cow.flush();
    encodeHeader(buf, { valid: plan.header.valid, chunkSectors: g.chunkSectors });
    await cow.write(buf, 0, g.chunkBytes, 0);
    await cow.flush();
  } catch (e) {
    if (!(e instanceof DeviceError)) throw e;
    throw new SnapshotError(
      e.code,
      'metadata-io',
      `restoring the COW failed (the header says invalid until a restore completes; run it again): ${e.message}`,
      {
        path: cow.path,
      },
    );
  }
}
