import {
  AppliedChunks,
  applyStream,
  ByteReader,
  checkTargetSize,
  decodeExportHeader,
  EXPORT_HEADER_BYTES,
  ExportHeader,
  planExport,
  StreamSummary,
  verifyStream,
  writeExport,
} from '@dmtool/dm-snapshot';
import { BlockDevice } from '@dmtool/kcopyd';
import { z } from 'zod';
import { bytesPerSecond } from '../json/numbers';
import { defineCommand, DmtoolCommand } from '../util/define-command';
import { closeAll, openAll } from '../util/devices';
import { openOriginAndCow } from '../util/snapshot-operands';
import { CliError, kindOf } from '../util/errors';
import { ExitCode, EXIT_CODES_HELP } from '../util/exit-codes';
import { interruptedMessage, interruptSignal } from '../util/interrupt';
import { resolver } from '../util/open-device';
import { flag, jsonOption, progressOptions } from '../util/options';
import { Output } from '../util/output';
import { OutputFile } from '../util/output-file';
import { Progress } from '../util/progress';
import { progressModeFor } from '../util/progress-mode';
import { defaultSpoolDir, openStreamInput, replay, Spool, StreamInput } from '../util/stream-input';
import { formatBytes, formatRate, plural } from '../util/units';
import { refuseOutputOverInput } from './snapshot';

const STREAM_HELP = `The stream (docs/snapshot-export.md) holds the changed origin chunks of the COW's exception table, in ascending ranges, with their data; a header, a sha256 per record and a trailer with the digest of the whole stream. Sectors are 512 bytes.\n${EXIT_CODES_HELP}`;

const dataOption = {
  schema: z.enum(['origin', 'snapshot']),
  type: 'string',
  default: 'origin',
  describe:
    "origin: the origin's current data of each changed chunk (brings a copy of the origin as it was at the snapshot up to now); snapshot: the snapshot's data (rolls a current copy back to the snapshot)",
} as const;

/** What a stream holds, in words: `310 chunks in 45 ranges (1.2 MiB of origin data, chunk 8 sectors)`. */
function streamWhat(h: ExportHeader): string {
  return `${plural(h.chunkCount, 'chunk')} in ${plural(h.rangeCount, 'range')} (${formatBytes(h.dataBytes)} of ${h.data} data, chunk ${plural(h.chunkSectors, 'sector')})`;
}

function streamJson(h: ExportHeader, digest: string) {
  return {
    data: h.data,
    chunkSectors: h.chunkSectors,
    originSectors: h.originSectors,
    ranges: h.rangeCount,
    chunks: h.chunkCount,
    records: h.recordCount,
    bytes: h.dataBytes,
    streamBytes: h.streamBytes,
    digest,
  };
}

// ---------------------------------------------------------------- export

const exportCommand = defineCommand({
  command: 'snapshot-export <origin> [cow]',
  describe: "Write a snapshot's changed chunks, with the origin's or the snapshot's data, as a stream snapshot-apply applies elsewhere",
  positionals: {
    origin: {
      schema: z.string().min(1),
      describe: 'origin device or image (the data the snapshot was taken of), or an LVM snapshot PV[,PV...]:VG/SNAP in place of ORIGIN COW',
    },
    cow: { schema: z.string().min(1).optional(), describe: 'COW device or image (kernel persistent exception store)' },
  },
  options: {
    data: dataOption,
    output: { schema: z.string().min(1), type: 'string', alias: 'o', required: true, describe: 'the stream file, or - for stdout' },
    ...jsonOption,
    ...progressOptions,
  },
  examples: [
    [
      '$0 snapshot-export /dev/vg/data /dev/vg/data-snap-cow -o data.delta',
      "tonight's changes since the snapshot, to apply to last night's backup",
    ],
    [
      '$0 snapshot-export origin.img cow.img -o - | ssh backup dmtool snapshot-apply -i - /backup/data.img',
      'replicate the changes to another machine',
    ],
    [
      '$0 snapshot-export origin.img cow.img --data snapshot -o rollback.delta',
      'the data to roll a copy of the origin back to the snapshot',
    ],
    [
      '$0 snapshot-export /dev/sdb,/dev/sdc:vg0/data-snap -o data.delta',
      'an LVM snapshot found on its PVs: origin LV and COW LV in one operand',
    ],
  ],
  epilog: `ORIGIN and COW are opened read-only with a shared lock. -o FILE is written under a temporary name and renamed once complete; -o - writes to stdout (never to a terminal).\n${STREAM_HELP}`,
  async run(o) {
    const toStdout = o.output === '-';
    if (toStdout && o.json) throw new CliError('usage', '--json needs -o FILE (with -o - the stream goes to stdout)');
    if (toStdout && process.stdout.isTTY) throw new CliError('usage', '-o -: stdout is a terminal; give -o FILE or a pipe');
    const out = new Output(o.json, 'snapshot-export');
    const progressMode = progressModeFor(o);
    const started = Date.now();
    const pair = await openOriginAndCow(o, { origin: false, cow: false });
    const { origin, cow } = pair;
    try {
      if (!toStdout) refuseOutputOverInput(o.output, pair.inputs);
      const plan = await planExport(origin, cow, o.data);
      const h = plan.header;
      const interrupt = interruptSignal();
      const progress = new Progress('export', { mode: progressMode }, h.dataBytes);
      let digest: string;
      try {
        const output = await OutputFile.open(o.output);
        try {
          ({ digest } = await writeExport(origin, cow, plan, {
            write: (piece) => output.write(piece),
            signal: interrupt.signal,
            onProgress: (bytes) => progress.update(bytes),
          }));
          await output.commit();
        } catch (e) {
          output.discard();
          if (kindOf(e) !== 'interrupted') throw e;
          const state = output.replacesWhole
            ? `export stopped, ${o.output} left as it was`
            : 'export stopped, the stream written is incomplete';
          throw new CliError('interrupted', interruptedMessage(state, 'export the whole stream'));
        }
      } finally {
        progress.stop();
        interrupt.dispose();
      }
      const seconds = (Date.now() - started) / 1000;
      // With -o - stdout is the stream: nothing else goes there.
      if (!toStdout)
        out.line(
          `exported ${streamWhat(h)} to ${o.output} (${formatBytes(h.streamBytes)}, ${formatRate(h.streamBytes, seconds)}); digest ${digest}`,
        );
      out.result({
        dryRun: false,
        origin: origin.path,
        cow: cow.path,
        output: o.output,
        ...streamJson(h, digest),
        seconds,
        bytesPerSecond: bytesPerSecond(h.streamBytes, seconds),
      });
      return ExitCode.OK;
    } finally {
      pair.close();
    }
  },
});

// ---------------------------------------------------------------- apply

/** The header, read first: it says the stream's size and the target's, before the target is opened. */
async function readHeader(
  input: StreamInput,
  signal: AbortSignal,
): Promise<{ header: ExportHeader; bytes: Buffer; rest: ReturnType<StreamInput['reader']> }> {
  const reader = input.reader(signal);
  const bytes = Buffer.alloc(EXPORT_HEADER_BYTES);
  const n = await reader.read(bytes, bytes.length);
  return { header: decodeExportHeader(bytes.subarray(0, n)), bytes, rest: reader };
}

const applyCommand = defineCommand({
  command: 'snapshot-apply <target>',
  describe: "Apply a snapshot-export stream to a device of the origin's size: check it whole, then write its chunks and flush",
  positionals: { target: { schema: z.string().min(1), describe: "the device or image to write, exactly the stream's origin size" } },
  options: {
    input: { schema: z.string().min(1), type: 'string', alias: 'i', required: true, describe: 'the stream file, or - for stdin' },
    spoolDir: {
      schema: z.string().min(1).optional(),
      type: 'string',
      describe: "where a piped stream is kept while it is checked (default: the target's folder for an image, else $TMPDIR)",
    },
    verifyFirst: {
      schema: z.boolean(),
      type: 'boolean',
      default: true,
      describe:
        'check the whole stream before writing anything; --no-verify-first writes each record once it is checked, and a broken stream stops at the first bad record (exit 1), saying which chunks were written',
    },
    dryRun: flag('check the whole stream against the target, write nothing'),
    ...jsonOption,
    ...progressOptions,
  },
  examples: [
    ['$0 snapshot-apply -i data.delta /backup/data.img', "bring last night's copy up to the origin's state at export"],
    [
      'ssh host dmtool snapshot-export o.img c.img -o - | $0 snapshot-apply -i - /dev/vg/replica',
      'apply a piped stream (spooled, checked, then written)',
    ],
    ['$0 snapshot-apply -i data.delta /backup/data.img --dry-run', 'check a stream and that it fits the target'],
  ],
  epilog: `TARGET is opened for writing with an exclusive lock. Its size must be the stream's origin size (no option overrides this). Nothing is written until the whole stream has been checked: a file is read twice, a pipe is spooled (--spool-dir) and checked as it arrives. Applying the same stream again writes the same data: an interrupted apply is finished by running it again.\n${STREAM_HELP}`,
  async run(o) {
    const out = new Output(o.json, 'snapshot-apply');
    const progressMode = progressModeFor(o);
    const started = Date.now();
    const targetId = safeIdentity(o.target);
    if (targetId !== undefined && targetId === safeIdentity(o.input))
      throw new CliError('same-device', `--input ${o.input} is the target ${o.target}; name another file`);
    const input = openStreamInput(o.input);
    const interrupt = interruptSignal();
    try {
      const first = await readHeader(input, interrupt.signal).catch((e: unknown) => {
        if (kindOf(e) !== 'interrupted') throw e;
        throw new CliError('interrupted', interruptedMessage('nothing written', 'apply the stream'));
      });
      const h = first.header;
      const devices = await openAll([{ path: o.target, role: 'target', write: true }]);
      const [target] = devices;
      let spool: Spool | undefined;
      try {
        checkTargetSize(h, target);
        const verifyFirst = o.verifyFirst || o.dryRun;
        if (verifyFirst && !input.seekable && !o.dryRun) spool = Spool.create(o.spoolDir ?? defaultSpoolDir(o.target), h.streamBytes);
        const totalBytes = (verifyFirst ? h.streamBytes : 0) + (o.dryRun ? 0 : h.dataBytes);
        const progress = new Progress('apply', { mode: progressMode }, totalBytes);
        const applied = new AppliedChunks();
        let summary: StreamSummary;
        try {
          summary = await checkThenApply({
            source: replay(first.bytes, first.rest),
            again: () => (spool ? spool.reader() : input.reader(interrupt.signal)),
            spool,
            target,
            verifyFirst,
            dryRun: o.dryRun,
            signal: interrupt.signal,
            applied,
            progress: (bytes) => progress.update(bytes),
          });
        } catch (e) {
          if (kindOf(e) !== 'interrupted') throw e;
          const state = applied.records === 0 ? 'nothing written' : applied.describe();
          throw new CliError(
            'interrupted',
            interruptedMessage(state, 'apply the stream (records written already are written again with the same data)'),
          );
        } finally {
          progress.stop();
        }
        const seconds = (Date.now() - started) / 1000;
        const doc = {
          input: o.input,
          target: target.path,
          ...streamJson(h, summary.digest),
          verifiedFirst: verifyFirst,
          spooled: spool !== undefined,
        };
        if (o.dryRun) {
          out.line(`would apply ${streamWhat(h)} to ${target.path}: the stream checks out, digest ${summary.digest}`);
          out.result({ dryRun: true, ...doc });
          return ExitCode.OK;
        }
        out.line(
          `applied ${streamWhat(h)} to ${target.path} and flushed it (${formatRate(h.dataBytes, seconds)}); digest ${summary.digest}`,
        );
        out.result({ dryRun: false, ...doc, seconds, bytesPerSecond: bytesPerSecond(h.dataBytes, seconds) });
        return ExitCode.OK;
      } finally {
        spool?.close();
        closeAll(devices);
      }
    } finally {
      interrupt.dispose();
      input.close();
    }
  },
});

/**
 * The passes of an apply: the check of the whole stream (through the spool
 * for a pipe) unless --no-verify-first, then, unless a dry run, the writes
 * from the stream read again. Progress counts the checked stream bytes,
 * then the data bytes written.
 */
async function checkThenApply(p: {
  source: ByteReader;
  again: () => ByteReader;
  spool?: Spool;
  target: BlockDevice;
  verifyFirst: boolean;
  dryRun: boolean;
  signal: AbortSignal;
  applied: AppliedChunks;
  progress: (bytes: number) => void;
}): Promise<StreamSummary> {
  let source = p.source;
  let checkedBytes = 0;
  if (p.verifyFirst) {
    const summary = await verifyStream(p.spool ? p.spool.tee(source) : source, { signal: p.signal, onProgress: p.progress });
    if (p.dryRun) return summary;
    checkedBytes = summary.header.streamBytes;
    source = p.again();
  }
  return applyStream(source, p.target, {
    signal: p.signal,
    applied: p.applied,
    onProgress: (bytes) => p.progress(checkedBytes + bytes),
  });
}

/** The identity of a path, or undefined for stdin and names that are not there. */
function safeIdentity(name: string): string | undefined {
  if (name === '-') return undefined;
  try {
    return resolver.identify(name);
  } catch {
    return undefined;
  }
}

export const snapshotExportCommands: DmtoolCommand[] = [exportCommand, applyCommand];
