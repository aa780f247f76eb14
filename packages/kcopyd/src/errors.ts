/** A request kcopyd refuses before any I/O (bad region, overlap, bad option). */
export class KcopydError extends Error {
  readonly code: string;
  constructor(message: string, code = 'EINVAL') {
    super(message);
    this.name = 'KcopydError';
    this.code = code;
  }
}

/** Raised by a job whose AbortSignal fired; in-flight sub-jobs finished first. */
export class AbortError extends Error {
  readonly code = 'ABORT_ERR';
  /** Sectors whose writes completed before the job stopped. */
  readonly sectorsDone: number;
  constructor(sectorsDone: number) {
    super('copy aborted');
    this.name = 'AbortError';
    this.sectorsDone = sectorsDone;
  }
}
