import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { loopSupported } from './loop';

/** Debian's lvm2 (the `lvm` binary) is installed. */
export function lvm2Available(): boolean {
  return spawnSync('lvm', ['version'], { stdio: 'ignore', env: { ...process.env, LVM_SUPPRESS_FD_WARNINGS: '1' } }).status === 0;
}

/** lvm2 tests need loop devices and lvm2; in CI they must run. */
export const describeLvm2: jest.Describe = (loopSupported() && lvm2Available()) || process.env.CI === 'true' ? describe : describe.skip;

/**
 * lvm2 confined to a test: a private lvm.conf (LVM_SYSTEM_DIR) whose
 * filters accept only the given devices, with locking, backup and archive
 * folders under the test's folder and no hints file (which lvm2 would
 * otherwise keep in /run/lvm). Without device-mapper in the kernel every
 * command runs with `--driverloaded n` (activation off).
 */
export class Lvm2 {
  private readonly env: NodeJS.ProcessEnv;

  constructor(
    readonly dir: string,
    devices: string[],
  ) {
    const etc = path.join(dir, 'lvm-etc');
    for (const d of ['lvm-etc', 'lvm-lock', 'lvm-backup', 'lvm-archive']) fs.mkdirSync(path.join(dir, d), { recursive: true });
    const accept = devices.map((d) => `"a|^${d}$|"`).join(', ');
    fs.writeFileSync(
      path.join(etc, 'lvm.conf'),
      `devices {
  global_filter = [ ${accept}, "r|.*|" ]
  filter = [ ${accept}, "r|.*|" ]
  obtain_device_list_from_udev = 0
  external_device_info_source = "none"
  use_devicesfile = 0
  hints = "none"
}
global {
  locking_dir = "${path.join(dir, 'lvm-lock')}"
  event_activation = 0
  use_lvmlockd = 0
  use_lvmpolld = 0
}
activation {
  udev_sync = 0
  udev_rules = 0
  monitoring = 0
}
backup {
  backup = 0
  archive = 0
  backup_dir = "${path.join(dir, 'lvm-backup')}"
  archive_dir = "${path.join(dir, 'lvm-archive')}"
}
`,
    );
    this.env = { PATH: process.env.PATH, LVM_SYSTEM_DIR: etc, LVM_SUPPRESS_FD_WARNINGS: '1', LC_ALL: 'C' };
  }

  /** Run an lvm2 command (`pvcreate`, `lvs`, ...) with activation off; its stdout. */
  run(command: string, ...args: string[]): string {
    const driver = command === 'pvcreate' || command === 'vgcreate' ? [] : ['--driverloaded', 'n'];
    return execFileSync('lvm', [command, ...driver, ...args], {
      env: this.env,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
      timeout: 60000,
    });
  }

  /** The VG's metadata text as `vgcfgbackup` writes it. */
  backup(vg: string): string {
    const file = path.join(this.dir, `${vg}-${Date.now()}-backup.txt`);
    this.run('vgcfgbackup', '-f', file, vg);
    return fs.readFileSync(file, 'utf8');
  }

  /** Write `text` as the VG's metadata with `vgcfgrestore` (lvm2 checks it and writes every metadata area). */
  restore(vg: string, text: string): void {
    const file = path.join(this.dir, `${vg}-${Date.now()}-restore.txt`);
    fs.writeFileSync(file, text);
    this.run('vgcfgrestore', '-f', file, vg);
  }

  /** `lvs -a --reportformat json` rows (default columns unless `fields`; one per segment with `--segments`). */
  lvsJson(vg: string, fields?: string, ...args: string[]): Record<string, string>[] {
    const out = this.run('lvs', '-a', '--reportformat', 'json', ...(fields ? ['-o', fields] : []), ...args, vg);
    const report = (JSON.parse(out) as { report: { lv?: Record<string, string>[]; seg?: Record<string, string>[] }[] }).report[0];
    return report.lv ?? report.seg ?? [];
  }
}

/** Add a snapshot of `data` (COW `snap`, chunk 8) and a two-leg mirror with a disk log to a vgcfgbackup text. */
export function withSnapshotAndMirror(text: string, opts: { merging?: boolean } = {}): string {
  const hide = (t: string, name: string) =>
    t.replace(new RegExp(`(\\t\\t${name} \\{\\n(?:.*\\n)*?\\t\\t\\tstatus = )\\["READ", "WRITE", "VISIBLE"\\]`), '$1["READ", "WRITE"]');
  let t = text;
  for (const [from, to] of [
    ['mzero', 'mir_mimage_0'],
    ['mone', 'mir_mimage_1'],
    ['mlog', 'mir_mlog'],
  ]) {
    t = hide(t.replace(`\t\t${from} {`, `\t\t${to} {`), to);
  }
  t = hide(t, 'snap');
  const lv = (name: string, id: string, status: string, segment: string) =>
    `\t\t${name} {\n\t\t\tid = "${id}"\n\t\t\tstatus = ${status}\n\t\t\tflags = []\n\t\t\tsegment_count = 1\n\n\t\t\tsegment1 {\n${segment
      .split('\n')
      .map((l) => `\t\t\t\t${l}`)
      .join('\n')}\n\t\t\t}\n\t\t}\n`;
  const extra =
    lv(
      'snapshot0',
      'sn0000-0000-0000-0000-0000-0000-000000',
      '["READ", "WRITE", "VISIBLE"]',
      `start_extent = 0\nextent_count = 3\ntype = "snapshot"\nchunk_size = 8\norigin = "data"\n${opts.merging ? 'merging_store' : 'cow_store'} = "snap"`,
    ) +
    lv(
      'mir',
      'mr0000-0000-0000-0000-0000-0000-000000',
      '["READ", "WRITE", "VISIBLE"]',
      'start_extent = 0\nextent_count = 1\ntype = "mirror"\nmirror_count = 2\nmirror_log = "mir_mlog"\nregion_size = 1024\nmirrors = [\n\t"mir_mimage_0", 0,\n\t"mir_mimage_1", 0\n]',
    );
  const end = t.lastIndexOf('\t}\n');
  return `${t.slice(0, end)}${extra}${t.slice(end)}`;
}
