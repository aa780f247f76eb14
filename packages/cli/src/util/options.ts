import { z } from 'zod';
import { CliError } from './errors';
import { sectorsSchema } from './units';

/** An option's name on the command line: `dryRun` is `dry-run`. */
export function kebabCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/**
 * Validate yargs' argv into a typed options object; any problem is one
 * CliError line, naming the option as it is typed (`--region-size`) or the
 * positional argument as --help shows it (`<legs>`).
 */
export function parseOptions<S extends z.ZodTypeAny>(schema: S, argv: unknown, positionals: readonly string[] = []): z.infer<S> {
  const r = schema.safeParse(argv);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const key = issue.path.length ? String(issue.path[0]) : undefined;
  const name = key === undefined ? 'options' : positionals.includes(key) ? `<${key}>` : `--${kebabCase(key)}`;
  throw new CliError('usage', `${name}: ${issue.message}`);
}

/**
 * One option, declared once: what yargs parses and shows in --help, and the
 * schema its value must pass. The name is the camelCase key it is declared
 * under; on the command line it is kebab-case (`dryRun` is `--dry-run`).
 */
export interface OptionSpec<S extends z.ZodTypeAny = z.ZodTypeAny> {
  schema: S;
  describe: string;
  type: 'string' | 'boolean' | 'number';
  alias?: string;
  /** Shown in --help and given by yargs when the option is absent: the schema sees it like a typed value. */
  default?: string | number | boolean;
  /** yargs refuses the command without it. */
  required?: true;
  /** Repeatable: every occurrence is kept, in order. */
  array?: true;
  /** Values each occurrence takes (yargs nargs). */
  nargs?: number;
}

/** One positional argument, declared once (its name is the key, as in the command string). */
export interface PositionalSpec<S extends z.ZodTypeAny = z.ZodTypeAny> {
  schema: S;
  describe: string;
  array?: true;
}

/** A boolean option, off unless given. */
export function flag(describe: string): OptionSpec<z.ZodBoolean> {
  return { schema: z.boolean(), type: 'boolean', describe, default: false };
}

/** Sectors, or bytes with a k/M/G suffix: with a default shown in --help, or required. */
export function sectorsOption(describe: string, given: { default: string } | { required: true }): OptionSpec<typeof sectorsSchema> {
  return { schema: sectorsSchema, type: 'string', describe, ...given };
}

/** Sectors, or bytes with a k/M/G suffix; absent unless given. */
export function optionalSectorsOption(describe: string): OptionSpec<z.ZodOptional<typeof sectorsSchema>> {
  return { schema: sectorsSchema.optional(), type: 'string', describe };
}

/** --json, as most commands have it. */
export const jsonOption = { json: flag('print the result as JSON') };

/** --progress[=FD] and --quiet, for commands that show progress (docs/json.md#progress-lines). */
export const progressOptions = {
  progress: {
    schema: z.string().regex(/^\d*$/, 'takes a file descriptor number: --progress or --progress=FD').optional(),
    type: 'string',
    describe: 'progress on stderr, or on file descriptor FD (--progress=FD): a bar on a terminal, else lines "progress DONE TOTAL PERCENT"',
  },
  quiet: flag('no progress bar and no progress lines; only errors'),
} satisfies Record<string, OptionSpec>;
