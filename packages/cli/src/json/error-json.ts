import { DmtoolError } from '@dmtool/devices';
import { z } from 'zod';
import { errorLine, kindOf } from '../util/errors';

/** One error as every --json document gives it (docs/json.md#errors). */
export const errorJsonSchema = z
  .object({
    /** errno-style name: EIO, EINVAL, EBUSY, ECANCELED, ... */
    code: z.string(),
    kind: z.enum(['io', 'bad-input', 'device-refused', 'interrupted']),
    /** The rule or failure, a stable name (e.g. `out-of-range`, `copy-failed`). */
    reason: z.string(),
    path: z.string().nullable(),
    sector: z.number().int().nonnegative().nullable(),
    sectors: z.number().int().nonnegative().nullable(),
    message: z.string(),
  })
  .strict();

export type ErrorJson = z.infer<typeof errorJsonSchema>;

export function errorJson(e: unknown): ErrorJson {
  const kind = kindOf(e);
  if (e instanceof DmtoolError) {
    return {
      code: e.code,
      kind,
      reason: e.reason,
      path: e.path ?? null,
      sector: e.sector ?? null,
      sectors: e.sectors ?? null,
      message: errorLine(e),
    };
  }
  const code = e instanceof Error && typeof (e as NodeJS.ErrnoException).code === 'string' ? (e as NodeJS.ErrnoException).code! : null;
  return {
    code: code ?? (kind === 'bad-input' ? 'EINVAL' : 'EIO'),
    kind,
    reason: kind === 'bad-input' ? 'usage' : 'unexpected',
    path: null,
    sector: null,
    sectors: null,
    message: errorLine(e),
  };
}
