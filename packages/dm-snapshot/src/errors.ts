import { DmtoolError, ErrorKind } from '@dmtool/devices';

/**
 * A snapshot-level error: bad on-disk metadata, a request that does not fit,
 * an invalidated or overflowed snapshot. `code` is an errno name (EINVAL,
 * ENXIO, ENOSPC, EIO, EBUSY…); `reason` names the precise rule that was
 * broken and decides the kind; `path` and the sector range say where.
 */
export type SnapshotErrorReason = keyof typeof SNAPSHOT_ERROR_KINDS;

/** The kind (and so the exit code) of each snapshot error reason. */
export const SNAPSHOT_ERROR_KINDS = {
  'bad-magic': 'bad-input',
  'bad-version': 'bad-input',
  'bad-chunk-size': 'bad-input',
  'chunk-size-mismatch': 'bad-input',
  'entry-in-metadata': 'bad-input',
  'entry-past-cow-end': 'bad-input',
  'entry-past-origin-end': 'bad-input',
  'duplicate-old-chunk': 'bad-input',
  'duplicate-new-chunk': 'bad-input',
  'area-past-cow-end': 'bad-input',
  'cow-too-small': 'bad-input',
  'cow-not-empty': 'bad-input',
  'not-formatted': 'bad-input',
  /** A snapshot dump (snapshot-restore's input) that does not follow docs/snapshot-dump.md. */
  'bad-dump': 'bad-input',
  /** A snapshot-export stream (snapshot-apply's input) that does not follow docs/snapshot-export.md, or does not fit the target. */
  'bad-stream': 'bad-input',
  /** An export stream found broken after some of its records were written (snapshot-apply --no-verify-first). */
  'apply-stopped': 'io',
  /** An I/O on a snapshot that is (or has just become) invalid. */
  invalid: 'io',
  /** A whole-snapshot read (an export) of an invalid snapshot: refused before anything is read. */
  'snapshot-invalid': 'bad-input',
  /** A merge asked of an invalid snapshot: refused before anything is written. */
  'merge-invalid': 'bad-input',
  overflow: 'io',
  'no-space': 'io',
  'same-device': 'bad-input',
  'out-of-range': 'bad-input',
  misaligned: 'bad-input',
  'copy-failed': 'io',
  'metadata-io': 'io',
  'merge-io': 'io',
  'transient-merge': 'bad-input',
  aborted: 'interrupted',
} as const satisfies Record<string, ErrorKind>;

export interface SnapshotErrorDetail {
  path?: string;
  sector?: number;
  sectors?: number;
}

export class SnapshotError extends DmtoolError<SnapshotErrorReason> {
  constructor(code: string, reason: SnapshotErrorReason, message: string, detail: SnapshotErrorDetail = {}) {
    const where =
      detail.path !== undefined
        ? detail.sector !== undefined
          ? ` (${detail.path} sectors ${detail.sector}..${detail.sector + Math.max(1, detail.sectors ?? 1) - 1})`
          : ` (${detail.path})`
        : '';
    super(SNAPSHOT_ERROR_KINDS[reason], reason, code, `${code}: ${message}${where}`, detail);
    this.name = 'SnapshotError';
  }
}
