/** Job flags, with the kernel's bit numbers (include/linux/dm-kcopyd.h). */
export const KcopydFlags = {
  /** Keep going after read/write errors; errors are still reported. */
  IGNORE_ERROR: 1 << 1,
  /** Issue destination writes in ascending offset order. Turns IGNORE_ERROR off. */
  WRITE_SEQ: 1 << 2,
} as const;

export const MAX_DESTINATIONS = 8;
