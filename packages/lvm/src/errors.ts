import { DmtoolError, ErrorKind } from '@dmtool/devices';

/** The kind (and so the exit code) of each LVM metadata error reason. */
export const LVM_ERROR_KINDS = {
  /** No `LABELONE` label in sectors 0-3: not a physical volume. */
  'no-label': 'bad-input',
  'bad-label': 'bad-input',
  'label-crc': 'bad-input',
  'bad-pv-header': 'bad-input',
  'bad-mda-header': 'bad-input',
  'mda-crc': 'bad-input',
  'bad-text-location': 'bad-input',
  'text-crc': 'bad-input',
  /** The metadata text breaks the grammar (the message gives line and column). */
  syntax: 'bad-input',
  /** The text parses but a VG, PV, LV or segment field is missing or wrong. */
  'bad-metadata': 'bad-input',
  'unknown-segment-type': 'bad-input',
  /** No metadata area on any given PV holds metadata. */
  'no-metadata': 'bad-input',
  'missing-pv': 'bad-input',
  'unknown-vg': 'bad-input',
  'unknown-lv': 'bad-input',
  /** The LV is of a kind that cannot be opened as a device yet. */
  'unsupported-lv': 'bad-input',
  'bad-operand': 'bad-input',
  /** A snapshot command was given an LV that is not a snapshot. */
  'not-a-snapshot': 'bad-input',
  /** The merged VG metadata cannot be written: no room in a metadata area, or an area changed since it was read. */
  'metadata-write': 'bad-input',
  /** lvm2 (or another dmtool) holds the VG's lock. */
  'vg-locked': 'device-refused',
} as const satisfies Record<string, ErrorKind>;

export type LvmErrorReason = keyof typeof LVM_ERROR_KINDS;

/**
 * An LVM2 metadata error: `reason` names the broken rule and decides the
 * kind; `path` and the sector range say where on which PV.
 */
export class LvmError extends DmtoolError<LvmErrorReason> {
  constructor(reason: LvmErrorReason, message: string, place: { path?: string; sector?: number; sectors?: number } = {}) {
    const where =
      place.path === undefined
        ? ''
        : place.sector === undefined
          ? ` (${place.path})`
          : ` (${place.path} sectors ${place.sector}..${place.sector + Math.max(1, place.sectors ?? 1) - 1})`;
    super(
      LVM_ERROR_KINDS[reason],
      reason,
      reason === 'missing-pv' || reason === 'no-label' ? 'ENXIO' : reason === 'vg-locked' ? 'EWOULDBLOCK' : 'EINVAL',
      `${message}${where}`,
      place,
    );
    this.name = 'LvmError';
  }
}
