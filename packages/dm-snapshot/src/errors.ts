/**
 * A snapshot-level error: bad on-disk metadata, a request that does not fit,
 * an invalidated or overflowed snapshot. `code` is an errno name (EINVAL,
 * ENXIO, ENOSPC, EIO, EBUSY…) so the CLI can map it to an exit status;
 * `reason` names the precise rule that was broken; `path` and the sector
 * range say where.
 */
export type SnapshotErrorReason =
  | 'bad-magic'
  | 'bad-version'
  | 'bad-chunk-size'
  | 'chunk-size-mismatch'
  | 'entry-in-metadata'
  | 'entry-past-cow-end'
  | 'entry-past-origin-end'
  | 'duplicate-old-chunk'
  | 'duplicate-new-chunk'
  | 'area-past-cow-end'
  | 'cow-too-small'
  | 'cow-not-empty'
  | 'not-formatted'
  | 'invalid'
  | 'overflow'
  | 'no-space'
  | 'same-device'
  | 'out-of-range'
  | 'misaligned'
  | 'copy-failed'
  | 'metadata-io'
  | 'merge-io'
  | 'transient-merge'
  | 'aborted';

export interface SnapshotErrorDetail {
  path?: string;
  sector?: number;
  sectors?: number;
}

export class SnapshotError extends Error {
  readonly code: string;
  readonly reason: SnapshotErrorReason;
  readonly path?: string;
  readonly sector?: number;
  readonly sectors?: number;

  constructor(code: string, reason: SnapshotErrorReason, message: string, detail: SnapshotErrorDetail = {}) {
    const where =
      detail.path !== undefined
        ? detail.sector !== undefined
          ? ` (${detail.path} sectors ${detail.sector}..${detail.sector + Math.max(1, detail.sectors ?? 1) - 1})`
          : ` (${detail.path})`
        : '';
    super(`${code}: ${message}${where}`);
    this.name = 'SnapshotError';
    this.code = code;
    this.reason = reason;
    this.path = detail.path;
    this.sector = detail.sector;
    this.sectors = detail.sectors;
  }
}
