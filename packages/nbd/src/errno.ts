import { NBD_EINVAL, NBD_EIO, NBD_ENOMEM, NBD_ENOSPC, NBD_EOVERFLOW, NBD_EPERM, NBD_ESHUTDOWN } from './constants';

/**
 * The protocol allows only a few error values; a device error is mapped by
 * its errno name (DeviceError and the engines' errors carry one as `code`).
 * NBD_ENOTSUP is kept for fast-zero refusals, so it is never mapped to.
 */
const BY_CODE: Record<string, number> = {
  EPERM: NBD_EPERM,
  EACCES: NBD_EPERM,
  EROFS: NBD_EPERM,
  ENOSPC: NBD_ENOSPC,
  EDQUOT: NBD_ENOSPC,
  EFBIG: NBD_ENOSPC,
  EINVAL: NBD_EINVAL,
  ERANGE: NBD_EINVAL,
  ENOMEM: NBD_ENOMEM,
  EOVERFLOW: NBD_EOVERFLOW,
  ESHUTDOWN: NBD_ESHUTDOWN,
};

export function nbdErrorOf(e: unknown): number {
  const code = e instanceof Error ? (e as { code?: unknown }).code : undefined;
  return (typeof code === 'string' && BY_CODE[code]) || NBD_EIO;
}

export function isUnsupported(e: unknown): boolean {
  const code = e instanceof Error ? (e as { code?: unknown }).code : undefined;
  return code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'ENOSYS' || code === 'ENOTTY';
}
