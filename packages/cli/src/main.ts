import yargs from 'yargs';
import { COMMANDS } from './commands';
import type { CliErrorReason } from './util/errors';
import { ExitCode, ExitCodeValue, EXIT_CODES_HELP } from './util/exit-codes';
import { armFaults, configureNbd } from './util/open-device';
import type { FailureContext } from './util/run';
import { unknownCommandMessage } from './util/suggest';

/** Run the CLI with these arguments; resolves to the process exit code. */
export async function main(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  try {
    armFaults(env.DMTOOL_FAULTS);
  } catch (e) {
    process.stderr.write(`dmtool: DMTOOL_FAULTS: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}\n`);
    return ExitCode.USAGE;
  }
  try {
    configureNbd(env);
  } catch (e) {
    process.stderr.write(`dmtool: ${e instanceof Error ? e.message : String(e)}\n`);
    return ExitCode.USAGE;
  }
  const names = [...COMMANDS.map((c) => c.command.split(' ')[0]), 'completion'];
  const typed = args[0];
  if (typed !== undefined && !typed.startsWith('-') && !names.includes(typed)) {
    return reportFailure(cliError('usage', unknownCommandMessage(typed, names)), { json: args.includes('--json') });
  }
  let selected: Promise<ExitCodeValue> | undefined;
  const top = yargs(args.map(standaloneProgress))
    .scriptName('dmtool')
    .usage(
      "$0 <command> [options]\n\nLinux device-mapper copy engine (kcopyd), snapshot COW merge and mirror resync, in user space, on the kernel's on-disk formats.",
    );
  // The selected command's handler hands its result back here, to be awaited after parsing.
  const parser = COMMANDS.reduce(
    (y, c) =>
      y.command({
        command: c.command,
        describe: c.describe,
        builder: (y) => c.load().builder(y),
        handler: async (argv) => {
          selected = c.load().handler(argv);
          await selected;
        },
      }),
    top,
  )
    .completion('completion', 'print a bash/zsh completion script: dmtool completion >> ~/.bashrc')
    .demandCommand(1, 'name a command (dmtool --help lists them)')
    .strict()
    .parserConfiguration({ 'camel-case-expansion': true })
    .epilog(
      `Sectors are 512 bytes everywhere. Block devices are opened with O_EXCL: a mounted or busy device is refused.\n${EXIT_CODES_HELP}`,
    )
    .help()
    .alias('help', 'h')
    .version()
    // Never wrapped: an example or a table line broken by the help text could not be copied.
    .wrap(null)
    .fail((msg, err) => {
      // Throwing stops yargs before any command handler runs.
      throw err ?? cliError('usage', msg);
    });
  try {
    await parser.parseAsync();
  } catch (e) {
    // Refused before a command ran (unknown option or command): --json still gets its document.
    const command = args.find((a) => !a.startsWith('-'));
    return reportFailure(e, { json: args.includes('--json'), command, dryRun: args.includes('--dry-run') });
  }
  return (await selected) ?? ExitCode.OK;
}

/*
 * Reporting a failure needs the error classes, and with them @dmtool/devices
 * and zod: loaded when there is a failure to report, so that --help,
 * --version and the selected command's own module are all a run loads.
 */
function reportFailure(e: unknown, ctx: FailureContext): ExitCodeValue {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('./util/run') as typeof import('./util/run')).reportFailure(e, ctx);
}

function cliError(reason: CliErrorReason, message: string): Error {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return new (require('./util/errors') as typeof import('./util/errors')).CliError(reason, message);
}

/** A bare --progress never takes the next argument as its FD (only --progress=FD does), as with nbdcopy. */
function standaloneProgress(arg: string): string {
  return arg === '--progress' ? '--progress=' : arg;
}
