import { DmtoolError, ErrorKind } from '@dmtool/devices';

/** The rule a mirror request, table line or dirty log broke, and its kind. */
/** The kind (and so the exit code) of each mirror error reason. */
export const MIRROR_ERROR_KINDS = {
  'bad-table': 'bad-input',
  'bad-option': 'bad-input',
  'leg-count': 'bad-input',
  'same-device': 'bad-input',
  'leg-size-mismatch': 'bad-input',
  'leg-too-small': 'bad-input',
  'bad-length': 'bad-input',
  misaligned: 'bad-input',
  'bad-region-size': 'bad-input',
  'bad-region-count': 'bad-input',
  'region-count-mismatch': 'bad-input',
  'log-too-small': 'bad-input',
  'log-truncated': 'bad-input',
  'bad-magic': 'bad-input',
  'bad-version': 'bad-input',
  'out-of-range': 'bad-input',
  /** A mirror log dump (mirror-log-restore's input) that does not follow docs/mirror-log-tools.md. */
  'bad-dump': 'bad-input',
  /** A read no leg can serve: the only in-sync copy has failed. */
  'no-leg': 'io',
  aborted: 'interrupted',
} as const satisfies Record<string, ErrorKind>;

export type MirrorErrorReason = keyof typeof MIRROR_ERROR_KINDS;

/**
 * A refusal or failure in dm-mirror: carries an errno-style code, the
 * reason, and where known the device and the sector range, so the CLI can
 * print one line.
 */
export class MirrorError extends DmtoolError<MirrorErrorReason> {
  constructor(code: string, reason: MirrorErrorReason, message: string, where: { path?: string; sector?: number; sectors?: number } = {}) {
    super(MIRROR_ERROR_KINDS[reason], reason, code, message, where);
    this.name = 'MirrorError';
  }
}

/** "sectors 1024..2047" for messages. */
export function sectorRange(sector: number, sectors: number): string {
  return `sectors ${sector}..${sector + sectors - 1}`;
}
