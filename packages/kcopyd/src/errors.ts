import { DmtoolError } from '@dmtool/devices';

/** Which rule a refused kcopyd request broke. */
export type KcopydErrorReason =
  | 'bad-count'
  | 'bad-sector'
  | 'out-of-range'
  | 'misaligned'
  | 'closed'
  | 'read-only'
  | 'no-destination'
  | 'too-many-destinations'
  | 'overlap'
  | 'bad-option'
  | 'destroyed';

/** A request kcopyd refuses before any I/O (bad region, overlap, bad option). */
export class KcopydError extends DmtoolError<KcopydErrorReason> {
  constructor(reason: KcopydErrorReason, message: string, code = 'EINVAL') {
    super('bad-input', reason, code, message);
    this.name = 'KcopydError';
  }
}

/** Raised by a job whose AbortSignal fired; in-flight sub-jobs finished first. */
export class AbortError extends DmtoolError<'aborted'> {
  /** Sectors whose writes completed before the job stopped. */
  readonly sectorsDone: number;
  constructor(sectorsDone: number) {
    super('interrupted', 'aborted', 'ABORT_ERR', 'copy aborted');
    this.name = 'AbortError';
    this.sectorsDone = sectorsDone;
  }
}
