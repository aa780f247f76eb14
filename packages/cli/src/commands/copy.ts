import { BlockDevice, KcopydFlags, MAX_DESTINATIONS, SECTOR_BYTES } from '@dmtool/kcopyd';
import { z } from 'zod';
import { closeAll, openAll } from '../util/devices';
import { CliError } from '../util/errors';
import { ExitCode, EXIT_CODES_HELP } from '../util/exit-codes';
import { defineCommand } from '../util/define-command';
import { flag, jsonOption, optionalSectorsOption, progressOptions, sectorsOption } from '../util/options';
import { progressModeFor } from '../util/progress-mode';
import { Output } from '../util/output';
import { jobJson, outcome, runWithProgress } from '../util/run-copy';
import { plural, rateLimitSchema, throttleSchema } from '../util/units';

export const copyCommand = defineCommand({
  command: 'copy <source> <destinations..>',
  describe: 'Copy a sector range from one device to up to 8 destinations (kcopyd)',
  positionals: {
    source: { schema: z.string().min(1), describe: 'source file, block device or NBD URI (opened read-only)' },
    destinations: {
      schema: z.array(z.string().min(1)).min(1).max(MAX_DESTINATIONS, `at most ${MAX_DESTINATIONS} destinations`),
      describe: 'destination files, block devices or NBD URIs',
      array: true,
    },
  },
  options: {
    offset: sectorsOption('source start: sectors, or bytes with k/M/G suffix', { default: '0' }),
    destOffset: sectorsOption('destination start (same units)', { default: '0' }),
    length: optionalSectorsOption('how much to copy (default: to the end of the source)'),
    direct: flag('O_DIRECT: bypass the page cache'),
    rate: {
      schema: rateLimitSchema.optional(),
      type: 'string',
      describe: 'limit to this many bytes per second, e.g. 100M (100 MiB/s; k, M, G are binary)',
    },
    throttle: {
      schema: throttleSchema,
      type: 'number',
      describe: 'percent of time copy I/O may be in flight (kcopyd throttle)',
      default: 100,
    },
    subJobSize: sectorsOption('sub-job size in sectors', { default: '1024' }),
    ignoreErrors: flag('keep copying after I/O errors (kcopyd IGNORE_ERROR)'),
    dryRun: flag('check everything and print the plan; write nothing'),
    ...jsonOption,
    ...progressOptions,
  },
  examples: [
    ['$0 copy disk.img /dev/loop1 /dev/loop2', 'copy a whole image to two loop devices'],
    ['$0 copy /dev/sdb backup.img --offset 2048 --length 1G --rate 200M', 'copy 1 GiB from sector 2048 at 200 MiB/s'],
    ['$0 copy disk.img nbd://backup.example:10809/disk', 'copy an image to an NBD export over TCP'],
    ['$0 copy nbd+unix:///disk?socket=/run/nbd.sock disk.img', 'copy an NBD export over a unix socket into an image'],
  ],
  epilog: `Sectors are 512 bytes. Destinations are flushed (fdatasync, NBD_CMD_FLUSH) before the command reports success.\nNBD URIs: nbd://HOST[:PORT]/EXPORT and nbd+unix:///EXPORT?socket=PATH, with TLS nbds://HOST[:PORT]/EXPORT?tls-certificates=DIR and nbds+unix:///EXPORT?socket=PATH&tls-certificates=DIR (ca-cert.pem, client-cert.pem, client-key.pem; also tls-hostname=NAME, tls-verify-peer=0); a dropped connection is retried (DMTOOL_NBD_RECONNECT_ATTEMPTS, default 5, DMTOOL_NBD_RECONNECT_DELAY_MS, default 250, doubled each time), every request times out after DMTOOL_NBD_TIMEOUT_MS (default 30000).\n${EXIT_CODES_HELP}`,
  async run(o) {
    const out = new Output(o.json, 'copy');
    const progressMode = progressModeFor(o);
    const devices = await openAll(
      [
        { path: o.source, role: 'source', write: false },
        ...o.destinations.map((p, i) => ({ path: p, role: `destination ${i}`, write: true })),
      ],
      { direct: o.direct },
    );
    const [src, ...dests] = devices;
    try {
      const length = o.length ?? src.sizeSectors - o.offset;
      checkRanges(src, dests, o.offset, o.destOffset, length);
      if (o.dryRun) {
        out.line(
          `would copy ${plural(length, 'sector')} from ${src.path} sector ${o.offset} to ${dests.map((d) => `${d.path} sector ${o.destOffset}`).join(', ')}`,
        );
        out.result({
          dryRun: true,
          source: src.path,
          destinations: dests.map((d) => d.path),
          offset: o.offset,
          destOffset: o.destOffset,
          sectors: length,
          bytes: length * SECTOR_BYTES,
        });
        return ExitCode.OK;
      }
      const r = await runWithProgress(
        'copy',
        { subJobSectors: o.subJobSize, throttlePercent: o.throttle, rateBytesPerSecond: o.rate },
        progressMode,
        {
          from: { device: src, sector: o.offset, count: length },
          to: dests.map((d) => ({ device: d, sector: o.destOffset })),
          count: length,
          flags: o.ignoreErrors ? KcopydFlags.IGNORE_ERROR : 0,
        },
      );
      const code = outcome(out, r, length, {
        success: `copied ${plural(length, 'sector')} from ${src.path} to ${plural(dests.length, 'destination')}`,
        verb: 'copied',
      });
      out.result(
        {
          dryRun: false,
          source: src.path,
          destinations: dests.map((d) => d.path),
          offset: o.offset,
          destOffset: o.destOffset,
          sectors: length,
          bytes: length * SECTOR_BYTES,
          readErr: r.readErr,
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

function checkRanges(src: BlockDevice, dests: BlockDevice[], offset: number, destOffset: number, length: number): void {
  if (length <= 0)
    throw new CliError('out-of-range', `nothing to copy: source ${src.path} has ${src.sizeSectors} sectors, offset is ${offset}`);
  if (offset + length > src.sizeSectors) {
    throw new CliError(
      'out-of-range',
      `source ${src.path} sectors ${offset}..${offset + length - 1} end beyond the device end (${src.sizeSectors} sectors)`,
    );
  }
  for (const d of dests) {
    if (destOffset + length > d.sizeSectors) {
      throw new CliError(
        'out-of-range',
        `destination ${d.path} is too small: needs sectors ${destOffset}..${destOffset + length - 1}, has ${d.sizeSectors} sectors`,
      );
    }
  }
}
