/**
 * Named steps in the engines (e.g. `snapshot-merge:origin-flushed`). They
 * do nothing unless a test harness installs a handler (a fault plan's
 * `crashAt` does), so crash tests can stop a process at an exact step.
 */
export type CrashPointHandler = (point: string) => void;

let handler: CrashPointHandler | undefined;

/** Mark a named step. */
export function crashPoint(point: string): void {
  handler?.(point);
}

/** Install (or with undefined, remove) the process's crash-point handler. */
export function onCrashPoint(h: CrashPointHandler | undefined): void {
  handler = h;
}
