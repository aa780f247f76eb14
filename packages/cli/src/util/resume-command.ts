/**
 * The command line that resumes this one: `dmtool` and the same arguments,
 * with `--resume` added if it was not given, each quoted for a POSIX shell
 * where it needs to be, so it can be pasted as it is.
 */
export function resumeCommandLine(args: readonly string[]): string {
  const withResume = args.includes('--resume') ? args : [...args, '--resume'];
  return ['dmtool', ...withResume].map(shellQuote).join(' ');
}

export function shellQuote(arg: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(arg)) return arg;
  return `'${arg.replace(/'/g, `'\\''`)}'`;
}
