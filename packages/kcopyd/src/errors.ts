import { DeviceError, DmtoolError, SECTOR_BYTES } from '@dmtool/devices';
import type { CopyResult } from './job';

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
  /** The signal's reason (`signal.reason`): what `controller.abort(reason)` was given. */
  declare readonly cause: unknown;
  constructor(sectorsDone: number, cause?: unknown) {
    super('interrupted', 'aborted', 'ABORT_ERR', 'copy aborted');
    this.name = 'AbortError';
    this.sectorsDone = sectorsDone;
    Object.defineProperty(this, 'cause', { value: cause, enumerable: false, writable: false });
  }
}

/** A range a job could not read or write. */
export interface FailedRange {
  op: 'read' | 'write';
  path: string;
  sector: number;
  sectors: number;
}

/**
 * A copy or zero job met I/O errors (without IGNORE_ERROR): the promise
 * form rejects with this, carrying the kernel's summary. The callback form
 * (copyNotify) still reports (readErr, writeErr) as the kernel does.
 */
export class KcopydIoError extends DmtoolError<'read-failed' | 'write-failed'> {
  /** The source could not be read (somewhere in the range). */
  readonly readErr: boolean;
  /** Bit i set: destination i failed. */
  readonly writeErr: number;
  /** Sectors written to every destination before the job stopped (not necessarily a prefix). */
  readonly sectorsDone: number;
  /** The errors behind readErr and writeErr, in the order they happened. */
  readonly errors: DeviceError[];
  /** Where each error happened. */
  readonly failedRanges: FailedRange[];
  constructor(readonly result: CopyResult) {
    const first = result.errors[0];
    super(
      'io',
      result.readErr ? 'read-failed' : 'write-failed',
      first?.code ?? 'EIO',
      `copy failed after ${result.sectorsDone} sectors (readErr=${result.readErr}, writeErr=${result.writeErr}): ${first?.message ?? 'I/O error'}`,
      { path: first?.path, sector: first?.sector, sectors: first?.sectors },
    );
    this.name = 'KcopydIoError';
    this.readErr = result.readErr;
    this.writeErr = result.writeErr;
    this.sectorsDone = result.sectorsDone;
    this.errors = result.errors;
    this.failedRanges = result.errors.map((e) => ({
      op: e.op === 'read' ? 'read' : 'write',
      path: e.path,
      sector: e.sector ?? Math.floor(e.byteOffset / SECTOR_BYTES),
      sectors: e.sectors ?? 0,
    }));
  }
}
