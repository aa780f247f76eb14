import type { ErrorKind } from '@dmtool/devices';

/** Exit codes of every dmtool command (documented in the README and in --help). */
export const ExitCode = {
  OK: 0,
  /** An I/O error during the operation; what was done is reported. */
  IO_ERROR: 1,
  /** Bad options or invalid on-disk input; refused before anything was written. */
  USAGE: 2,
  /** A device could not be opened as asked: missing, busy/mounted, locked by another command, read-only, no permission. */
  DEVICE: 3,
  /** mirror-check: the legs could not be compared (an I/O error), as cmp's trouble. */
  CHECK_TROUBLE: 4,
  /** Interrupted by SIGINT after in-flight writes completed and were flushed. */
  INTERRUPTED: 130,
  /** The same, by SIGTERM. */
  TERMINATED: 143,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

/** The one place a kind of failure becomes an exit code. */
export const EXIT_CODE_OF_KIND: Record<ErrorKind, ExitCodeValue> = {
  io: ExitCode.IO_ERROR,
  'bad-input': ExitCode.USAGE,
  'device-refused': ExitCode.DEVICE,
  interrupted: ExitCode.INTERRUPTED,
};

export const EXIT_CODES_HELP =
  'Exit codes: 0 ok, 1 I/O error during the operation, 2 bad input (nothing written), ' +
  '3 device refused (missing, busy/mounted, locked, read-only), 130 interrupted by SIGINT, 143 by SIGTERM.';
