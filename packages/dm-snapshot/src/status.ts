import { StoreUsage } from './store';

/** The kernel's status INFO of a usable snapshot: `<allocated>/<total> <metadata>` sectors. */
export function formatUsage(u: StoreUsage): string {
  return `${u.allocatedSectors}/${u.totalSectors} ${u.metadataSectors}`;
}

/** A store's status INFO: `Invalid`, or its usage. */
export function storeStatus(store: { readonly valid: boolean; usage(): StoreUsage }): string {
  return store.valid ? formatUsage(store.usage()) : 'Invalid';
}
