import { MAX_DESTINATIONS, SECTOR_BYTES } from '@dmtool/kcopyd';
import { z } from 'zod';
import { closeAll, openAll } from '../util/devices';
import { CliError } from '../util/errors';
import { ExitCode, EXIT_CODES_HELP } from '../util/exit-codes';
import { defineCommand } from '../util/define-command';
import { flag, jsonOption, optionalSectorsOption, progressOptions, sectorsOption } from '../util/options';
import { progressModeFor } from '../util/progress-mode';
import { Output } from '../util/output';
import { jobJson, outcome, runWithProgress } from '../util/run-copy';
import { plural } from '../util/units';

export const zeroCommand = defineCommand({
  command: 'zero <destinations..>',
  describe: 'Zero a sector range on one or more devices (kcopyd zero job)',
  positionals: {
    destinations: {
      schema: z.array(z.string().min(1)).min(1).max(MAX_DESTINATIONS, `at most ${MAX_DESTINATIONS} devices`),
      describe: 'files, block devices or NBD URIs to zero',
      array: true,
    },
  },
  options: {
    offset: sectorsOption('start: sectors, or bytes with k/M/G suffix', { default: '0' }),
    length: optionalSectorsOption('how much to zero (default: to the end of the smallest device)'),
    dryRun: flag('check and print the plan; write nothing'),
    ...jsonOption,
    ...progressOptions,
  },
  examples: [['$0 zero /dev/loop1 --offset 0 --length 8', 'zero the first 4 KiB of a loop device']],
  epilog: `Uses BLKZEROOUT / FALLOC_FL_ZERO_RANGE where available, else writes zeros; flushes before reporting.\n${EXIT_CODES_HELP}`,
  async run(o) {
    const out = new Output(o.json, 'zero');
    const progressMode = progressModeFor(o);
    const devices = await openAll(o.destinations.map((p, i) => ({ path: p, role: `device ${i}`, write: true })));
    try {
      const smallest = Math.min(...devices.map((d) => d.sizeSectors));
      const length = o.length ?? smallest - o.offset;
      if (length <= 0)
        throw new CliError('out-of-range', `nothing to zero: offset ${o.offset} is at or beyond the end (${smallest} sectors)`);
      for (const d of devices) {
        if (o.offset + length > d.sizeSectors) {
          throw new CliError(
            'out-of-range',
            `${d.path} sectors ${o.offset}..${o.offset + length - 1} end beyond the device end (${d.sizeSectors} sectors)`,
          );
        }
      }
      if (o.dryRun) {
        out.line(`would zero sectors ${o.offset}..${o.offset + length - 1} on ${devices.map((d) => d.path).join(', ')}`);
        out.result({ dryRun: true, devices: devices.map((d) => d.path), offset: o.offset, sectors: length, bytes: length * SECTOR_BYTES });
        return ExitCode.OK;
      }
      const r = await runWithProgress('zero', {}, progressMode, {
        to: devices.map((d) => ({ device: d, sector: o.offset })),
        count: length,
        flags: 0,
      });
      const code = outcome(out, r, length, {
        success: `zeroed ${plural(length, 'sector')} on ${plural(devices.length, 'device')}`,
        verb: 'zeroed',
      });
      out.result(
        {
          dryRun: false,
          devices: devices.map((d) => d.path),
          offset: o.offset,
          sectors: length,
          bytes: length * SECTOR_BYTES,
          ...jobJson(r, length),
        },
        code === ExitCode.OK,
      );
      return code;
    } finally {
      closeAll(devices);
    }
  },
});
