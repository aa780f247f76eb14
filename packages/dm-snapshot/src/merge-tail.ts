import { BlockDevice, crashPoint, DeviceError } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { decodeArea, encodeEntry } from './area';
import { SnapshotError } from './errors';
import { CowGeometry } from './geometry';

/** Areas read at once when the window grows backward. */
const AREAS_IN_FLIGHT = 16;

/**
 * The tail of a validated exception table, for the merge: only the areas
 * the next batch needs are in memory, read backward from the end of the
 * table as the merge goes, and dropped once retired. `size` is the number of
 * entries still in the table; entry indexes are the table's own.
 */
export class MergeTail {
  /** Entries of the areas held, by area number; each area from its first entry. */
  private readonly areas = new Map<number, { olds: number[]; news: number[] }>();
  private readonly scratch: Buffer;

  constructor(
    readonly cow: BlockDevice,
    readonly geometry: CowGeometry,
    public size: number,
  ) {
    this.scratch = allocBuffer(geometry.chunkBytes);
  }

  oldAt(index: number): number {
    return this.entriesOf(index).olds[index % this.geometry.exceptionsPerArea];
  }

  newAt(index: number): number {
    return this.entriesOf(index).news[index % this.geometry.exceptionsPerArea];
  }

  private entriesOf(index: number): { olds: number[]; news: number[] } {
    const a = this.areas.get(Math.floor(index / this.geometry.exceptionsPerArea));
    if (!a || index >= this.size) throw new RangeError(`table entry ${index} is not held`);
    return a;
  }

  /** Make the last `count` entries (or all there are) readable. */
  async load(count: number): Promise<void> {
    const E = this.geometry.exceptionsPerArea;
    if (this.size === 0) return;
    const first = Math.floor(Math.max(0, this.size - count) / E);
    const last = Math.floor((this.size - 1) / E);
    const missing: number[] = [];
    for (let area = last; area >= first; area--) if (!this.areas.has(area)) missing.push(area);
    for (let i = 0; i < missing.length; i += AREAS_IN_FLIGHT) {
      await Promise.all(missing.slice(i, i + AREAS_IN_FLIGHT).map((area) => this.readArea(area)));
    }
  }

  private async readArea(area: number): Promise<void> {
    const g = this.geometry;
    const E = g.exceptionsPerArea;
    const buf = allocBuffer(g.chunkBytes);
    await this.cow.read(buf, 0, g.chunkBytes, g.chunkToByte(g.areaChunk(area)));
    const d = decodeArea(buf, E, area, this.cow.path);
    const expected = Math.min(E, this.size - area * E);
    if (d.olds.length < expected) {
      // The table was validated when the merge began; only a change underneath can do this.
      throw new SnapshotError(
        'EIO',
        'merge-io',
        `metadata area ${area} holds ${d.olds.length} entries, ${expected} expected: the COW changed during the merge`,
        {
          path: this.cow.path,
          sector: g.chunkToSector(g.areaChunk(area)),
          sectors: g.chunkSectors,
        },
      );
    }
    this.areas.set(area, { olds: d.olds.slice(0, expected), news: d.news.slice(0, expected) });
  }

  /** Forget the last `count` entries in memory only (the dry run's plan, and after a retire). */
  drop(count: number): void {
    const E = this.geometry.exceptionsPerArea;
    this.size -= count;
    for (const [area, a] of this.areas) {
      if (area * E >= this.size) this.areas.delete(area);
      else if (a.olds.length > this.size - area * E) {
        a.olds.length = this.size - area * E;
        a.news.length = this.size - area * E;
      }
    }
  }

  /**
   * Retire the last `count` entries from the on-disk table (their data is
   * durable in the origin): every touched area rewritten, the last first,
   * holding only the entries that remain (emptied areas as zeros), then one
   * COW flush (docs/snapshot-format.md#merge-crash-safety). An I/O error
   * throws 'merge-io' and changes nothing in memory.
   */
  async retire(count: number): Promise<void> {
    if (count <= 0) return;
    if (count > this.size) throw new RangeError(`cannot retire ${count} of ${this.size} exceptions`);
    const g = this.geometry;
    const E = g.exceptionsPerArea;
    const keep = this.size - count;
    const lastArea = Math.floor((this.size - 1) / E);
    const firstArea = Math.floor(keep / E);
    try {
      for (let area = lastArea; area >= firstArea; area--) {
        this.scratch.fill(0);
        const end = Math.min(keep, (area + 1) * E);
        for (let j = area * E; j < end; j++) encodeEntry(this.scratch, j - area * E, this.oldAt(j), this.newAt(j));
        await this.cow.write(this.scratch, 0, g.chunkBytes, g.chunkToByte(g.areaChunk(area)));
        crashPoint('snapshot-merge:area-written');
      }
      await this.cow.flush();
    } catch (e) {
      // As the kernel's merge: a failed table update stops the merge but does
      // not invalidate. Whatever reached the disk is still a valid prefix of
      // the table, and rewriting the same areas is idempotent.
      if (!(e instanceof DeviceError)) throw e;
      throw new SnapshotError(
        e.code,
        'merge-io',
        `merge stopped: clearing ${count} merged exceptions from the table failed (${e.message}); the snapshot is still valid, run the merge again to finish`,
        {
          path: this.cow.path,
          sector: g.chunkToSector(g.areaChunk(firstArea)),
          sectors: g.chunkToSector(g.areaChunk(lastArea) + 1 - g.areaChunk(firstArea)),
        },
      );
    }
    this.drop(count);
  }
}
