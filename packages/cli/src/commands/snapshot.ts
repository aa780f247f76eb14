import {
  CowSummary,
  forEachArea,
  mergeSnapshot,
  MergeResult,
  Origin,
  readCowSummary,
  Snapshot,
  storeStatus,
  WritePlan,
} from '@dmtool/dm-snapshot';
import { BlockDevice, SECTOR_BYTES } from '@dmtool/kcopyd';
import { resolver } from '../util/open-device';
import { z } from 'zod';
import { openOriginAndCow } from '../util/snapshot-operands';
import { closeAll, openAll } from '../util/devices';
import { volumeOperand } from '../util/open-device';
import { LVM_LOCK_DIR, lockVolumeGroup } from '../util/vg-lock';
import { commitMergedMetadata, finishMetadataUpdate, planMergedMetadata } from '../util/lvm-merge-metadata';
import { shellQuote } from '../util/resume-command';
import { interruptedMessage, interruptSignal } from '../util/interrupt';
import { CliError, kindOf } from '../util/errors';
import { ExitCode, ExitCodeValue, EXIT_CODES_HELP } from '../util/exit-codes';
import { defineCommand, DmtoolCommand } from '../util/define-command';
import { flag, jsonOption, optionalSectorsOption, progressOptions, sectorsOption } from '../util/options';
import { progressModeFor } from '../util/progress-mode';
import { bytesPerSecond, percentOf } from '../json/numbers';
import { Output } from '../util/output';
import { writeStdout } from '../util/stdio';
import { NumberLines } from '../util/number-lines';
import { OutputFile } from '../util/output-file';
import { Progress } from '../util/progress';
import { bufferPieces, filePieces, openInput, PIPE_INPUT_LIMIT_BYTES, readBounded } from '../util/input';
import { formatBytes, formatRate, plural, rateLimitSchema, rateSchema } from '../util/units';

const SNAPSHOT_HELP = `Sectors are 512 bytes. The COW uses the kernel's persistent format (dm-snapshot "P"), so LVM/kernel snapshots can be read and merged offline, and what dmtool writes the kernel accepts.\n${EXIT_CODES_HELP}`;

const pairPositionals = {
  origin: {
    schema: z.string().min(1),
    describe: 'origin device or image (the data the snapshot was taken of), or an LVM snapshot PV[,PV...]:VG/SNAP in place of ORIGIN COW',
  },
  cow: { schema: z.string().min(1).optional(), describe: 'COW device or image (kernel persistent exception store)' },
};

function statusJson(snapStatus: string, store: CowSummary) {
  const u = store.usage();
  return {
    status: snapStatus,
    valid: store.valid,
    chunkSectors: store.chunkSectors,
    exceptions: store.exceptions,
    allocatedSectors: u.allocatedSectors,
    totalSectors: u.totalSectors,
    metadataSectors: u.metadataSectors,
    currentArea: store.currentArea,
    exceptionsPerArea: store.exceptionsPerArea,
    dataPercent: percentOf(u.allocatedSectors, u.totalSectors),
  };
}

// ---------------------------------------------------------------- create

const createCommand = defineCommand({
  command: 'snapshot-create <origin> [cow]',
  describe: 'Format a COW device for a snapshot of ORIGIN (kernel persistent format)',
  positionals: pairPositionals,
  options: {
    chunkSize: sectorsOption('chunk size in sectors (power of two, e.g. 8 = 4 KiB)', { required: true }),
    force: flag('format even if the COW already holds a snapshot header'),
    dryRun: flag('check everything, write nothing'),
    ...jsonOption,
  },
  examples: [['$0 snapshot-create /dev/vg/data /dev/vg/data-cow --chunk-size 8', 'take a snapshot with 4 KiB chunks']],
  epilog: SNAPSHOT_HELP,
  async run(o) {
    const out = new Output(o.json, 'snapshot-create');
    const pair = await openOriginAndCow(o, { origin: false, cow: true });
    const [originDev, cowDev] = [pair.origin, pair.cow];
    const origin = new Origin(originDev);
    try {
      if (o.dryRun) {
        const status = await Snapshot.planCreate(origin, cowDev, { chunkSectors: o.chunkSize, force: o.force });
        out.line(`would format ${cowDev.path} with chunk size ${o.chunkSize}; status would be ${status}`);
        out.result({ dryRun: true, origin: originDev.path, cow: cowDev.path, chunkSectors: o.chunkSize, status, table: null });
        return ExitCode.OK;
      }
      const snap = await Snapshot.create(origin, cowDev, { chunkSectors: o.chunkSize, force: o.force });
      out.line(snap.tableLine());
      out.line(snap.statusLine());
      out.result({
        dryRun: false,
        origin: originDev.path,
        cow: cowDev.path,
        chunkSectors: snap.chunkSectors,
        status: snap.status(),
        table: snap.tableLine(),
      });
      return ExitCode.OK;
    } finally {
      await origin.close();
      pair.close();
    }
  },
});

// ---------------------------------------------------------------- status / list

const cowOnly = {
  positionals: { cow: { schema: z.string().min(1), describe: 'COW device or image' } },
  options: {
    origin: { schema: z.string().min(1).optional(), type: 'string', describe: 'origin, to check every exception against its size' },
    ...jsonOption,
  },
} as const;

/** Open the COW read-only and validate its table without holding it (memory bounded whatever the COW's size). */
async function openStoreReadOnly(
  o: { cow: string; origin?: string },
  fn: (store: CowSummary) => Promise<ExitCodeValue>,
): Promise<ExitCodeValue> {
  const devices = await openAll([
    { path: o.cow, role: 'COW', write: false },
    ...(o.origin ? [{ path: o.origin, role: 'origin', write: false }] : []),
  ]);
  try {
    const store = await readCowSummary(devices[0], {
      originSectors: devices[1]?.sizeSectors,
      origin: devices[1],
    });
    return await fn(store);
  } finally {
    closeAll(devices);
  }
}

const statusCommand = defineCommand({
  command: 'snapshot-status <cow>',
  describe: "Print a COW's usage as the kernel's status: <allocated>/<total> <metadata> sectors (or Invalid)",
  ...cowOnly,
  examples: [['$0 snapshot-status /dev/vg/data-cow', 'prints e.g. 2504/32768 24']],
  epilog: SNAPSHOT_HELP,
  async run(o) {
    const out = new Output(o.json, 'snapshot-status');
    return openStoreReadOnly(o, async (store) => {
      const status = storeStatus(store);
      out.line(status);
      out.result({ dryRun: false, cow: store.cow.path, ...statusJson(status, store) });
      return ExitCode.OK;
    });
  },
});

const listCommand = defineCommand({
  command: 'snapshot-list <cow>',
  describe: 'List the exceptions of a COW in table order (origin chunk → COW chunk)',
  ...cowOnly,
  examples: [['$0 snapshot-list cow.img --json', 'every exception as JSON']],
  epilog: SNAPSHOT_HELP,
  async run(o) {
    const out = new Output(o.json, 'snapshot-list');
    return openStoreReadOnly(o, async (store) => {
      const cs = store.chunkSectors;
      const status = storeStatus(store);
      // A second pass over the areas, after the whole table was validated: entries are streamed, never held.
      const eachEntry = (fn: (index: number, oldChunk: number, newChunk: number) => void | Promise<void>) =>
        store.valid && store.exceptions > 0
          ? forEachArea(store.cow, store.geometry, async (area, d) => {
              for (let i = 0; i < d.count; i++) {
                // Awaited only when the callback is waiting for stdout: a promise per entry is garbage for a million entries.
                const waiting = fn(area * store.exceptionsPerArea + i, d.olds[i], d.news[i]);
                if (waiting) await waiting;
              }
            })
          : Promise.resolve();
      if (o.json) {
        const table: { index: number; oldChunk: number; newChunk: number; originSector: number; cowSector: number }[] = [];
        await eachEntry((index, oldChunk, newChunk) => {
          table.push({ index, oldChunk, newChunk, originSector: oldChunk * cs, cowSector: newChunk * cs });
        });
        out.result({ dryRun: false, cow: store.cow.path, ...statusJson(status, store), table });
        return ExitCode.OK;
      }
      out.line(`# ${store.cow.path}: chunk ${plural(cs, 'sector')}, ${plural(store.exceptions, 'exception')}, status ${status}`);
      out.line('# index old_chunk new_chunk origin_sector cow_sector');
      // Five numbers of at most 16 digits each, with their separators.
      const lines = new NumberLines(4096, 5 * 17);
      await eachEntry((index, oldChunk, newChunk) => {
        if (!lines.add(index, oldChunk, newChunk, oldChunk * cs, newChunk * cs)) return undefined;
        // Waits while a slow reader (a pipe) has not taken the last piece: memory stays bounded.
        return writeStdout(lines.take());
      });
      if (!lines.empty) await writeStdout(lines.take());
      return ExitCode.OK;
    });
  },
});

// ---------------------------------------------------------------- read / write

async function withSnapshot(
  o: { origin: string; cow?: string; chunkSize?: number },
  write: { origin: boolean; cow: boolean },
  fn: (origin: Origin, snap: Snapshot, inputs: BlockDevice[]) => Promise<ExitCodeValue>,
): Promise<ExitCodeValue> {
  const pair = await openOriginAndCow(o, write);
  const origin = new Origin(pair.origin);
  try {
    const snap = await Snapshot.open(origin, pair.cow, { chunkSectors: o.chunkSize ?? pair.lvm?.segment.chunkSectors });
    return await fn(origin, snap, pair.inputs);
  } finally {
    await origin.close();
    pair.close();
  }
}

const readCommand = defineCommand({
  command: 'snapshot-read <origin> [cow]',
  describe: 'Read the snapshot view (exceptions from the COW, the rest from the origin)',
  positionals: pairPositionals,
  options: {
    offset: sectorsOption('first sector (or bytes with k/M/G suffix)', { default: '0' }),
    length: optionalSectorsOption('how much (default: to the end)'),
    output: { schema: z.string().min(1).optional(), type: 'string', alias: 'o', describe: 'write to this file (default: stdout)' },
    ...jsonOption,
    ...progressOptions,
  },
  examples: [
    ['$0 snapshot-read origin.img cow.img -o view.img', 'rebuild the whole snapshot image'],
    ['$0 snapshot-read /dev/loop0 /dev/loop1 --offset 2048 --length 8 | xxd', 'look at 4 KiB of the snapshot'],
  ],
  epilog: SNAPSHOT_HELP,
  async run(o) {
    if (!o.output && o.json) throw new CliError('usage', '--json needs --output FILE (the data goes to stdout otherwise)');
    const out = new Output(o.json, 'snapshot-read');
    const progressMode = progressModeFor(o);
    return withSnapshot(o, { origin: false, cow: false }, async (_origin, snap, inputs) => {
      const length = o.length ?? snap.sizeSectors - o.offset;
      if (length <= 0 || o.offset + length > snap.sizeSectors) {
        throw new CliError(
          'out-of-range',
          `snapshot of ${snap.origin.device.path}: sectors ${o.offset}..${o.offset + length - 1} lie outside the ${snap.sizeSectors}-sector snapshot`,
        );
      }
      if (!snap.valid) throw new CliError('invalid-snapshot', `snapshot in ${snap.cow.path} is invalid; nothing read`);
      if (o.output) refuseOutputOverInput(o.output, inputs);
      const started = Date.now();
      const interrupt = interruptSignal();
      const progress = new Progress('read', { mode: progressMode }, length * SECTOR_BYTES);
      try {
        const output = await OutputFile.open(o.output);
        try {
          const step = 2048;
          const buf = Buffer.alloc(step * SECTOR_BYTES);
          for (let s = o.offset; s < o.offset + length; s += step) {
            if (interrupt.signal.aborted) {
              const state = `read stopped at sector ${s}${output.replacesWhole ? `, ${o.output} left as it was` : ''}`;
              throw new CliError('interrupted', interruptedMessage(state, 'read the range'));
            }
            const n = Math.min(step, o.offset + length - s);
            const part = buf.subarray(0, n * SECTOR_BYTES);
            await snap.read(part, s);
            await output.write(part);
            progress.update((s + n - o.offset) * SECTOR_BYTES);
          }
          await output.commit();
        } catch (e) {
          output.discard();
          throw e;
        }
      } finally {
        progress.stop();
        interrupt.dispose();
      }
      if (o.output) {
        const seconds = (Date.now() - started) / 1000;
        out.line(
          `read ${plural(length, 'sector')} of the snapshot into ${o.output} (${formatBytes(length * SECTOR_BYTES)}, ${formatRate(length * SECTOR_BYTES, seconds)})`,
        );
        const bytes = length * SECTOR_BYTES;
        out.result({
          dryRun: false,
          origin: snap.origin.device.path,
          cow: snap.cow.path,
          offset: o.offset,
          sectors: length,
          bytes,
          output: o.output,
          seconds,
          bytesPerSecond: bytesPerSecond(bytes, seconds),
        });
      }
      return ExitCode.OK;
    });
  },
});

/** snapshot-write copies its input in pieces of this many sectors (1 MiB). */
const WRITE_PIECE_SECTORS = 2048;

const writeCommand = defineCommand({
  command: 'snapshot-write <origin> [cow]',
  describe: 'Write data to the origin (copying old chunks into the COW first) or to the snapshot',
  positionals: pairPositionals,
  options: {
    target: {
      schema: z.enum(['origin', 'snapshot']),
      type: 'string',
      required: true,
      describe: 'where the write goes: origin or snapshot',
    },
    offset: sectorsOption('first sector (or bytes with k/M/G suffix)', { required: true }),
    input: {
      schema: z.string().min(1),
      type: 'string',
      alias: 'i',
      describe: 'data file, a whole number of sectors (default: stdin)',
      default: '-',
    },
    allowInvalidate: flag('write even if the COW cannot hold the new exceptions (the snapshot is invalidated, as the kernel does)'),
    dryRun: flag('check everything and predict the status, write nothing'),
    ...jsonOption,
    ...progressOptions,
  },
  examples: [['$0 snapshot-write origin.img cow.img --target origin --offset 2048 -i block.bin', 'origin write with copy-on-write']],
  epilog: SNAPSHOT_HELP,
  async run(o) {
    const out = new Output(o.json, 'snapshot-write');
    const progressMode = progressModeFor(o);
    const started = Date.now();
    const input = openInput(o.input);
    try {
      return await withSnapshot(o, { origin: o.target === 'origin', cow: true }, async (origin, snap) => {
        const dev = o.target === 'origin' ? origin.device : snap.cow;
        // Never read more than the target range holds: the input's size is checked first when known,
        // and a pipe or device is read up to the range (64 MiB at most) before anything is written.
        const roomSectors = Math.max(0, snap.sizeSectors - o.offset);
        let data: Buffer | undefined;
        if (input.sizeBytes === undefined) {
          const limitBytes = Math.min(roomSectors * SECTOR_BYTES, PIPE_INPUT_LIMIT_BYTES);
          data = await readBounded(input, limitBytes);
          if (!data && limitBytes === PIPE_INPUT_LIMIT_BYTES) {
            throw new CliError(
              'bad-input-data',
              `--input ${o.input}: more than ${PIPE_INPUT_LIMIT_BYTES / (1 << 20)} MiB from a pipe or device; write it to a file and give that`,
            );
          }
          if (!data) {
            throw new CliError(
              'bad-input-data',
              `${o.target} write to ${dev.path} at sector ${o.offset}: input ${o.input} is longer than the ${roomSectors} sectors from there to the end of the ${snap.sizeSectors}-sector ${o.target}`,
            );
          }
        }
        const bytes = data ? data.length : (input.sizeBytes as number);
        const sectors = bytes / SECTOR_BYTES;
        if (bytes === 0 || bytes % SECTOR_BYTES !== 0) {
          throw new CliError(
            'bad-input-data',
            `${o.target} write to ${dev.path} at sector ${o.offset}: input is ${bytes} bytes, not a positive whole number of 512-byte sectors`,
          );
        }
        if (o.offset + sectors > snap.sizeSectors) {
          throw new CliError(
            'out-of-range',
            `${o.target} write to ${dev.path} sectors ${o.offset}..${o.offset + sectors - 1} ends beyond the ${snap.sizeSectors}-sector ${o.target}`,
          );
        }
        if (!snap.valid) throw new CliError('invalid-snapshot', `snapshot in ${snap.cow.path} is invalid; refusing to write`);
        const plan = snap.planWrite(o.target, o.offset, sectors);
        if (!plan.fits && !o.allowInvalidate)
          throw new CliError('would-overflow', overflowRefusal(o.target, dev, o.offset, sectors, snap, plan));
        if (o.dryRun) {
          out.line(
            `would write ${plural(sectors, 'sector')} to the ${o.target} at sector ${o.offset} (${plural(plan.chunks, 'new exception')}); status now ${snap.status()}, after ${plan.statusAfter}`,
          );
          out.result({
            dryRun: true,
            target: o.target,
            offset: o.offset,
            sectors,
            status: snap.status(),
            exceptions: snap.exceptionCount,
            newExceptions: plan.chunks,
            fits: plan.fits,
            statusAfter: plan.statusAfter,
          });
          return ExitCode.OK;
        }
        // Pieces end on multiples of WRITE_PIECE_SECTORS (and of the chunk size), as one large write would cut them.
        const pieceSectors = Math.max(WRITE_PIECE_SECTORS, snap.chunkSectors);
        const firstBytes = Math.min(bytes, (pieceSectors - (o.offset % pieceSectors)) * SECTOR_BYTES);
        const pieceBytes = pieceSectors * SECTOR_BYTES;
        const pieces = data ? bufferPieces(data, firstBytes, pieceBytes) : filePieces(input, firstBytes, pieceBytes);
        let sector = o.offset;
        const progress = new Progress('write', { mode: progressMode }, bytes);
        try {
          for await (const piece of pieces) {
            if (sector + piece.length / SECTOR_BYTES > o.offset + sectors)
              throw new CliError('input-changed', `--input ${o.input} grew while it was being read`);
            if (o.target === 'origin') await origin.write(piece, sector);
            else await snap.write(piece, sector);
            sector += piece.length / SECTOR_BYTES;
            progress.update((sector - o.offset) * SECTOR_BYTES);
          }
        } finally {
          progress.stop();
        }
        if (sector !== o.offset + sectors) throw new CliError('input-changed', `--input ${o.input} shrank while it was being read`);
        await snap.flush();
        if (o.target === 'origin') await origin.flush();
        out.line(`wrote ${plural(sectors, 'sector')} to the ${o.target} at sector ${o.offset}; status ${snap.status()}`);
        out.result(
          {
            dryRun: false,
            target: o.target,
            offset: o.offset,
            sectors,
            status: snap.status(),
            exceptions: snap.exceptionCount,
            invalidated: !snap.valid,
            seconds: (Date.now() - started) / 1000,
          },
          snap.valid,
        );
        if (!snap.valid) {
          process.stderr.write(`dmtool: snapshot in ${snap.cow.path} was invalidated (COW full or I/O error)\n`);
          return ExitCode.IO_ERROR;
        }
        return ExitCode.OK;
      });
    } finally {
      input.close();
    }
  },
});

// ---------------------------------------------------------------- merge

function mergeSummary(r: MergeResult, origin: string, cow: string) {
  return {
    origin,
    cow,
    chunkSectors: r.chunkSectors,
    exceptions: r.exceptions,
    mergedChunks: r.mergedChunks,
    mergedBytes: r.mergedBytes,
    percent: percentOf(r.mergedChunks, r.exceptions),
    batches: r.batches,
    runs: r.runs,
    seconds: r.seconds,
    bytesPerSecond: bytesPerSecond(r.mergedBytes, r.seconds),
    dryRun: r.dryRun,
    status: r.status,
  };
}

/**
 * Data an offline merge copies per origin flush unless --batch-size says
 * otherwise (the library's default is 64 MiB, which a served merge keeps:
 * it holds writes to a batch's chunks while the batch is copied). Fewer,
 * fuller flushes: the origin's dirty pages lie closer together, so
 * write-back merges more of them (docs/benchmarks.md, dm-snapshot).
 */
const OFFLINE_MERGE_BATCH_BYTES = 256 * 2 ** 20;

const mergeCommand = defineCommand({
  command: 'snapshot-merge <origin> [cow]',
  describe: 'Merge a snapshot back into its origin, offline; crash-safe and resumable (rerun to finish)',
  positionals: pairPositionals,
  options: {
    rate: {
      schema: rateLimitSchema.optional(),
      type: 'string',
      describe: 'limit copying to this many bytes per second, e.g. 100M (100 MiB/s; k, M, G are binary)',
    },
    batchSize: { schema: rateSchema.optional(), type: 'string', describe: 'data copied per origin flush + table update (default 256M)' },
    kernelBatches: flag("one run of consecutive chunks per batch, exactly as the kernel's snapshot-merge"),
    updateMetadata: flag('LVM snapshot: after the merge, remove the snapshot from the VG metadata on every PV, as lvm2 does'),
    output: {
      schema: z.string().min(1).optional(),
      type: 'string',
      alias: 'o',
      describe: 'LVM snapshot: write the VG metadata after the merge to this file (for vgcfgrestore) instead of stdout',
    },
    lockDir: {
      schema: z.string().min(1),
      type: 'string',
      default: LVM_LOCK_DIR,
      describe: "with --update-metadata: lvm2's locking_dir, whose V_<VG> lock is held while the metadata is changed",
    },
    dryRun: flag('validate the COW and print the plan, write nothing'),
    ...jsonOption,
    ...progressOptions,
  },
  examples: [
    ['$0 snapshot-merge /dev/vg/data /dev/vg/data-cow', 'roll the origin back to the snapshot'],
    ['$0 snapshot-merge origin.img cow.img --rate 50M --json', 'merge at most 50 MiB/s, print JSON'],
    ['$0 snapshot-merge pv1.img,pv2.img:vg0/snap --update-metadata', 'merge an LVM snapshot and remove it from the VG, as lvm2 does'],
    ['$0 snapshot-merge disk.img:vg0/snap -o vg0.txt', 'merge, and write the metadata for vgcfgrestore -f vg0.txt vg0'],
  ],
  epilog: `Merging proceeds from the end of the exception table; each batch's data is flushed to the origin before its entries are cleared, so after a crash or kill the same command (or the kernel's snapshot-merge) finishes the job. An LVM snapshot PV[,PV...]:VG/SNAP (also one whose merge lvm2 deferred, merging_store) names both origin and COW; after the merge the VG metadata without the snapshot (seqno + 1) is printed, written with -o, or with --update-metadata written into every metadata area of the PVs once the merge is durable, under lvm2's VG lock.\n${SNAPSHOT_HELP}`,
  async run(o) {
    const out = new Output(o.json, 'snapshot-merge');
    const volume = o.cow === undefined ? volumeOperand(o.origin) : undefined;
    if (!volume && (o.updateMetadata || o.output !== undefined)) {
      throw new CliError('usage', '--update-metadata and --output need one LVM snapshot PV[,PV...]:VG/SNAP in place of ORIGIN COW');
    }
    if (o.updateMetadata && o.output !== undefined) throw new CliError('usage', '--update-metadata and --output are exclusive');
    const lock = volume && o.updateMetadata ? lockVolumeGroup(o.lockDir, volume.vg) : undefined;
    try {
      if (volume && o.updateMetadata) {
        const finished = await finishMetadataUpdate(volume, o.dryRun);
        if (finished) {
          const verb = o.dryRun ? 'would write' : 'wrote';
          out.line(
            `the merge of ${volume.vg}/${volume.lv} was done already; ${verb} seqno ${finished.seqno} to ${plural(finished.metadataAreas, 'metadata area')} still holding older metadata`,
          );
          out.result({
            origin: o.origin,
            cow: o.origin,
            chunkSectors: 0,
            exceptions: 0,
            mergedChunks: 0,
            mergedBytes: 0,
            percent: 100,
            batches: 0,
            runs: 0,
            seconds: 0,
            bytesPerSecond: 0,
            dryRun: o.dryRun,
            status: '',
            lvm: {
              vg: finished.vg,
              snapshot: volume.lv,
              origin: finished.origin,
              seqno: finished.seqno,
              metadataAreas: finished.metadataAreas,
              updated: !o.dryRun,
              output: null,
              metadata: null,
            },
          });
          return ExitCode.OK;
        }
      }
      return await mergeOnce(o, out);
    } finally {
      lock?.close();
    }
  },
});

async function mergeOnce(
  o: {
    origin: string;
    cow?: string;
    rate?: number;
    batchSize?: number;
    kernelBatches: boolean;
    updateMetadata: boolean;
    output?: string;
    dryRun: boolean;
    json: boolean;
    progress?: string;
    quiet: boolean;
  },
  out: Output,
): Promise<ExitCodeValue> {
  const progress = new Progress('merge', { mode: o.dryRun ? { kind: 'off' } : progressModeFor(o), rateBytesPerSecond: o.rate });
  const pair = await openOriginAndCow(o, { origin: true, cow: true });
  const [originDev, cowDev] = [pair.origin, pair.cow];
  const interrupt = interruptSignal();
  let exceptionsLeft: number | undefined;
  try {
    const planned = pair.lvm ? await planMergedMetadata(pair.lvm, o.updateMetadata) : undefined;
    if (planned && o.output !== undefined) refuseOutputOverInput(o.output, pair.inputs);
    const r = await mergeSnapshot(originDev, cowDev, {
      rateBytesPerSecond: o.rate,
      batchBytes: o.batchSize ?? OFFLINE_MERGE_BATCH_BYTES,
      kernelBatches: o.kernelBatches,
      dryRun: o.dryRun,
      signal: interrupt.signal,
      // Copied bytes, not only retired batches: a large batch shows progress as it goes.
      onProgress: (p) => {
        exceptionsLeft = p.totalChunks - p.mergedChunks;
        progress.setTotal(p.totalBytes);
        progress.update(p.copiedBytes);
      },
    });
    progress.stop();
    const summary = mergeSummary(r, originDev.path, cowDev.path);
    const lines: string[] = [];
    if (r.dryRun) {
      lines.push(
        `would merge ${plural(r.exceptions, 'exception')} (${formatBytes(r.mergedBytes)}) in ${plural(r.batches, 'batch')} of ${plural(r.runs, 'run')}; status after: ${r.status}`,
      );
    } else {
      lines.push(
        `merged ${plural(r.mergedChunks, 'exception')} (${formatBytes(r.mergedBytes)}) in ${plural(r.batches, 'batch')}, ${r.seconds.toFixed(2)} s (${formatRate(r.mergedBytes, r.seconds)}); status ${r.status}`,
      );
    }
    if (!planned || !pair.lvm) {
      for (const l of lines) out.line(l);
      out.result(summary);
      return ExitCode.OK;
    }
    const lvm = {
      vg: planned.vg,
      snapshot: planned.snapshot,
      origin: planned.origin,
      seqno: planned.seqno,
      metadataAreas: planned.metadataAreas,
      updated: false,
      output: o.output ?? null,
      metadata: null as string | null,
    };
    const what = `VG ${planned.vg} metadata without ${planned.snapshot} (seqno ${planned.seqno})`;
    if (o.updateMetadata) {
      if (!r.dryRun) {
        await commitMergedMetadata(
          pair.lvm,
          planned,
          ['dmtool', 'snapshot-merge', o.origin, '--update-metadata'].map(shellQuote).join(' '),
        );
        lvm.updated = true;
      }
      lines.push(`${r.dryRun ? 'would write' : 'wrote'} the ${what} to ${plural(planned.metadataAreas, 'metadata area')}`);
    } else if (o.output !== undefined) {
      if (!r.dryRun) {
        const file = await OutputFile.open(o.output);
        try {
          await file.write(Buffer.from(planned.text));
          await file.commit();
        } catch (e) {
          file.discard();
          throw e;
        }
      }
      lines.push(
        `${r.dryRun ? 'would write' : 'wrote'} the ${what} to ${o.output}; apply it with vgcfgrestore -f ${o.output} ${planned.vg}`,
      );
    } else {
      lvm.metadata = planned.text;
      // The metadata text is the output: the summary goes to stderr.
      if (!o.json) {
        for (const l of lines) process.stderr.write(`${l}\n`);
        lines.length = 0;
        await writeStdout(Buffer.from(planned.text));
      }
    }
    for (const l of lines) out.line(l);
    out.result({ ...summary, lvm });
    return ExitCode.OK;
  } catch (e) {
    if (kindOf(e) !== 'interrupted' || exceptionsLeft === undefined) throw e;
    const state = `${plural(exceptionsLeft, 'exception')} left to merge, the merged ones flushed and retired`;
    throw new CliError('interrupted', interruptedMessage(state, 'finish the merge (it resumes where it stopped)'));
  } finally {
    progress.stop();
    interrupt.dispose();
    pair.close();
  }
}

export const snapshotCommands: DmtoolCommand[] = [createCommand, statusCommand, listCommand, readCommand, writeCommand, mergeCommand];

/** One line: the COW space a write needs and has, when it would overflow the COW. */
function overflowRefusal(target: string, dev: BlockDevice, offset: number, sectors: number, snap: Snapshot, plan: WritePlan): string {
  const cs = snap.chunkSectors;
  const amount = (chunks: number) =>
    `${plural(chunks, 'chunk')} = ${plural(chunks * cs, 'sector')} = ${formatBytes(chunks * cs * SECTOR_BYTES)}`;
  return (
    `${target} write to ${dev.path} sectors ${offset}..${offset + sectors - 1} needs ${amount(plan.chunks)} of new COW space, ` +
    `${snap.cow.path} has room for ${amount(plan.roomChunks)}: the snapshot would be invalidated (give --allow-invalidate to write anyway)`
  );
}

/** The output file must not be the origin or the COW being read (opening it would truncate it). */
export function refuseOutputOverInput(output: string, inputs: BlockDevice[]): void {
  let id: string;
  try {
    id = resolver.identify(output);
  } catch {
    return; // does not exist yet: nothing to overwrite
  }
  const same = inputs.find((d) => d.identity === id);
  if (same) throw new CliError('same-device', `--output ${output} is ${same.path}, which is being read; name another file`);
}
