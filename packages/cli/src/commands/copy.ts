import {
  BlockDevice,
  HoleAction,
  KcopydFlags,
  MAX_DESTINATIONS,
  normalizeRanges,
  SECTOR_BYTES,
  SectorRange,
  SparseCopy,
} from '@dmtool/kcopyd';
import * as fs from 'fs';
import * as path from 'path';
import { z } from 'zod';
import { checkMapMatches, CopyMap, CopyMapHeader, mapDevice, readMap, removeMap, writeMapAtomically } from '../util/copy-map';
import { closeAll, namesLocalPath, openOrCreateAll, removeCreated } from '../util/devices';
import { CliError } from '../util/errors';
import { ExitCode, EXIT_CODES_HELP } from '../util/exit-codes';
import { defineCommand } from '../util/define-command';
import { flag, jsonOption, optionalSectorsOption, progressOptions, sectorsOption } from '../util/options';
import { progressModeFor } from '../util/progress-mode';
import { Output } from '../util/output';
import { jobJson, outcome, runWithProgress } from '../util/run-copy';
import { resumeCommandLine } from '../util/resume-command';
import { plural, rateLimitSchema, throttleSchema } from '../util/units';

export const copyCommand = defineCommand({
  command: 'copy <source> <destinations..>',
  describe: 'Copy a sector range from one device to up to 8 destinations (kcopyd)',
  positionals: {
    source: { schema: z.string().min(1), describe: 'source file, block device or NBD URI (opened read-only)' },
    destinations: {
      schema: z.array(z.string().min(1)).min(1).max(MAX_DESTINATIONS, `at most ${MAX_DESTINATIONS} destinations`),
      describe: 'destination files, block devices or NBD URIs; a file that does not exist is created, sized to the range',
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
    sparse: {
      schema: z.enum(['auto', 'always', 'never'], { message: 'takes auto, always or never' }),
      type: 'string',
      describe:
        "holes, as cp: auto = the source file's holes stay holes in file destinations, always = all-zero 4 KiB blocks too (and zeroRange on devices), never = write everything",
      default: 'auto',
    },
    map: {
      schema: z.string().min(1).optional(),
      type: 'string',
      describe:
        'keep a map of the done ranges in FILE (ddrescue style), so an interrupted copy can be resumed; removed when the copy completes',
    },
    resume: flag('continue the copy recorded in the --map FILE, doing only what it lacks'),
    dryRun: flag('check everything and print the plan; write nothing'),
    ...jsonOption,
    ...progressOptions,
  },
  examples: [
    ['$0 copy disk.img /dev/loop1 /dev/loop2', 'copy a whole image to two loop devices'],
    ['$0 copy /dev/sdb backup.img --offset 2048 --length 1G --rate 200M', 'copy 1 GiB from sector 2048 at 200 MiB/s'],
    ['$0 copy disk.img nbd://backup.example:10809/disk', 'copy an image to an NBD export over TCP'],
    ['$0 copy nbd+unix:///disk?socket=/run/nbd.sock disk.img', 'copy an NBD export over a unix socket into an image'],
    ['$0 copy sparse.img new.img', 'create new.img; the holes of sparse.img stay holes'],
    ['$0 copy disk.img /dev/loop1 --sparse=always', 'zero blocks become BLKZEROOUT instead of writes'],
    ['$0 copy /dev/sdb backup.img --map backup.map', 'keep a map; after an interrupt add --resume to finish'],
  ],
  epilog: `Sectors are 512 bytes. Destinations are flushed (fdatasync, NBD_CMD_FLUSH) before the command reports success.\nA destination file that does not exist is created (mode 0666 less the umask) with the size of --dest-offset plus the range, and removed again if the copy fails, unless --map keeps it for --resume.\nNBD URIs: nbd://HOST[:PORT]/EXPORT and nbd+unix:///EXPORT?socket=PATH, with TLS nbds://HOST[:PORT]/EXPORT?tls-certificates=DIR and nbds+unix:///EXPORT?socket=PATH&tls-certificates=DIR (ca-cert.pem, client-cert.pem, client-key.pem; also tls-hostname=NAME, tls-verify-peer=0); a dropped connection is retried (DMTOOL_NBD_RECONNECT_ATTEMPTS, default 5, DMTOOL_NBD_RECONNECT_DELAY_MS, default 250, doubled each time), every request times out after DMTOOL_NBD_TIMEOUT_MS (default 30000); a server allowing multi-conn gets DMTOOL_NBD_CONNECTIONS connections (default 4).\n${EXIT_CODES_HELP}`,
  async run(o) {
    const out = new Output(o.json, 'copy');
    const progressMode = progressModeFor(o);
    if (o.resume && o.map === undefined) throw new CliError('usage', '--resume needs --map FILE: the map of the copy to resume');
    if (o.map !== undefined && !o.resume && fs.existsSync(o.map))
      throw new CliError('usage', `map ${o.map} exists: add --resume to continue the copy it records, or remove it to start again`);
    if (o.map !== undefined) checkMapPlace(o.map, [o.source, ...o.destinations]);
    const recorded = o.resume && o.map !== undefined ? readMap(o.map) : undefined;
    if (recorded) {
      const gone = o.destinations.find((p) => namesLocalPath(p) && !fs.existsSync(p));
      if (gone !== undefined)
        throw new CliError(
          'map-mismatch',
          `map ${o.map} records a copy to ${gone}, which no longer exists: remove the map to copy again from the start`,
        );
    }
    const opened = await openOrCreateAll(
      [
        { path: o.source, role: 'source', write: false },
        ...o.destinations.map((p, i) => ({
          path: p,
          role: `destination ${i}`,
          write: true,
          create: o.resume
            ? undefined
            : ([src]: readonly BlockDevice[]) => (o.destOffset + (o.length ?? Math.max(0, src.sizeSectors - o.offset))) * SECTOR_BYTES,
        })),
      ],
      { direct: o.direct, dryRun: o.dryRun },
    );
    const devices = opened.devices;
    const [src, ...dests] = devices;
    const newPaths = o.destinations.filter((p) => !dests.some((d) => d.path === p));
    // Kept when the copy fails once a map records it: the created file is what --resume continues.
    let keepCreated = false;
    let succeeded = false;
    try {
      const sectors = o.length ?? src.sizeSectors - o.offset;
      checkRanges(src, dests, o.offset, o.destOffset, sectors);
      const header: CopyMapHeader = {
        source: mapDevice(src),
        destinations: dests.map(mapDevice),
        offset: o.offset,
        destOffset: o.destOffset,
        sectors,
      };
      if (recorded && o.map !== undefined) checkMapMatches(recorded, header, o.map);
      const resumedSectors = recorded ? recorded.done.reduce((n, r) => n + r.count, 0) : 0;
      if (o.dryRun) {
        const creating = newPaths.map((p) => `; would create ${p} (${(o.destOffset + sectors) * SECTOR_BYTES} bytes)`).join('');
        const left = resumedSectors > 0 ? ` (${sectors - resumedSectors} left: the map records ${resumedSectors} done)` : '';
        out.line(
          `would copy ${plural(sectors, 'sector')}${left} from ${src.path} sector ${o.offset} to ${o.destinations.map((d) => `${d} sector ${o.destOffset}`).join(', ')}${creating}`,
        );
        out.result({
          dryRun: true,
          source: src.path,
          destinations: o.destinations,
          created: newPaths,
          offset: o.offset,
          destOffset: o.destOffset,
          sectors,
          bytes: sectors * SECTOR_BYTES,
          sparse: o.sparse,
          map: o.map ?? null,
          resumedSectors,
        });
        succeeded = true;
        return ExitCode.OK;
      }
      const map: CopyMap | undefined = o.map !== undefined ? { ...header, done: recorded?.done ?? [] } : undefined;
      let mapError: unknown;
      const saveMap = (ranges: SectorRange[]) => {
        if (!map || !o.map || mapError) return;
        map.done = normalizeRanges([...map.done, ...ranges], sectors);
        try {
          writeMapAtomically(o.map, map);
        } catch (e) {
          mapError = e;
        }
      };
      if (map && o.map && !recorded) writeMapAtomically(o.map, map);
      keepCreated = map !== undefined;
      const created = new Set(opened.created);
      const r = await runWithProgress(
        'copy',
        { subJobSectors: o.subJobSize, throttlePercent: o.throttle, rateBytesPerSecond: o.rate },
        progressMode,
        {
          from: { device: src, sector: o.offset, count: sectors },
          to: dests.map((d) => ({ device: d, sector: o.destOffset })),
          count: sectors,
          flags: o.ignoreErrors ? KcopydFlags.IGNORE_ERROR : 0,
          only: map ? remaining(map.done, sectors) : undefined,
          sparse: sparseCopy(o.sparse, dests, created),
          onDurable: map ? saveMap : undefined,
        },
      );
      const doneSectors = resumedSectors + r.sectorsDone;
      const code = outcome(out, r, sectors, {
        success: `copied ${plural(sectors, 'sector')} from ${src.path} to ${plural(dests.length, 'destination')}${resumedSectors > 0 ? ` (${resumedSectors} done before, as the map recorded)` : ''}`,
        verb: 'copied',
        resume: o.map !== undefined ? { command: resumeCommandLine(process.argv.slice(2)), doneSectors } : undefined,
      });
      if (mapError !== undefined) {
        process.stderr.write(
          `dmtool: map ${o.map} could not be written: ${mapError instanceof Error ? mapError.message : String(mapError)}\n`,
        );
      }
      if (code === ExitCode.OK && map && o.map) removeMap(o.map);
      succeeded = code === ExitCode.OK;
      keepCreated ||= succeeded;
      out.result(
        {
          dryRun: false,
          source: src.path,
          destinations: dests.map((d) => d.path),
          // What a failed copy created is removed below: only files left in place are named.
          created: keepCreated ? opened.created : [],
          offset: o.offset,
          destOffset: o.destOffset,
          sectors,
          bytes: sectors * SECTOR_BYTES,
          sparse: o.sparse,
          map: o.map ?? null,
          resumedSectors,
          readErr: r.readErr,
          ...jobJson(r, sectors, resumedSectors),
        },
        succeeded,
      );
      return code;
    } finally {
      closeAll(devices);
      if (!succeeded && !keepCreated) removeCreated(opened.created);
    }
  },
});

/**
 * The map goes in an existing folder, and not over a device of the copy:
 * it is replaced by rename, which would put it in the device's place.
 */
function checkMapPlace(map: string, devices: readonly string[]): void {
  const named = devices.find((d) => path.resolve(d) === path.resolve(map));
  if (named !== undefined) throw new CliError('usage', `--map ${map} names a device of the copy; give the map its own file`);
  const folder = path.dirname(path.resolve(map));
  let isFolder = false;
  try {
    isFolder = fs.statSync(folder).isDirectory();
  } catch {
    // reported below
  }
  if (!isFolder) throw new CliError('usage', `--map ${map}: folder ${folder} does not exist; create it first`);
}

/** What each destination does where the source reads as zeros (docs/kcopyd.md#sparse-copies). */
function sparseCopy(
  mode: 'auto' | 'always' | 'never',
  dests: readonly BlockDevice[],
  created: ReadonlySet<string>,
): SparseCopy | undefined {
  if (mode === 'never') return undefined;
  const holes = dests.map((d): HoleAction => {
    if (created.has(d.path)) return 'skip';
    if (d.sparseFile?.()) return 'punch';
    return mode === 'always' ? 'zero' : 'write';
  });
  return { holes, detectZeroBlocks: mode === 'always' };
}

/** The parts of [0, sectors) not in `done` (sorted, merged). */
function remaining(done: readonly SectorRange[], sectors: number): SectorRange[] {
  const out: SectorRange[] = [];
  let at = 0;
  for (const d of done) {
    if (d.startSector > at) out.push({ startSector: at, count: d.startSector - at });
    at = Math.max(at, d.startSector + d.count);
  }
  if (at < sectors) out.push({ startSector: at, count: sectors - at });
  return out;
}

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
