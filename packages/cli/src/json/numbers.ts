/**
 * The computed numbers of the --json documents. Apart from json/schemas.ts,
 * so that a command can compute them without building every document's
 * schema (and loading the packages those name) at start-up.
 */

/** A percent with two decimals, as lvs prints it. */
export function percentOf(part: number, whole: number): number {
  return whole > 0 ? Math.floor((10000 * part) / whole) / 100 : 100;
}

export function bytesPerSecond(bytes: number, secs: number): number {
  return secs > 0 ? Math.round(bytes / secs) : 0;
}
