import { BlockDevice } from '@dmtool/devices';
import { CowGeometry } from './geometry';
import { OpenStoreOptions, readCowHeader } from './persistent-store';
import { persistentUsage } from './status';
import { StoreUsage } from './store';
import { FIRST_FREE_CHUNK, scanTable, TableShape } from './table-scan';

/**
 * A persistent COW's header and table shape, checked by every rule
 * PersistentStore.open applies, without an in-memory exception table: what
 * status and list need, in memory bounded whatever the table's size.
 */
export interface CowSummary extends TableShape {
  readonly cow: BlockDevice;
  readonly valid: boolean;
  readonly geometry: CowGeometry;
  readonly chunkSectors: number;
  readonly exceptionsPerArea: number;
  usage(): StoreUsage;
}

/** Read and validate a COW (an invalid one's table is not read, as in PersistentStore.open). */
export async function readCowSummary(
  cow: BlockDevice,
  opts: Pick<OpenStoreOptions, 'chunkSectors' | 'originSectors' | 'origin'> = {},
): Promise<CowSummary> {
  const { valid, geometry } = await readCowHeader(cow, opts);
  const shape: TableShape = valid
    ? await scanTable(cow, geometry, { originSectors: opts.originSectors })
    : { exceptions: 0, currentArea: 0, currentCommitted: 0, nextFree: FIRST_FREE_CHUNK };
  return {
    ...shape,
    cow,
    valid,
    geometry,
    chunkSectors: geometry.chunkSectors,
    exceptionsPerArea: geometry.exceptionsPerArea,
    usage: () => persistentUsage(geometry, cow.sizeSectors, shape.nextFree, shape.currentArea),
  };
}
