import { AbortError, DeviceError, KcopydError } from '@dmtool/kcopyd';
import { ZodError } from 'zod';
import { ExitCode, ExitCodeValue } from './exit-codes';

/** An error the CLI reports as one line with a chosen exit code. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: ExitCodeValue = ExitCode.USAGE,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

const DEVICE_OPEN_CODES = new Set(['ENOENT', 'EBUSY', 'EWOULDBLOCK', 'EAGAIN', 'EROFS', 'EACCES', 'EPERM', 'ENODEV', 'ENXIO', 'ELOOP', 'ENOTDIR', 'ENAMETOOLONG']);

/** Errors from the packages that mean "bad input, nothing was written". */
function isInputError(e: unknown): e is Error & { code: string } {
  if (!(e instanceof Error)) return false;
  const code = (e as { code?: unknown }).code;
  return typeof code === 'string' && /^(EINVAL|ERANGE|EBADMSG|ENXIO)$/.test(code);
}

export function exitCodeFor(e: unknown): ExitCodeValue {
  if (e instanceof CliError) return e.exitCode;
  if (e instanceof ZodError) return ExitCode.USAGE;
  if (e instanceof AbortError || (e instanceof Error && (e as { code?: unknown }).code === 'ABORT_ERR')) return ExitCode.INTERRUPTED;
  if (e instanceof DeviceError) return e.op === 'open' && DEVICE_OPEN_CODES.has(e.code) ? ExitCode.DEVICE : ExitCode.IO_ERROR;
  if (e instanceof KcopydError) return ExitCode.USAGE;
  if (isInputError(e)) return ExitCode.USAGE;
  return ExitCode.IO_ERROR;
}

/** One line, no stack trace. */
export function errorLine(e: unknown): string {
  if (e instanceof ZodError) {
    return e.issues.map((i) => `${i.path.length ? `--${i.path.join('.')}: ` : ''}${i.message}`).join('; ');
  }
  if (e instanceof Error) return e.message.split('\n')[0];
  return String(e);
}
