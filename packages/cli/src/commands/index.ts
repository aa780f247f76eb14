import { DmtoolCommand } from '../util/define-command';
import { copyCommand } from './copy';
import { ctlCommand } from './ctl';
import { demoCommand } from './demo';
import { lvmLsCommand } from './lvm';
import { mirrorCommands } from './mirror';
import { mirrorLogToolCommands } from './mirror-log-tools';
import { serveCommand } from './serve';
import { snapshotCommands } from './snapshot';
import { snapshotExportCommands } from './snapshot-export';
import { snapshotToolCommands } from './snapshot-tools';
import { zeroCommand } from './zero';

/** Every dmtool command, in the order --help lists them. */
export const COMMANDS: DmtoolCommand[] = [
  demoCommand,
  copyCommand,
  zeroCommand,
  ...snapshotCommands,
  ...snapshotToolCommands,
  ...snapshotExportCommands,
  ...mirrorCommands,
  ...mirrorLogToolCommands,
  serveCommand,
  ctlCommand,
  lvmLsCommand,
];
