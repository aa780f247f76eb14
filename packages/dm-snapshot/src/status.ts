import { CowGeometry } from './geometry';
import { StoreUsage } from './store';

/** The kernel's status INFO of a usable snapshot: `<allocated>/<total> <metadata>` sectors. */
export function formatUsage(u: StoreUsage): string {
  return `${u.allocatedSectors}/${u.totalSectors} ${u.metadataSectors}`;
}

/** A store's status INFO: `Invalid`, or its usage. */
export function storeStatus(store: { readonly valid: boolean; usage(): StoreUsage }): string {
  return store.valid ? formatUsage(store.usage()) : 'Invalid';
}

/** The usage the kernel reports for a persistent store in this state (docs/snapshot-format.md#status-and-table-lines). */
export function persistentUsage(g: CowGeometry, cowSectors: number, nextFree: number, currentArea: number): StoreUsage {
  return {
    allocatedSectors: nextFree * g.chunkSectors,
    totalSectors: cowSectors,
    metadataSectors: (currentArea + 2) * g.chunkSectors,
  };
}
