/* eslint-disable @typescript-eslint/no-require-imports -- these packages are required on first use, not at start-up */

/**
 * Packages only some operands need, each loaded the first time it is
 * needed: the NBD client (with TLS) for an nbd:// URI, the LVM reader (with
 * the dm-snapshot, dm-mirror and targets code it maps LVs with) for a
 * `PV...:VG/LV` volume, the native addon once a file is opened. Loading
 * them all would cost every dmtool process their load time at start-up,
 * also a `--help` or a merge of two image files.
 */
function once<T>(load: () => T): () => T {
  let loaded: { value: T } | undefined;
  return () => (loaded ??= { value: load() }).value;
}

export const nbdPackage = once(() => require('@dmtool/nbd') as typeof import('@dmtool/nbd'));
export const lvmPackage = once(() => require('@dmtool/lvm') as typeof import('@dmtool/lvm'));
export const nativePackage = once(() => require('@dmtool/native') as typeof import('@dmtool/native'));
export const devicesPackage = once(() => require('@dmtool/devices') as typeof import('@dmtool/devices'));

/** @dmtool/nbd's looksLikeNbdUri; a name without "://" is no URI, so the NBD package is not loaded for it. */
export function looksLikeNbdUri(name: string): boolean {
  return name.includes('://') && nbdPackage().looksLikeNbdUri(name);
}

/** @dmtool/lvm's parseVolumeOperand; a name without ":" is no `PV:VG/LV`, so the LVM package is not loaded for it. */
export function parseVolumeOperand(name: string): import('@dmtool/lvm').VolumeOperand | undefined {
  return name.includes(':') ? lvmPackage().parseVolumeOperand(name) : undefined;
}
