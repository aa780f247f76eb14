import {
  checkDistinct,
  checkLegs,
  configFromTable,
  DEFAULT_REGION_SIZE,
  DiskLog,
  MAX_LEGS,
  MirrorConfig,
  MirrorSet,
  openMirror,
  parseMirrorTable,
  planResync,
  resync,
  ResyncResult,
} from '@dmtool/dm-mirror';
import { BlockDevice, SECTOR_BYTES } from '@dmtool/kcopyd';
import { openDevice, resolver } from '../util/open-device';
import { z } from 'zod';
import { closeAll, refusePartialSectors } from '../util/devices';
import { interruptedMessage, interruptExitCode, interruptSignal } from '../util/interrupt';
import { probeFormat } from '../util/formats';
import { CliError, kindOf } from '../util/errors';
import { reportFailure } from '../util/run';
import { ExitCode, ExitCodeValue, EXIT_CODES_HELP } from '../util/exit-codes';
import { ArgsOf, defineCommand, DmtoolCommand } from '../util/define-command';
import { flag, jsonOption, optionalSectorsOption, progressOptions, sectorsOption } from '../util/options';
import { progressModeFor } from '../util/progress-mode';
import { bytesPerSecond, percentOf } from '../json/numbers';
import { Output } from '../util/output';
import { Progress } from '../util/progress';
import { formatBytes, formatRate, plural, rateLimitSchema, throttleSchema } from '../util/units';
import { looksLikeNbdUri } from '../util/lazy-packages';

const RESYNC_PARALLEL = 4;
/** A remote leg answers each region later than a local one: more regions in flight keep the link busy (docs/benchmarks.md#nbd-client). */
const RESYNC_PARALLEL_REMOTE = 8;

const TABLE_HELP =
  'Instead of --log and legs, a kernel table line may be given: --table "0 <len> mirror disk 2 <log> <region> 2 <leg0> 0 <leg1> 0".';

/** The mirror as the commands that take one name it: legs and --log, or --table. */
const mirrorArgs = {
  positionals: {
    legs: { schema: z.array(z.string().min(1)).default([]), describe: 'leg devices or files, default (primary) leg first', array: true },
  },
  options: {
    log: { schema: z.string().min(1).optional(), type: 'string', describe: 'dirty log device or file (kernel dm-log disk format)' },
    regionSize: optionalSectorsOption('region size in sectors (power of two; k/M suffix = bytes)'),
    table: {
      schema: z.string().min(1).optional(),
      type: 'string',
      describe: 'a kernel table line for the mirror target, instead of --log and legs',
    },
    ...jsonOption,
  },
} as const;

type MirrorArgs = ArgsOf<typeof mirrorArgs.positionals, typeof mirrorArgs.options>;

/** For commands that read an existing log: the kernel's rule for a resized mirror, on request. */
const adoptLogOption = {
  adoptLog: flag(
    "accept a log whose region count differs from the mirror's (a resized mirror), as the kernel does on activation: " +
      'regions the log did not cover are out of sync, surplus bits are dropped; needs --region-size or --table',
  ),
};

/** The mirror described by the options: --table, or --log and legs. */
function mirrorConfig(o: MirrorArgs, extra: { nosync?: boolean } = {}): MirrorConfig {
  if (o.table !== undefined) {
    if (o.legs.length > 0 || o.log !== undefined) throw new CliError('usage', 'give either --table or --log with legs, not both');
    const t = parseMirrorTable(o.table);
    if (t.startSector !== 0) throw new CliError('usage', `mirror table: start sector must be 0 (got ${t.startSector})`);
    if (o.regionSize !== undefined && o.regionSize !== t.regionSize) {
      throw new CliError('usage', `--region-size ${o.regionSize} differs from the table's region size ${t.regionSize}`);
    }
    const cfg = configFromTable(t);
    if (extra.nosync) cfg.syncMode = 'nosync';
    return cfg;
  }
  if (o.log === undefined) throw new CliError('usage', '--log LOG is required (or a kernel table line with --table)');
  if (o.legs.length < 2) throw new CliError('usage', `a mirror needs at least 2 legs (got ${o.legs.length})`);
  return {
    regionSize: o.regionSize,
    log: o.log === 'core' ? { type: 'core' } : { type: 'disk', path: o.log },
    syncMode: extra.nosync ? 'nosync' : 'default',
    legs: o.legs.map((path) => ({ path })),
  };
}

/** The legs and the disk log of a mirror, named as the refusals name them. */
function mirrorDevices(cfg: MirrorConfig): { path: string; role: string }[] {
  return [
    ...cfg.legs.map((l, i) => ({ path: l.path, role: `leg ${i}` })),
    ...(cfg.log.type === 'disk' ? [{ path: cfg.log.path, role: 'the log' }] : []),
  ];
}

/** The mirror's status as every mirror command's JSON gives it (docs/json.md#mirror-status). */
function statusJson(m: MirrorSet) {
  const { dirtyRegions: _dirty, log, ...s } = m.status();
  return {
    ...s,
    outOfSyncRegions: m.regionCount - m.log.getSyncCount(),
    syncPercent: percentOf(s.inSyncRegions, s.regions),
    // Ranges, not one entry per region: a large log stays a short document.
    outOfSyncRanges: regionRuns(m.log.dirtyRegions()),
    log: { ...log, path: log.path ?? null },
  };
}

function printStatus(out: Output, m: MirrorSet): void {
  const s = m.status();
  out.line(s.info);
  out.line(s.table);
  const dirty = m.log.dirtyRegions();
  out.line(
    `${s.inSyncRegions}/${plural(s.regions, 'region')} in sync (region ${plural(s.regionSize, 'sector')} = ${formatBytes(s.regionSize * SECTOR_BYTES)})` +
      (dirty.length > 0 ? `; dirty: ${compactList(dirty)}` : ''),
  );
}

/** Ascending region numbers as [first, last] runs of consecutive regions. */
function regionRuns(values: number[]): [number, number][] {
  const runs: [number, number][] = [];
  for (let i = 0; i < values.length;) {
    let j = i;
    while (j + 1 < values.length && values[j + 1] === values[j] + 1) j++;
    runs.push([values[i], values[j]]);
    i = j + 1;
  }
  return runs;
}

/** "0-3,7,9-12", shortened after 20 runs. */
function compactList(values: number[]): string {
  const runs = regionRuns(values).map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`));
  return runs.length > 20 ? `${runs.slice(0, 20).join(',')},... (${plural(values.length, 'region')})` : runs.join(',');
}

// ---------------------------------------------------------------- mirror-create

/** What the log device already holds, if it is a format dmtool recognises. */
const createCommand = defineCommand({
  command: 'mirror-create [legs..]',
  describe: 'Write a new disk dirty log for a mirror (all regions out of sync, or in sync with --nosync)',
  positionals: mirrorArgs.positionals,
  options: {
    ...mirrorArgs.options,
    nosync: flag('record every region in sync (the legs are known identical)'),
    force: flag('write over what the log device holds: a dm-mirror log, a COW, an LVM2 label, a filesystem, swap or a partition table'),
    dryRun: flag('check everything and print the plan; write nothing'),
  },
  examples: [
    ['$0 mirror-create --log log.img --region-size 1024 leg0.img leg1.img', 'new log: everything to resync from leg0'],
    ['$0 mirror-create --table "0 2097152 mirror disk 2 /dev/loop9 1024 2 /dev/loop1 0 /dev/loop2 0"', 'the same from a table line'],
  ],
  epilog: `The log is written in the kernel's dm-log format (magic MiRr, version 2). Legs are only read (sizes).\n${TABLE_HELP}\n${EXIT_CODES_HELP}`,
  async run(o) {
    const out = new Output(o.json, 'mirror-create');
    const cfg = mirrorConfig(o, { nosync: o.nosync });
    if (cfg.log.type !== 'disk') throw new CliError('usage', 'a core log keeps nothing on disk: there is nothing to create');
    cfg.regionSize = cfg.regionSize ?? DEFAULT_REGION_SIZE;
    refusePartialSectors(mirrorDevices(cfg));
    checkDistinct(resolver, [...cfg.legs.map((l, i) => ({ path: l.path, role: `leg ${i}` })), { path: cfg.log.path, role: 'the log' }]);
    const logPath = cfg.log.path;
    let old: { regions: number } | undefined;
    // Probed through the device the mirror opens (and locks), so nothing can change it between the look and the write.
    const checkLog = async (logDevice: BlockDevice) => {
      const found = await probeFormat(logDevice);
      old = found?.kind === 'mirror-log' ? { regions: found.regions ?? 0 } : undefined;
      if (old && !o.force) {
        throw new CliError(
          'format-present',
          `${logPath} already holds a dm-mirror log (${plural(old.regions, 'region')}, sector 0); give --force to replace it`,
        );
      }
      if (found && !old && !o.force) {
        throw new CliError('format-present', `${logPath} holds ${found.what} at sector ${found.sector}; give --force to overwrite it`);
      }
    };
    const m = await openMirror(cfg, resolver, { createLog: true, persistLog: !o.dryRun, writeLog: true, checkLog });
    try {
      const s = statusJson(m);
      const log = m.log as DiskLog;
      if (o.dryRun) {
        out.line(
          `would write a ${log.bufferBytes}-byte dirty log (sectors 0..${log.bufferBytes / SECTOR_BYTES - 1}) to ${cfg.log.path}: ${plural(m.regionCount, 'region')} of ${plural(m.regionSize, 'sector')}, ${o.nosync ? 'all in sync' : 'all out of sync'}`,
        );
        out.result({ dryRun: true, logBytes: log.bufferBytes, replaces: old ?? null, mirror: s });
        return ExitCode.OK;
      }
      await log.sync();
      out.line(
        `wrote a dirty log to ${cfg.log.path}: ${plural(m.regionCount, 'region')} of ${plural(m.regionSize, 'sector')}, ${o.nosync ? 'all in sync' : 'all out of sync (run mirror-resync)'}`,
      );
      printStatus(out, m);
      out.result({ dryRun: false, logBytes: log.bufferBytes, replaces: old ?? null, mirror: s });
      return ExitCode.OK;
    } finally {
      m.close();
    }
  },
});

// ---------------------------------------------------------------- mirror-status

const statusCommand = defineCommand({
  command: 'mirror-status [legs..]',
  describe: "Show a mirror's status as `dmsetup status` and `dmsetup table` print it (read-only)",
  positionals: mirrorArgs.positionals,
  options: { ...mirrorArgs.options, ...adoptLogOption },
  examples: [
    ['$0 mirror-status --log log.img leg0.img leg1.img', 'in-sync count, leg and log health, dirty regions'],
    ['$0 mirror-status --log /dev/loop9 /dev/loop1 /dev/loop2 --json', 'the same as JSON'],
  ],
  epilog: `Nothing is written. Without --region-size it is derived from the log's region count and the leg size.\n${TABLE_HELP}\n${EXIT_CODES_HELP}`,
  async run(o) {
    const out = new Output(o.json, 'mirror-status');
    const cfg = mirrorConfig(o);
    refusePartialSectors(mirrorDevices(cfg));
    const m = await openMirror(cfg, resolver, { persistLog: false, adoptLog: o.adoptLog });
    try {
      printStatus(out, m);
      out.result({ dryRun: false, mirror: statusJson(m) });
      return ExitCode.OK;
    } finally {
      m.close();
    }
  },
});

// ---------------------------------------------------------------- mirror-resync

function resyncSummary(r: ResyncResult, m: MirrorSet, bytesToCopy: number) {
  const seconds = r.elapsedMs / 1000;
  const bytesCopied = r.sectorsCopied * SECTOR_BYTES;
  return {
    dryRun: false,
    regionsToSync: r.regionsTotal,
    regionsSynced: r.regionsSynced,
    regionsFailed: r.regionsFailed.length,
    failedRanges: regionRuns(r.regionsFailed),
    percent: percentOf(r.regionsSynced, r.regionsTotal),
    bytesToCopy,
    bytesCopied,
    seconds,
    bytesPerSecond: bytesPerSecond(bytesCopied, seconds),
    failedLegs: r.failedLegs.map((f) => ({ index: f.index, path: f.path, health: f.health, message: f.error ?? null })),
    interrupted: r.aborted,
    mirror: statusJson(m),
  };
}

const resyncCommand = defineCommand({
  command: 'mirror-resync [legs..]',
  describe: 'Copy every out-of-sync region from the default leg to the other legs, then record it clean',
  positionals: mirrorArgs.positionals,
  options: {
    ...mirrorArgs.options,
    ...adoptLogOption,
    rate: {
      schema: rateLimitSchema.optional(),
      type: 'string',
      describe: 'limit to this many bytes per second, e.g. 100M (100 MiB/s; k, M, G are binary)',
    },
    throttle: {
      schema: throttleSchema,
      type: 'number',
      describe: 'percent of time copy I/O may be in flight (raid1_resync_throttle)',
      default: 100,
    },
    parallel: {
      schema: z.number().int().min(1).max(64).optional(),
      type: 'number',
      describe: `regions copied at once (the kernel copies 1; default ${RESYNC_PARALLEL}, ${RESYNC_PARALLEL_REMOTE} when a leg is an NBD export)`,
    },
    direct: flag('O_DIRECT on the legs'),
    dryRun: flag('show what would be copied; write nothing'),
    ...progressOptions,
  },
  examples: [
    ['$0 mirror-resync --log log.img leg0.img leg1.img leg2.img', 'resync three legs from leg0'],
    [
      '$0 mirror-resync --table "0 2097152 mirror disk 2 /dev/loop9 1024 2 /dev/loop1 0 /dev/loop2 0" --rate 200M',
      'from a table line, at 200 MiB/s',
    ],
  ],
  epilog:
    `Resumable: a region is recorded clean only after the legs were flushed, so an interrupted or killed resync\n` +
    `simply continues on the next run. A leg that fails is reported (status S) and the other legs are finished.\n` +
    `${TABLE_HELP}\n${EXIT_CODES_HELP}`,
  async run(o) {
    const out = new Output(o.json, 'mirror-resync');
    const progressMode = progressModeFor(o);
    const progress = new Progress('resync', { mode: o.dryRun ? { kind: 'off' } : progressMode, rateBytesPerSecond: o.rate });
    const cfg = mirrorConfig(o);
    refusePartialSectors(mirrorDevices(cfg));
    const m = await openMirror(cfg, resolver, {
      writeLegs: true,
      persistLog: !o.dryRun,
      writeLog: true,
      direct: o.direct,
      adoptLog: o.adoptLog,
    });
    try {
      const plan = planResync(m);
      const todoSectors = plan.sectors;
      if (o.dryRun) {
        out.line(
          `would copy ${plan.regions.length} of ${plural(m.regionCount, 'region')} (${formatBytes(todoSectors * SECTOR_BYTES)}) from ${m.legs[0].device.path} to ${plural(m.legs.length - 1, 'leg')}`,
        );
        out.result({ dryRun: true, regionsToSync: plan.regions.length, bytesToCopy: todoSectors * SECTOR_BYTES, mirror: statusJson(m) });
        return ExitCode.OK;
      }
      progress.setTotal(todoSectors * SECTOR_BYTES);
      const interrupt = interruptSignal();
      let r: ResyncResult;
      try {
        r = await resync(m, {
          parallel: o.parallel ?? resyncParallel(m.legs.map((l) => l.device.path)),
          throttlePercent: o.throttle,
          rateBytesPerSecond: o.rate,
          signal: interrupt.signal,
          // Counts regions recorded in sync (legs flushed, log written), not copies in flight.
          onProgress: (p) => progress.update(p.sectorsRecorded * SECTOR_BYTES),
        });
      } finally {
        progress.stop();
        interrupt.dispose();
      }
      const seconds = r.elapsedMs / 1000;
      const ok = !r.aborted && r.failedLegs.length === 0 && r.regionsOutOfSync.length === 0;
      out.result(resyncSummary(r, m, todoSectors * SECTOR_BYTES), ok);
      for (const f of r.failedLegs) process.stderr.write(`dmtool: leg ${f.index} ${f.path} failed (${f.health}): ${f.error ?? 'error'}\n`);
      out.line(
        `resynced ${r.regionsSynced} of ${r.regionsTotal} out-of-sync regions (${formatBytes(r.sectorsCopied * SECTOR_BYTES)} in ${seconds.toFixed(2)} s, ${formatRate(r.sectorsCopied * SECTOR_BYTES, seconds)})`,
      );
      out.line(m.status().info);
      if (r.aborted) {
        const state = `${plural(r.regionsOutOfSync.length, 'region')} still out of sync, the copied ones flushed and recorded`;
        process.stderr.write(`dmtool: ${interruptedMessage(state, 'finish the resync (it resumes where it stopped)')}\n`);
        return interruptExitCode();
      }
      if (r.failedLegs.length > 0 || r.regionsOutOfSync.length > 0) {
        process.stderr.write(
          `dmtool: ${plural(r.regionsOutOfSync.length, 'region')} left out of sync: ${compactList(r.regionsOutOfSync)}\n`,
        );
        return ExitCode.IO_ERROR;
      }
      return ExitCode.OK;
    } finally {
      progress.stop();
      m.close();
    }
  },
});

// ---------------------------------------------------------------- mirror-check

const checkPositionals = {
  legs: {
    schema: z.array(z.string().min(1)).min(2, 'give at least 2 legs').max(MAX_LEGS, `at most ${MAX_LEGS} legs`),
    describe: 'leg devices or files',
    array: true,
  },
} as const;

const checkOptions = {
  regionSize: sectorsOption('region size in sectors', { default: String(DEFAULT_REGION_SIZE) }),
  length: optionalSectorsOption("sectors to compare (default: the legs' common size)"),
  ...jsonOption,
  ...progressOptions,
} as const;

const checkCommand = defineCommand({
  command: 'mirror-check <legs..>',
  describe: 'Compare legs region by region against the first; report the regions that differ (read-only)',
  positionals: checkPositionals,
  options: checkOptions,
  examples: [['$0 mirror-check leg0.img leg1.img --region-size 1024', 'which 512 KiB regions differ']],
  epilog:
    'Exit codes, as cmp: 0 legs identical, 1 some region differs, 2 bad input, 3 device refused ' +
    '(missing, busy/mounted, locked), 4 an I/O error (the legs could not be compared), 130/143 interrupted.',
  async run(o) {
    try {
      return await check(o);
    } catch (e) {
      // cmp's convention: 1 means "differ", so trouble reading is not 1.
      if (kindOf(e) !== 'io') throw e;
      reportFailure(e, { json: o.json, command: 'mirror-check' });
      return ExitCode.CHECK_TROUBLE;
    }
  },
});

async function check(o: ArgsOf<typeof checkPositionals, typeof checkOptions>): Promise<ExitCodeValue> {
  const out = new Output(o.json, 'mirror-check');
  const progress = new Progress('check', { mode: progressModeFor(o) });
  if (o.regionSize < 1) throw new CliError('usage', '--region-size must be at least 1 sector');
  const legSpecs = o.legs.map((path, i) => ({ path, role: `leg ${i}` }));
  refusePartialSectors(legSpecs);
  checkDistinct(resolver, legSpecs);
  const devices: BlockDevice[] = [];
  try {
    for (const path of o.legs) devices.push(await openDevice(path, { write: false }));
    let length = o.length;
    if (length === undefined) {
      const differ = devices.findIndex((d) => d.sizeSectors !== devices[0].sizeSectors);
      if (differ >= 0) {
        throw new CliError(
          'size-mismatch',
          `legs differ in size: ${devices[0].path} has ${devices[0].sizeSectors} sectors, ${devices[differ].path} has ${devices[differ].sizeSectors} (give --length)`,
        );
      }
      length = devices[0].sizeSectors;
    }
    for (const d of devices) {
      if (d.sizeSectors < length)
        throw new CliError(
          'out-of-range',
          `leg ${d.path} has ${d.sizeSectors} sectors, fewer than --length ${length} (sectors 0..${length - 1})`,
        );
    }
    if (length <= 0) throw new CliError('out-of-range', 'nothing to compare: the legs are empty');
    progress.setTotal(length * SECTOR_BYTES);
    const interrupt = interruptSignal();
    let r;
    const started = Date.now();
    let comparedSectors = 0;
    try {
      r = await checkLegs(devices, {
        regionSize: o.regionSize,
        lengthSectors: length,
        signal: interrupt.signal,
        onProgress: (p) => {
          comparedSectors = p.sectorsDone;
          progress.update(p.sectorsDone * SECTOR_BYTES);
        },
      });
    } catch (e) {
      if (kindOf(e) !== 'interrupted') throw e;
      throw new CliError(
        'interrupted',
        interruptedMessage(`${comparedSectors} of ${plural(length, 'sector')} compared`, 'compare the legs'),
      );
    } finally {
      progress.stop();
      interrupt.dispose();
    }
    const seconds = (Date.now() - started) / 1000;
    const identical = r.differingRegions.length === 0;
    out.result(
      {
        dryRun: false,
        legs: o.legs,
        ...r,
        identical,
        seconds,
        bytesPerSecond: bytesPerSecond(length * SECTOR_BYTES, seconds),
      },
      identical,
    );
    if (r.differingRegions.length === 0) {
      out.line(
        `legs identical: ${plural(r.regions, 'region')} of ${plural(o.regionSize, 'sector')} compared (${formatBytes(length * SECTOR_BYTES)}, ${formatRate(length * SECTOR_BYTES, seconds)})`,
      );
      return ExitCode.OK;
    }
    out.line(
      `${r.differingRegions.length} of ${plural(r.regions, 'region')} ${r.differingRegions.length === 1 ? 'differs' : 'differ'}: ${compactList(r.differingRegions)}`,
    );
    for (const region of r.differingRegions.slice(0, 50)) {
      const start = region * o.regionSize;
      const end = Math.min(length, start + o.regionSize) - 1;
      const legs = r.differingLegs[region].map((i) => o.legs[i]);
      out.line(
        `region ${region} (sectors ${start}..${end}): ${legs.join(', ')} ${legs.length === 1 ? 'differs' : 'differ'} from ${o.legs[0]}`,
      );
    }
    return ExitCode.IO_ERROR;
  } finally {
    progress.stop();
    closeAll(devices);
  }
}

export const mirrorCommands: DmtoolCommand[] = [createCommand, statusCommand, resyncCommand, checkCommand];

function resyncParallel(legPaths: readonly string[]): number {
  return legPaths.some((p) => looksLikeNbdUri(p)) ? RESYNC_PARALLEL_REMOTE : RESYNC_PARALLEL;
}
