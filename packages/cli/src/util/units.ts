import { z } from 'zod';

const SUFFIX: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/** "4096", "64k", "1M", "2G", "1.5G" → bytes. */
export function parseBytes(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?$/i.exec(text.trim());
  if (!m) throw new Error(`"${text}" is not a size (examples: 4096, 64k, 1M, 2G)`);
  const bytes = Number(m[1]) * SUFFIX[m[2].toLowerCase()];
  if (bytes > Number.MAX_SAFE_INTEGER) throw tooLarge(text);
  if (!Number.isSafeInteger(bytes)) throw new Error(`"${text}" is not a whole number of bytes`);
  return bytes;
}

function tooLarge(text: string): Error {
  return new Error(`${text} is too large: sectors and bytes above 2^53 - 1 cannot be held exactly`);
}

/** A plain number of sectors, refused when a double cannot hold it exactly. */
function exactSectors(text: string): number {
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw tooLarge(text);
  return n;
}

/**
 * A sector count or position: a plain number is in 512-byte sectors (the
 * kernel's unit); a number with a k/M/G suffix is bytes and must be a whole
 * number of sectors.
 */
export const sectorsSchema = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const text = String(v).trim();
  try {
    if (/^\d+$/.test(text)) return exactSectors(text);
    const bytes = parseBytes(text);
    if (bytes % 512 !== 0) throw new Error(`${text} is not a whole number of 512-byte sectors`);
    return bytes / 512;
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
    return z.NEVER;
  }
});

/** A rate such as "50M" (bytes per second). */
export const rateSchema = z.union([z.number(), z.string()]).transform((v, ctx) => {
  try {
    const bytes = parseBytes(String(v));
    if (bytes <= 0) throw new Error('rate must be above zero');
    return bytes;
  } catch (e) {
    ctx.addIssue({ code: z.ZodIssueCode.custom, message: (e as Error).message });
    return z.NEVER;
  }
});

/** A --rate limit: a rate (see rateSchema) no slower than the slowest rate kcopyd's limiter paces. */
export const rateLimitSchema = rateSchema.superRefine((bytes, ctx) => {
  // Required here, once a rate is given: a command without one (ctl) need not load kcopyd and the native addon.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const { RateLimiter } = require('@dmtool/kcopyd') as typeof import('@dmtool/kcopyd');
  if (bytes < RateLimiter.MIN_BYTES_PER_SECOND) {
    ctx.addIssue({
      code: z.ZodIssueCode.custom,
      message: `${bytes} bytes per second is below the slowest rate dmtool paces, 4k (${RateLimiter.MIN_BYTES_PER_SECOND} bytes per second)`,
    });
  }
});

/** A throttle: the percent of time copy I/O may be in flight. */
export const throttleSchema = z.number().int().min(1).max(100);

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

/**
 * A rate in the binary units --rate accepts: 40M given is 40 MiB/s, and is
 * shown as "40.0 MiB/s".
 */
export function formatRate(bytes: number, seconds: number): string {
  if (seconds <= 0) return 'n/a';
  return `${formatBytes(bytes / seconds)}/s`;
}

/** "45s", "3m05s", "2h07m": for an ETA. */
export function formatDuration(seconds: number): string {
  const s = Math.ceil(seconds);
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** "1 region", "2 regions", "1 batch", "3 batches". */
export function plural(n: number, noun: string, nouns = /(s|sh|ch|x)$/.test(noun) ? `${noun}es` : `${noun}s`): string {
  return `${n} ${n === 1 ? noun : nouns}`;
}
