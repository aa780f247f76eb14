import { z } from 'zod';
import { CliError } from './errors';

/** Validate yargs' argv into a typed options object; any problem is one CliError line. */
export function parseOptions<S extends z.ZodTypeAny>(schema: S, argv: unknown): z.infer<S> {
  const r = schema.safeParse(argv);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const name = issue.path.length ? `--${String(issue.path[0])}` : 'options';
  throw new CliError('usage', `${name}: ${issue.message}`);
}

/** Options every command shares. */
export const commonOptions = {
  json: z.boolean().default(false),
};
