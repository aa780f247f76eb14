import {
  checkCow,
  deltaRanges,
  CowProblem,
  dumpCow,
  dumpEntry,
  dumpEpilogue,
  dumpPrologue,
  DumpSyntax,
  PersistentStore,
  planRepair,
  planRestore,
  DroppedEntry,
  readDump,
  restoreCow,
  revalidateCow,
  SNAP_MAGIC,
  storeStatus,
} from '@dmtool/dm-snapshot';
import { z } from 'zod';
import { closeAll, openAll } from '../util/devices';
import { CliError } from '../util/errors';
import { ExitCode, ExitCodeValue, EXIT_CODES_HELP } from '../util/exit-codes';
import { defineCommand, DmtoolCommand } from '../util/define-command';
import { probeFormat } from '../util/formats';
import { flag, jsonOption } from '../util/options';
import { Output } from '../util/output';
import { OutputFile } from '../util/output-file';
import { PieceWriter } from '../util/piece-writer';
import { openDumpFile } from '../util/dump-input';
import * as fs from 'fs';
import { BlockDevice } from '@dmtool/kcopyd';
import { refuseOutputOverInput } from './snapshot';

/** snapshot-check's exit code when it found problems: like thin_check, 1. */
const PROBLEMS_FOUND = ExitCode.IO_ERROR;

const TOOLS_HELP = `Sectors are 512 bytes; chunks are the COW's (its header says how many sectors). The COW is opened read-only with a shared lock unless the command writes it.\n${EXIT_CODES_HELP}`;

const cowPositional = { cow: { schema: z.string().min(1), describe: 'COW device or image (kernel persistent exception store)' } };
const originOption = {
  origin: { schema: z.string().min(1).optional(), type: 'string', describe: 'the origin, to check every exception against its size' },
} as const;

// ---------------------------------------------------------------- check

function problemLine(p: CowProblem): string {
  return `${p.kind}: ${p.message} (byte ${p.byteOffset} = 0x${p.byteOffset.toString(16)})`;
}

const checkCommand = defineCommand({
  command: 'snapshot-check <cow>',
  describe: 'Check a COW: every rule the kernel applies and deeper ones; report every problem (read-only)',
  positionals: cowPositional,
  options: {
    ...originOption,
    quiet: { ...flag('print nothing; the exit code says it all'), alias: 'q' },
    ...jsonOption,
  },
  examples: [
    ['$0 snapshot-check /dev/vg/data-cow --origin /dev/vg/data', 'check a COW and its entries against the origin size'],
    ['$0 snapshot-check -q cow.img && echo clean', 'exit 0 when clean, 1 when problems were found'],
  ],
  epilog: `Exit codes: 0 clean, 1 problems found (or an I/O error), 2 bad usage, 3 device refused. Each problem names its kind, its metadata area and entry, and its byte offset on the COW (docs/snapshot-check.md).\n${TOOLS_HELP}`,
  async run(o) {
    if (o.quiet && o.json) throw new CliError('usage', '--quiet and --json exclude each other');
    const devices = await openAll([
      { path: o.cow, role: 'COW', write: false },
      ...(o.origin ? [{ path: o.origin, role: 'origin', write: false }] : []),
    ]);
    const [cow, origin] = devices;
    const out = new PieceWriter(await OutputFile.open(undefined));
    try {
      let first = true;
      if (o.json) await out.add(`{\n  "cow": ${JSON.stringify(cow.path)},\n  "problems": [`);
      const s = await checkCow(cow, {
        originSectors: origin?.sizeSectors,
        origin,
        onProblem: async (p) => {
          if (o.quiet) return;
          if (o.json) await out.add(`${first ? '' : ','}\n    ${JSON.stringify(p)}`);
          else await out.add(`${problemLine(p)}\n`);
          first = false;
        },
      });
      if (o.json) {
        const summary = { ...s, clean: s.problems === 0 };
        await out.add(`${first ? '' : '\n  '}],\n  "summary": ${JSON.stringify(summary)}\n}\n`);
      } else if (!o.quiet) {
        const table =
          s.chunkSectors === undefined
            ? ''
            : `chunk ${s.chunkSectors} sectors, ${s.valid ? 'valid' : 'invalid'}, ${s.exceptions} exceptions in ${s.areas} areas: `;
        await out.add(`${cow.path}: ${table}${s.problems === 0 ? 'clean' : `${s.problems} problem${s.problems === 1 ? '' : 's'} found`}\n`);
      }
      await out.flush();
      return s.problems === 0 ? ExitCode.OK : PROBLEMS_FOUND;
    } finally {
      closeAll(devices);
    }
  },
});

// ---------------------------------------------------------------- dump

const dumpCommand = defineCommand({
  command: 'snapshot-dump <cow>',
  describe: "Write a COW's header and exception table as a versioned JSON or XML document (docs/snapshot-dump.md)",
  positionals: cowPositional,
  options: {
    format: { schema: z.enum(['json', 'xml']), type: 'string', default: 'json', describe: 'json or xml' },
    output: { schema: z.string().min(1).optional(), type: 'string', alias: 'o', describe: 'write to this file (default: stdout)' },
    ...jsonOption,
  },
  examples: [
    ['$0 snapshot-dump cow.img -o cow.json', 'save the metadata of a COW'],
    ['$0 snapshot-dump cow.img --format xml | less', 'read the table'],
  ],
  epilog: `The table is dumped as stored, up to its terminator, entry by entry (millions of entries take no more memory than a few). snapshot-restore writes it back byte for byte.\n${TOOLS_HELP}`,
  async run(o) {
    if (!o.output && o.json) throw new CliError('usage', '--json needs --output FILE (the dump goes to stdout otherwise)');
    const devices = await openAll([{ path: o.cow, role: 'COW', write: false }]);
    const [cow] = devices;
    try {
      if (o.output) refuseOutputOverInput(o.output, [cow]);
      const syntax: DumpSyntax = o.format;
      const file = await OutputFile.open(o.output);
      const out = new PieceWriter(file);
      let chunkSectors = 0;
      let exceptions = 0;
      try {
        const count = await dumpCow(cow, {
          header: async (h) => {
            chunkSectors = h.chunkSectors;
            await out.add(dumpPrologue(syntax, h));
          },
          entries: async (olds, news) => {
            const lines: string[] = [];
            for (let i = 0; i < olds.length; i++) lines.push(dumpEntry(syntax, exceptions + i, olds[i], news[i]));
            exceptions += olds.length;
            await out.add(lines.join(''));
          },
        });
        await out.add(dumpEpilogue(syntax, count));
        await out.flush();
        await file.commit();
      } catch (e) {
        file.discard();
        throw e;
      }
      if (o.output) {
        const result = new Output(o.json, 'snapshot-dump');
        result.line(`dumped ${exceptions} exceptions of ${cow.path} (chunk ${chunkSectors} sectors) to ${o.output} as ${syntax}`);
        result.result({ dryRun: false, cow: cow.path, output: o.output, format: syntax, chunkSectors, exceptions });
      }
      return ExitCode.OK;
    } finally {
      closeAll(devices);
    }
  },
});

// ---------------------------------------------------------------- restore

const restoreCommand = defineCommand({
  command: 'snapshot-restore <cow>',
  describe: "Write a COW's header and exception table from a snapshot-dump document; data chunks are not touched",
  positionals: cowPositional,
  options: {
    input: { schema: z.string().min(1), type: 'string', alias: 'i', required: true, describe: 'the dump (JSON or XML; - is stdin)' },
    force: flag('write over a device that holds a filesystem, an LVM label or a dirty log'),
    dryRun: flag('check the dump against the COW, write nothing'),
    ...jsonOption,
  },
  examples: [
    ['$0 snapshot-restore -i cow.json cow.img', 'write the metadata back'],
    ['$0 snapshot-dump old.img | $0 snapshot-restore -i - new.img', 'copy the table to another COW'],
  ],
  epilog: `The whole dump is read and checked by the kernel's rules (entries inside the COW and outside metadata chunks, no origin or COW chunk twice, room for the areas) before anything is written. The header is first written invalid, then the areas, then the header as dumped, with flushes between.\n${TOOLS_HELP}`,
  async run(o) {
    const input = openDumpFile(o.input);
    try {
      const devices = await openAll([{ path: o.cow, role: 'COW', write: !o.dryRun }]);
      const [cow] = devices;
      try {
        const head = Buffer.alloc(Math.min(cow.sizeBytes, 4096));
        if (head.length >= 4) await cow.read(head, 0, head.length, 0);
        if (!o.force && head.length >= 4 && head.readUInt32LE(0) !== SNAP_MAGIC) {
          const found = await probeFormat(cow);
          if (found)
            throw new CliError(
              'format-present',
              `${cow.path} holds ${found.what} at sector ${found.sector}; give --force to write a COW table over it`,
            );
        }
        const plan = planRestore(cow, readDump(input.read));
        const areas = plan.areas;
        const what = `${plan.table.size} exceptions in ${areas} area${areas === 1 ? '' : 's'} (chunk ${plan.header.chunkSectors} sectors, ${plan.header.valid ? 'valid' : 'invalid'})`;
        const result = new Output(o.json, 'snapshot-restore');
        if (o.dryRun) {
          result.line(`would restore ${what} to ${cow.path}`);
          result.result({
            dryRun: true,
            cow: cow.path,
            exceptions: plan.table.size,
            areas,
            chunkSectors: plan.header.chunkSectors,
            valid: plan.header.valid,
          });
          return ExitCode.OK;
        }
        await restoreCow(cow, plan);
        const status = storeStatus(await PersistentStore.open(cow));
        result.line(`restored ${what} to ${cow.path}; status ${status}`);
        result.result({
          dryRun: false,
          cow: cow.path,
          exceptions: plan.table.size,
          areas,
          chunkSectors: plan.header.chunkSectors,
          valid: plan.header.valid,
          status,
        });
        return ExitCode.OK;
      } finally {
        closeAll(devices);
      }
    } finally {
      input.close();
    }
  },
});

// ---------------------------------------------------------------- delta

const deltaCommand = defineCommand({
  command: 'snapshot-delta <cow>',
  describe: 'List the origin chunks where the snapshot differs from its origin, as sorted, coalesced ranges',
  positionals: cowPositional,
  options: { ...originOption, ...jsonOption },
  examples: [
    ['$0 snapshot-delta cow.img', 'one line per range: start chunk, chunks, origin sector, sectors'],
    ['$0 snapshot-delta cow.img --json', '{"chunkSectors": 8, "ranges": [{"start": 3, "count": 1}, ...]}'],
  ],
  epilog: `Every exception is a changed chunk: the origin was written after its copy was saved, or the snapshot was written. Ranges are in origin chunks of the COW's chunk size, ascending, neighbours joined. An invalid snapshot is refused: its table no longer lists every change.\n${TOOLS_HELP}`,
  async run(o) {
    const devices = await openAll([
      { path: o.cow, role: 'COW', write: false },
      ...(o.origin ? [{ path: o.origin, role: 'origin', write: false }] : []),
    ]);
    const [cow, origin] = devices;
    try {
      const store = await PersistentStore.open(cow, { originSectors: origin?.sizeSectors, origin });
      if (!store.valid)
        throw new CliError('invalid-snapshot', `snapshot in ${cow.path} is invalid: its table no longer lists every changed chunk`);
      const cs = store.chunkSectors;
      const out = new PieceWriter(await OutputFile.open(undefined));
      let first = true;
      if (o.json) await out.add(`{"chunkSectors": ${cs}, "ranges": [`);
      else
        await out.add(
          `# ${cow.path}: chunk ${cs} sectors, ${store.table.size} changed chunks\n# start_chunk chunks origin_sector sectors\n`,
        );
      for (const r of deltaRanges(store.table)) {
        if (o.json) await out.add(`${first ? '' : ', '}{"start": ${r.start}, "count": ${r.count}}`);
        else await out.add(`${r.start} ${r.count} ${r.start * cs} ${r.count * cs}\n`);
        first = false;
      }
      if (o.json) await out.add(']}\n');
      await out.flush();
      return ExitCode.OK;
    } finally {
      closeAll(devices);
    }
  },
});

// ---------------------------------------------------------------- repair

/** Dropped entries named one by one; past this many they are only counted. */
const DROPS_LISTED = 1000;

async function copyWhole(src: BlockDevice, dst: BlockDevice): Promise<void> {
  const piece = Buffer.alloc(1 << 20);
  for (let at = 0; at < src.sizeBytes; at += piece.length) {
    const n = Math.min(piece.length, src.sizeBytes - at);
    await src.read(piece, 0, n, at);
    await dst.write(piece, 0, n, at);
  }
  await dst.flush();
}

const repairCommand = defineCommand({
  command: 'snapshot-repair <cow>',
  describe: 'Rebuild a damaged COW table keeping every intact exception; says what it drops, writes only with -o or --in-place',
  positionals: cowPositional,
  options: {
    ...originOption,
    output: {
      schema: z.string().min(1).optional(),
      type: 'string',
      alias: 'o',
      describe: 'write a repaired copy of the COW here (created at the COW size)',
    },
    inPlace: flag('rewrite the table in the COW itself (run without it first to see what it will do)'),
    chunkSize: {
      schema: z.coerce.number().int().min(1).optional(),
      type: 'number',
      describe: "chunk size in sectors, when the header's is damaged",
    },
    ...jsonOption,
  },
  examples: [
    ['$0 snapshot-repair cow.img', 'show what a repair would keep and drop; write nothing'],
    ['$0 snapshot-repair cow.img -o repaired.img', 'write a repaired copy'],
    ['$0 snapshot-repair cow.img --in-place', 'rewrite the table in place'],
  ],
  epilog: `Kept: entries inside the COW and outside metadata chunks, the first use of each origin and COW chunk, and entries past a premature terminator that sit where the kernel's allocation order puts them (up to the first all-zero area). The table is rewritten in table order without holes, as snapshot-restore writes it; data chunks are copied (-o) or left alone.\n${TOOLS_HELP}`,
  async run(o) {
    if (o.output && o.inPlace) throw new CliError('usage', '--output and --in-place exclude each other');
    // A new output file is made at the COW's size, and removed again if the repair does not complete.
    let created: string | undefined;
    if (o.output && !fs.existsSync(o.output) && fs.existsSync(o.cow)) {
      refusePartialSectorsOf(o.cow);
      fs.writeFileSync(o.output, '', { flag: 'wx' });
      created = o.output;
      fs.truncateSync(o.output, fs.statSync(o.cow).size);
    }
    try {
      return await repairWith(o);
    } catch (e) {
      if (created) fs.rmSync(created, { force: true });
      throw e;
    }
  },
});

async function repairWith(o: {
  cow: string;
  origin?: string;
  output?: string;
  inPlace: boolean;
  chunkSize?: number;
  json: boolean;
}): Promise<ExitCodeValue> {
  {
    const devices = await openAll([
      { path: o.cow, role: 'COW', write: o.inPlace },
      ...(o.output ? [{ path: o.output, role: 'output', write: true }] : []),
      ...(o.origin ? [{ path: o.origin, role: 'origin', write: false }] : []),
    ]);
    const cow = devices[0];
    const target = o.output ? devices[1] : o.inPlace ? cow : undefined;
    const origin = o.origin ? devices[devices.length - 1] : undefined;
    const out = new Output(o.json, 'snapshot-repair');
    try {
      if (o.output && target && target.sizeBytes < cow.sizeBytes) {
        throw new CliError('size-mismatch', `--output ${o.output} is ${target.sizeBytes} bytes, smaller than the COW (${cow.sizeBytes})`);
      }
      const drops: DroppedEntry[] = [];
      const plan = await planRepair(cow, {
        originSectors: origin?.sizeSectors,
        chunkSectors: o.chunkSize,
        onDrop: (d) => void (drops.length < DROPS_LISTED && drops.push(d)),
      });
      for (const d of drops) out.line(`dropped area ${d.area} entry ${d.entry} (old ${d.oldChunk} → new ${d.newChunk}): ${d.reason}`);
      if (plan.dropped > drops.length) out.line(`... and ${plan.dropped - drops.length} more dropped`);
      if (target && o.output) await copyWhole(cow, target);
      if (target) await restoreCow(target, plan);
      const kept = `kept ${plan.table.size} of ${plan.found} exceptions (${plan.recovered} recovered past the terminator), dropped ${plan.dropped}`;
      const done = o.output
        ? `wrote ${o.output}`
        : o.inPlace
          ? `rewrote the table of ${cow.path}`
          : 'nothing written (give -o NEW or --in-place)';
      out.line(`${kept}; ${done}`);
      out.result({
        dryRun: false,
        cow: cow.path,
        output: o.output,
        inPlace: o.inPlace,
        written: target !== undefined,
        found: plan.found,
        kept: plan.table.size,
        recovered: plan.recovered,
        dropped: plan.dropped,
        droppedEntries: drops,
      });
      return ExitCode.OK;
    } finally {
      closeAll(devices);
    }
  }
}

function refusePartialSectorsOf(cow: string): void {
  if (fs.existsSync(cow) && fs.statSync(cow).isFile() && fs.statSync(cow).size % 512 !== 0) {
    throw new CliError('partial-sector', `COW ${cow} is not a whole number of 512-byte sectors`);
  }
  if (fs.existsSync(cow) && !fs.statSync(cow).isFile()) {
    throw new CliError(
      'usage',
      `-o creates a file the size of the COW, which needs the COW to be an image file; give an existing device as -o instead`,
    );
  }
}

// ---------------------------------------------------------------- revalidate

const revalidateCommand = defineCommand({
  command: 'snapshot-revalidate <cow>',
  describe: 'Clear the invalid flag of a snapshot, only when a full check finds nothing else wrong',
  positionals: cowPositional,
  options: { ...originOption, dryRun: flag('check, and say what would be done; write nothing'), ...jsonOption },
  examples: [
    ['$0 snapshot-revalidate cow.img --dry-run', 'check an overflowed COW and say what it still protects'],
    ['$0 snapshot-revalidate cow.img --origin origin.img', 'make it usable again'],
  ],
  epilog: `An invalidated snapshot stopped saving origin chunks when it was invalidated: chunks of the origin written since then, and not in its table, now read as the origin's new data. Revalidating makes the table usable again (to read the chunks it holds, or to merge them back); it does not bring back what was not saved.\n${TOOLS_HELP}`,
  async run(o) {
    const devices = await openAll([
      { path: o.cow, role: 'COW', write: !o.dryRun },
      ...(o.origin ? [{ path: o.origin, role: 'origin', write: false }] : []),
    ]);
    const [cow, origin] = devices;
    try {
      const r = await revalidateCow(cow, { originSectors: origin?.sizeSectors, origin, dryRun: o.dryRun });
      if (r.blocking.length > 0) {
        const first = r.blocking[0];
        throw new CliError(
          'invalid-snapshot',
          `${cow.path}: check found ${r.blocking.length} problem${r.blocking.length === 1 ? '' : 's'} besides the invalid flag, first ${first.kind} at byte ${first.byteOffset}; nothing written (run snapshot-check, then snapshot-repair)`,
        );
      }
      const out = new Output(o.json, 'snapshot-revalidate');
      const n = r.summary.exceptions;
      const protects = `it holds ${n} saved chunk${n === 1 ? '' : 's'} of ${r.summary.chunkSectors} sectors; origin chunks written after the invalidation and not among them are not protected`;
      if (r.summary.valid !== false) out.line(`${cow.path} is valid already; nothing written`);
      else if (o.dryRun) out.line(`would clear the invalid flag of ${cow.path}: ${protects}`);
      else out.line(`cleared the invalid flag of ${cow.path}: ${protects}`);
      out.result({
        dryRun: o.dryRun,
        cow: cow.path,
        wasValid: r.summary.valid !== false,
        written: r.written,
        exceptions: n,
        chunkSectors: r.summary.chunkSectors,
      });
      return ExitCode.OK;
    } finally {
      closeAll(devices);
    }
  },
});

export const snapshotToolCommands: DmtoolCommand[] = [
  checkCommand,
  dumpCommand,
  restoreCommand,
  deltaCommand,
  repairCommand,
  revalidateCommand,
];
