/**
 * SIGINT and SIGTERM, as every command with long work handles them: the
 * work stops cleanly (in-flight writes finish and are flushed), one message
 * says what was done and how to go on, and the exit code says which signal
 * it was (128 + its number, as a shell reports a process it killed).
 */
type InterruptSignalName = 'SIGINT' | 'SIGTERM';

const EXIT_CODE_OF_SIGNAL: Record<InterruptSignalName, 130 | 143> = { SIGINT: 130, SIGTERM: 143 };

/** The first interrupting signal this process received. */
let received: InterruptSignalName | undefined;

/** An AbortSignal fired by SIGINT/SIGTERM, so long work stops cleanly; its reason is the signal's name. */
export function interruptSignal(): { signal: AbortSignal; dispose(): void } {
  const ctl = new AbortController();
  const onSignal = (sig: InterruptSignalName) => {
    received ??= sig;
    ctl.abort(sig);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  return {
    signal: ctl.signal,
    dispose() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

/** 143 after SIGTERM, 130 after SIGINT (or an interrupt without a signal). */
export function interruptExitCode(): 130 | 143 {
  return EXIT_CODE_OF_SIGNAL[received ?? 'SIGINT'];
}

/**
 * The one interrupt message of every command:
 * `interrupted by SIGINT: <what was done>; run the command again to <goal>`,
 * or, when going on takes another command line, `...; to <goal>, run: <command>`.
 */
export function interruptedMessage(state: string, goal: string, command?: string): string {
  const next = command === undefined ? `run the command again to ${goal}` : `to ${goal}, run: ${command}`;
  return `interrupted by ${received ?? 'SIGINT'}: ${state}; ${next}`;
}
