import { errorJson } from '../json/error-json';
import { errorLine, exitCodeFor } from './errors';
import { ExitCodeValue } from './exit-codes';
import { printJson } from './output';

/** Where a failure is reported: with --json, also as one document on stdout. */
export interface FailureContext {
  json: boolean;
  command?: string;
  dryRun?: boolean;
}

/**
 * One line on stderr ("dmtool: <message>") for a failure, never a stack
 * trace, and with --json one document `{command, ok: false, dryRun, error}`
 * on stdout; its exit code.
 */
export function reportFailure(e: unknown, ctx: FailureContext = { json: false }): ExitCodeValue {
  process.stderr.write(`dmtool: ${errorLine(e)}\n`);
  if (process.env.DMTOOL_DEBUG && e instanceof Error && e.stack) process.stderr.write(`${e.stack}\n`);
  if (ctx.json) printJson({ command: ctx.command ?? null, ok: false, dryRun: ctx.dryRun === true, error: errorJson(e) });
  return exitCodeFor(e);
}

/** Run a command's work; an error ends it as reportFailure says. */
export async function runCommand(work: () => Promise<ExitCodeValue>, ctx?: FailureContext): Promise<ExitCodeValue> {
  try {
    return await work();
  } catch (e) {
    return reportFailure(e, ctx);
  }
}
