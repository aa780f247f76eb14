import { errorLine, exitCodeFor } from './errors';
import { ExitCodeValue } from './exit-codes';

/** One line on stderr ("dmtool: <message>") for a failure, never a stack trace; its exit code. */
export function reportFailure(e: unknown): ExitCodeValue {
  process.stderr.write(`dmtool: ${errorLine(e)}\n`);
  if (process.env.DMTOOL_DEBUG && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
  return exitCodeFor(e);
}

/** Run a command's work; an error ends it as reportFailure says. */
export async function runCommand(work: () => Promise<ExitCodeValue>): Promise<ExitCodeValue> {
  try {
    return await work();
  } catch (e) {
    return reportFailure(e);
  }
}
