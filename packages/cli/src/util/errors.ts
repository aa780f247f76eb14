import { DmtoolError, ErrorKind } from '@dmtool/devices';
import { ZodError } from 'zod';
import { EXIT_CODE_OF_KIND, ExitCodeValue } from './exit-codes';
import { interruptExitCode } from './interrupt';

/** The rules the CLI itself enforces: the kind of each, and the errno name it is reported under. */
const REASONS = {
  /** Bad options or arguments. */
  usage: { kind: 'bad-input', code: 'EINVAL' },
  'same-device': { kind: 'bad-input', code: 'EINVAL' },
  'partial-sector': { kind: 'bad-input', code: 'EINVAL' },
  'out-of-range': { kind: 'bad-input', code: 'ERANGE' },
  'size-mismatch': { kind: 'bad-input', code: 'EINVAL' },
  /** The target already holds a format that only --force may overwrite. */
  'format-present': { kind: 'bad-input', code: 'EEXIST' },
  'invalid-snapshot': { kind: 'bad-input', code: 'EINVAL' },
  'would-overflow': { kind: 'bad-input', code: 'ENOSPC' },
  /** The --input data cannot be used as it is (missing, too long, not whole sectors). */
  'bad-input-data': { kind: 'bad-input', code: 'EINVAL' },
  /** The --input file changed size while it was being written out. */
  'input-changed': { kind: 'io', code: 'EIO' },
  /** A piped stream cannot be spooled: its folder has not the room. */
  'no-spool-space': { kind: 'bad-input', code: 'ENOSPC' },
  /** stdout could not be written. */
  'output-failed': { kind: 'io', code: 'EIO' },
  /** A copy map (--map) that does not parse. */
  'bad-map': { kind: 'bad-input', code: 'EINVAL' },
  /** A copy map that records another copy than the one asked for. */
  'map-mismatch': { kind: 'bad-input', code: 'EINVAL' },
  /** dmtool ctl: nobody listens on the control socket. */
  'no-server': { kind: 'device-refused', code: 'ECONNREFUSED' },
  /** dmtool ctl: the server refused the request (a device in use). */
  'ctl-refused': { kind: 'device-refused', code: 'EBUSY' },
  /** dmtool ctl: the request failed in the server (an I/O error). */
  'ctl-failed': { kind: 'io', code: 'EIO' },
  /** The merge of an LVM snapshot is done and durable, but its VG metadata could not be written. */
  'metadata-after-merge': { kind: 'io', code: 'EIO' },
  interrupted: { kind: 'interrupted', code: 'ECANCELED' },
} as const satisfies Record<string, { kind: ErrorKind; code: string }>;

export type CliErrorReason = keyof typeof REASONS;

/** An error the CLI itself reports as one line. */
export class CliError extends DmtoolError<CliErrorReason> {
  constructor(reason: CliErrorReason, message: string) {
    super(REASONS[reason].kind, reason, REASONS[reason].code, message);
    this.name = 'CliError';
  }
}

/** The kind of anything a command may throw: a DmtoolError says its own, a ZodError is bad input, anything else an I/O failure. */
export function kindOf(e: unknown): ErrorKind {
  if (e instanceof DmtoolError) return e.kind;
  if (e instanceof ZodError) return 'bad-input';
  return 'io';
}

export function exitCodeFor(e: unknown): ExitCodeValue {
  const kind = kindOf(e);
  return kind === 'interrupted' ? interruptExitCode() : EXIT_CODE_OF_KIND[kind];
}

/** One line, no stack trace. */
export function errorLine(e: unknown): string {
  if (e instanceof ZodError) {
    return e.issues.map((i) => `${i.path.length ? `--${i.path.join('.')}: ` : ''}${i.message}`).join('; ');
  }
  if (e instanceof Error) return e.message.split('\n')[0];
  return String(e);
}
