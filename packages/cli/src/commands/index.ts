/* eslint-disable @typescript-eslint/no-require-imports -- each command's module is required only when that command runs */
import type { DmtoolCommand } from '../util/define-command';

/**
 * A command as main() lists it before its module is loaded: the name and
 * description the main --help, completion and suggestions need, and how to
 * load the implementation. Loading every command's module (and with it the
 * NBD, LVM, serve and copy code) would cost each dmtool process most of its
 * start-up, so `load` runs only for the command yargs selects.
 */
export interface CommandEntry {
  /** The yargs command string, as the command's defineCommand declares it. */
  command: string;
  describe: string;
  load(): DmtoolCommand;
}

/** The entry of `command`, found in what `load` returns (a module may define several commands). */
function entry(command: string, describe: string, load: () => DmtoolCommand | DmtoolCommand[]): CommandEntry {
  let loaded: DmtoolCommand | undefined;
  return {
    command,
    describe,
    load() {
      if (loaded) return loaded;
      const defined = load();
      const found = (Array.isArray(defined) ? defined : [defined]).find((c) => c.command === command);
      if (!found) throw new Error(`no command "${command}" in its module (commands/index.ts and the module disagree)`);
      return (loaded = found);
    },
  };
}

const snapshot = (): DmtoolCommand[] => (require('./snapshot') as typeof import('./snapshot')).snapshotCommands;
const snapshotTools = (): DmtoolCommand[] => (require('./snapshot-tools') as typeof import('./snapshot-tools')).snapshotToolCommands;
const snapshotExport = (): DmtoolCommand[] => (require('./snapshot-export') as typeof import('./snapshot-export')).snapshotExportCommands;
const mirror = (): DmtoolCommand[] => (require('./mirror') as typeof import('./mirror')).mirrorCommands;
const mirrorLogTools = (): DmtoolCommand[] => (require('./mirror-log-tools') as typeof import('./mirror-log-tools')).mirrorLogToolCommands;

/**
 * Every dmtool command, in the order --help lists them. `command` and
 * `describe` repeat the module's own (a test checks they match).
 */
export const COMMANDS: CommandEntry[] = [
  entry(
    'demo',
    'Run the whole toolkit on generated images in a temporary folder',
    () => (require('./demo') as typeof import('./demo')).demoCommand,
  ),
  entry(
    'copy <source> <destinations..>',
    'Copy a sector range from one device to up to 8 destinations (kcopyd)',
    () => (require('./copy') as typeof import('./copy')).copyCommand,
  ),
  entry(
    'zero <destinations..>',
    'Zero a sector range on one or more devices (kcopyd zero job)',
    () => (require('./zero') as typeof import('./zero')).zeroCommand,
  ),
  entry('snapshot-create <origin> [cow]', 'Format a COW device for a snapshot of ORIGIN (kernel persistent format)', snapshot),
  entry(
    'snapshot-status <cow>',
    "Print a COW's usage as the kernel's status: <allocated>/<total> <metadata> sectors (or Invalid)",
    snapshot,
  ),
  entry('snapshot-list <cow>', 'List the exceptions of a COW in table order (origin chunk → COW chunk)', snapshot),
  entry('snapshot-read <origin> [cow]', 'Read the snapshot view (exceptions from the COW, the rest from the origin)', snapshot),
  entry('snapshot-write <origin> [cow]', 'Write data to the origin (copying old chunks into the COW first) or to the snapshot', snapshot),
  entry(
    'snapshot-merge <origin> [cow]',
    'Merge a snapshot back into its origin, offline; crash-safe and resumable (rerun to finish)',
    snapshot,
  ),
  entry(
    'snapshot-check <cow>',
    'Check a COW: every rule the kernel applies and deeper ones; report every problem (read-only)',
    snapshotTools,
  ),
  entry(
    'snapshot-dump <cow>',
    "Write a COW's header and exception table as a versioned JSON or XML document (docs/snapshot-dump.md)",
    snapshotTools,
  ),
  entry(
    'snapshot-restore <cow>',
    "Write a COW's header and exception table from a snapshot-dump document; data chunks are not touched",
    snapshotTools,
  ),
  entry(
    'snapshot-delta <cow>',
    'List the origin chunks where the snapshot differs from its origin, as sorted, coalesced ranges',
    snapshotTools,
  ),
  entry(
    'snapshot-repair <cow>',
    'Rebuild a damaged COW table keeping every intact exception; says what it drops, writes only with -o or --in-place',
    snapshotTools,
  ),
  entry(
    'snapshot-revalidate <cow>',
    'Clear the invalid flag of a snapshot, only when a full check finds nothing else wrong',
    snapshotTools,
  ),
  entry(
    'snapshot-export <origin> [cow]',
    "Write a snapshot's changed chunks, with the origin's or the snapshot's data, as a stream snapshot-apply applies elsewhere",
    snapshotExport,
  ),
  entry(
    'snapshot-apply <target>',
    "Apply a snapshot-export stream to a device of the origin's size: check it whole, then write its chunks and flush",
    snapshotExport,
  ),
  entry('mirror-create [legs..]', 'Write a new disk dirty log for a mirror (all regions out of sync, or in sync with --nosync)', mirror),
  entry('mirror-status [legs..]', "Show a mirror's status as `dmsetup status` and `dmsetup table` print it (read-only)", mirror),
  entry('mirror-resync [legs..]', 'Copy every out-of-sync region from the default leg to the other legs, then record it clean', mirror),
  entry('mirror-check <legs..>', 'Compare legs region by region against the first; report the regions that differ (read-only)', mirror),
  entry(
    'mirror-log-check <log>',
    'Check a dirty log: header, region count, bitmap and padding; report every problem (read-only)',
    mirrorLogTools,
  ),
  entry(
    'mirror-log-dump <log>',
    'Write a dirty log as a versioned text (or JSON) document: header and out-of-sync regions as ranges',
    mirrorLogTools,
  ),
  entry('mirror-log-restore <log>', 'Write a dirty log from a mirror-log-dump document (text or JSON)', mirrorLogTools),
  entry(
    'serve',
    'Serve devices over NBD (unix socket) until SIGINT or SIGTERM',
    () => (require('./serve') as typeof import('./serve')).serveCommand,
  ),
  entry(
    'ctl <socket> <words..>',
    'Ask a running dmtool serve, through its control socket: status, table, suspend, resume, message, remove',
    () => (require('./ctl') as typeof import('./ctl')).ctlCommand,
  ),
  entry(
    'lvm-ls <pvs..>',
    'List the LVM volume groups and logical volumes on physical volumes, like lvs -a',
    () => (require('./lvm') as typeof import('./lvm')).lvmLsCommand,
  ),
];
