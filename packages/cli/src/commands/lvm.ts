import { BlockDevice } from '@dmtool/devices';
import { LvReportRow, lvReport, readSnapshotUsages, scanVolumeGroups } from '@dmtool/lvm';
import { z } from 'zod';
import { closeAll, openAll } from '../util/devices';
import { defineCommand } from '../util/define-command';
import { ExitCode, EXIT_CODES_HELP } from '../util/exit-codes';
import { jsonOption } from '../util/options';
import { Output, printJson } from '../util/output';

/** The columns of `lvs`, in its order: heading, field, and the least width of a right-aligned (numeric) column. */
const COLUMNS: [string, keyof LvReportRow, number | undefined][] = [
  ['LV', 'lv_name', undefined],
  ['VG', 'vg_name', undefined],
  ['Attr', 'lv_attr', undefined],
  ['LSize', 'lv_size', 0],
  ['Pool', 'pool_lv', undefined],
  ['Origin', 'origin', undefined],
  ['Data%', 'data_percent', 6],
  ['Meta%', 'metadata_percent', 6],
  ['Move', 'move_pv', undefined],
  ['Log', 'mirror_log', undefined],
  ['Cpy%Sync', 'copy_percent', 6],
  ['Convert', 'convert_lv', undefined],
];

/**
 * The rows as lvs lays them out: two spaces, then columns as wide as their
 * widest cell; headings to the left, numbers to the right (trailing blanks
 * left out).
 */
export function formatLvTable(rows: LvReportRow[]): string[] {
  const widths = COLUMNS.map(([head, key, least]) => Math.max(head.length, least ?? 0, ...rows.map((r) => r[key].length)));
  const line = (cells: string[], heading: boolean) =>
    `  ${cells.map((c, i) => (COLUMNS[i][2] !== undefined && !heading ? c.padStart(widths[i]) : c.padEnd(widths[i]))).join(' ')}`.trimEnd();
  return [
    line(
      COLUMNS.map(([head]) => head),
      true,
    ),
    ...rows.map((r) =>
      line(
        COLUMNS.map(([, key]) => r[key]),
        false,
      ),
    ),
  ];
}

export const lvmLsCommand = defineCommand({
  command: 'lvm-ls <pvs..>',
  describe: 'List the LVM volume groups and logical volumes on physical volumes, like lvs -a',
  positionals: {
    pvs: {
      schema: z.array(z.string().min(1)).min(1),
      describe: 'physical volumes: image files or block devices (opened read-only)',
      array: true,
    },
  },
  options: { ...jsonOption },
  examples: [
    ['$0 lvm-ls disk.img', 'the LVs of the VG on an image'],
    ['$0 lvm-ls pv1.img pv2.img --json', 'as lvs -a --reportformat json'],
  ],
  epilog:
    'Columns as lvs -a prints them: hidden LVs in brackets, Data% of a snapshot from its COW (empty when the kernel never activated it). ' +
    'The state and open characters of Attr are X (unknown): whether the kernel has an LV active is not on disk. ' +
    'Volumes listed here can be given to any command as PV[,PV...]:VG/LV.\n' +
    EXIT_CODES_HELP,
  async run(o) {
    const out = new Output(o.json);
    const devices: BlockDevice[] = await openAll(o.pvs.map((p, i) => ({ path: p, role: `PV ${i + 1}`, write: false })));
    try {
      const rows: LvReportRow[] = [];
      for (const vg of await scanVolumeGroups(devices, { ignoreOrphans: true })) {
        if (vg.missing.length > 0) {
          process.stderr.write(
            `dmtool: warning: VG ${vg.metadata.name} is missing ${vg.missing.join(', ')}; its LVs on them are partial (p)\n`,
          );
        }
        const usages = vg.missing.length === 0 ? await readSnapshotUsages(vg) : new Map();
        rows.push(...lvReport(vg.metadata, usages, new Set(vg.missing)));
      }
      for (const l of formatLvTable(rows)) out.line(l);
      // lvs's own report layout, so tools that read `lvs --reportformat json` read this too.
      if (o.json) printJson({ report: [{ lv: rows }] });
      return ExitCode.OK;
    } finally {
      closeAll(devices);
    }
  },
});
