import yargs from 'yargs';
import { copyCommand } from './commands/copy';
import { demoCommand } from './commands/demo';
import { mirrorCommands } from './commands/mirror';
import { serveCommand } from './commands/serve';
import { snapshotCommands } from './commands/snapshot';
import { zeroCommand } from './commands/zero';
import { ExitCode, EXIT_CODES_HELP } from './util/exit-codes';
import { armFaults } from './util/open-device';
import { takeExitCode } from './util/run';

/** Run the CLI with these arguments; resolves to the process exit code. */
class UsageError extends Error {}

export async function main(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  try {
    armFaults(env.DMTOOL_FAULTS);
  } catch (e) {
    process.stderr.write(`dmtool: DMTOOL_FAULTS: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}\n`);
    return ExitCode.USAGE;
  }
  const parser = yargs(args)
    .scriptName('dmtool')
    .usage('$0 <command> [options]\n\nLinux device-mapper copy engine (kcopyd), snapshot COW merge and mirror resync, in user space, on the kernel\'s on-disk formats.')
    .command(demoCommand)
    .command(copyCommand)
    .command(zeroCommand)
    .command(snapshotCommands)
    .command(mirrorCommands)
    .command(serveCommand)
    .demandCommand(1, 'name a command (dmtool --help lists them)')
    .strict()
    .recommendCommands()
    .parserConfiguration({ 'camel-case-expansion': true })
    .epilog(`Sectors are 512 bytes everywhere. Block devices are opened with O_EXCL: a mounted or busy device is refused.\n${EXIT_CODES_HELP}`)
    .help()
    .alias('help', 'h')
    .version()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err) => {
      // Throwing stops yargs before any command handler runs.
      throw err ?? new UsageError(msg);
    });
  try {
    await parser.parseAsync();
  } catch (e) {
    process.stderr.write(`dmtool: ${e instanceof Error ? e.message.split('\n')[0] : String(e)}\n`);
    return e instanceof UsageError ? ExitCode.USAGE : ExitCode.IO_ERROR;
  }
  return takeExitCode();
}
