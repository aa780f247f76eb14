import type { Argv, Options, PositionalOptions } from 'yargs';
import { z } from 'zod';
import { ExitCodeValue } from './exit-codes';
import { kebabCase, OptionSpec, parseOptions, PositionalSpec } from './options';
import { FailureContext, runCommand } from './run';

export type OptionTable = Record<string, OptionSpec>;
export type PositionalTable = Record<string, PositionalSpec>;

type Shape<T extends Record<string, { schema: z.ZodTypeAny }>> = { [K in keyof T]: T[K]['schema'] };

/** The typed arguments of a command: what its positionals' and options' schemas produce. */
export type ArgsOf<P extends PositionalTable, O extends OptionTable> = z.infer<z.ZodObject<Shape<P> & Shape<O>>>;

export interface CommandSpec<P extends PositionalTable, O extends OptionTable> {
  /** The yargs command string, e.g. `copy <source> <destinations..>`. */
  command: string;
  describe: string;
  positionals: P;
  options: O;
  examples?: [string, string][];
  epilog?: string;
  /** The work, on validated arguments; resolves to the exit code. */
  run(args: ArgsOf<P, O>): Promise<ExitCodeValue>;
}

/** A command as main() registers it with yargs and runs it once selected. */
export interface DmtoolCommand {
  command: string;
  describe: string;
  builder(y: Argv): Argv;
  /** Validate yargs' argv and run; an error becomes one line on stderr and its exit code. */
  handler(argv: unknown): Promise<ExitCodeValue>;
}

function yargsOption(spec: OptionSpec): Options {
  const o: Options = { type: spec.type, describe: spec.describe };
  if (spec.alias !== undefined) o.alias = spec.alias;
  if (spec.default !== undefined) o.default = spec.default;
  if (spec.required) o.demandOption = true;
  if (spec.array) o.array = true;
  if (spec.nargs !== undefined) o.nargs = spec.nargs;
  return o;
}

function yargsPositional(spec: PositionalSpec): PositionalOptions {
  return spec.array ? { type: 'string', array: true, describe: spec.describe } : { type: 'string', describe: spec.describe };
}

/** The zod object of a command: positionals first, then options, in declaration order. */
export function argsSchema<P extends PositionalTable, O extends OptionTable>(positionals: P, options: O): z.ZodObject<Shape<P> & Shape<O>> {
  const shape: Record<string, z.ZodTypeAny> = {};
  for (const [name, spec] of [...Object.entries(positionals), ...Object.entries(options)]) shape[name] = spec.schema;
  return z.object(shape as Shape<P> & Shape<O>);
}

export function defineCommand<P extends PositionalTable, O extends OptionTable>(spec: CommandSpec<P, O>): DmtoolCommand {
  const schema = argsSchema(spec.positionals, spec.options);
  return {
    command: spec.command,
    describe: spec.describe,
    builder(y: Argv): Argv {
      let b = y;
      for (const [name, p] of Object.entries(spec.positionals)) b = b.positional(name, yargsPositional(p));
      for (const [name, o] of Object.entries(spec.options)) b = b.option(kebabCase(name), yargsOption(o));
      const epilog = [examplesText(spec.examples ?? []), spec.epilog].filter((t) => t).join('\n');
      return epilog === '' ? b : b.epilog(epilog);
    },
    handler: (argv) =>
      runCommand(() => spec.run(parseOptions(schema, argv, Object.keys(spec.positionals))), failureContext(spec.command, argv)),
  };
}

/** How a failure of this command is reported, from the raw arguments (they may not have passed validation). */
function failureContext(command: string, argv: unknown): FailureContext {
  const a = (argv ?? {}) as { json?: unknown; dryRun?: unknown };
  return { json: a.json === true, command: command.split(' ')[0], dryRun: a.dryRun === true };
}

/**
 * Examples as a section of the epilog: each command line whole on its own
 * line (help is never wrapped, so it can be copied), its description below.
 */
function examplesText(examples: [string, string][]): string {
  if (examples.length === 0) return '';
  return `Examples:\n${examples.map(([command, describe]) => `  ${command}\n      ${describe}\n`).join('')}`;
}
