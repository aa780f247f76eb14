import * as inspector from 'inspector';

/**
 * Node's inspector runs any code sent to it over its port; in a root process
 * that hands root to every local user. If it is open (NODE_OPTIONS=--inspect
 * when the JavaScript entry is run directly, or a SIGUSR1 that arrived before
 * the CLI took that signal over), close it and report that dmtool must not run.
 */
export function refuseOpenInspector(): boolean {
  if (inspector.url() === undefined) return false;
  inspector.close();
  process.stderr.write(
    'dmtool: refusing to run: the Node.js inspector was open (NODE_OPTIONS=--inspect, or SIGUSR1 while starting) and runs any code sent to it\n',
  );
  return true;
}
