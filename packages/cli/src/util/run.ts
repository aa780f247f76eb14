import { errorLine, exitCodeFor } from './errors';
import { ExitCode, ExitCodeValue } from './exit-codes';

let lastExitCode: ExitCodeValue = ExitCode.OK;

/**
 * Wrap a command handler: errors become one line on stderr
 * ("dmtool: <message>") and an exit code; never a stack trace.
 */
export function runCommand<A>(handler: (argv: A) => Promise<ExitCodeValue | void>): (argv: A) => Promise<void> {
  return async (argv: A) => {
    try {
      lastExitCode = (await handler(argv)) ?? ExitCode.OK;
    } catch (e) {
      process.stderr.write(`dmtool: ${errorLine(e)}\n`);
      if (process.env.DMTOOL_DEBUG && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
      lastExitCode = exitCodeFor(e);
    }
  };
}

export function takeExitCode(): ExitCodeValue {
  const code = lastExitCode;
  lastExitCode = ExitCode.OK;
  return code;
}
