import {
  checkLogImage,
  decodeDiskLog,
  encodeLogDump,
  LOG_MAGIC,
  LogDump,
  logDumpJson,
  logDumpText,
  MirrorError,
  parseLogDumpJson,
  parseLogDumpText,
  readLogBytes,
} from '@dmtool/dm-mirror';
import { z } from 'zod';
import { closeAll, openAll } from '../util/devices';
import { CliError } from '../util/errors';
import { ExitCode, EXIT_CODES_HELP } from '../util/exit-codes';
import { defineCommand, DmtoolCommand } from '../util/define-command';
import { dumpLines, openDumpFile } from '../util/dump-input';
import { probeFormat } from '../util/formats';
import { flag, jsonOption } from '../util/options';
import { Output } from '../util/output';
import { OutputFile } from '../util/output-file';
import { PieceWriter } from '../util/piece-writer';
import { refuseOutputOverInput } from './snapshot';

/** mirror-log-check's exit code when it found problems, as snapshot-check's. */
const PROBLEMS_FOUND = ExitCode.IO_ERROR;
/** A JSON dump is parsed whole: at most this much of it (the text dump streams). */
const JSON_DUMP_LIMIT_BYTES = 64 << 20;

const LOG_HELP = `The log is the kernel's disk dirty log (dm-log "disk": MiRr, version 2, region count, clean bitmap from byte 1024).\n${EXIT_CODES_HELP}`;
const logPositional = { log: { schema: z.string().min(1), describe: 'dirty log device or image' } };

const checkCommand = defineCommand({
  command: 'mirror-log-check <log>',
  describe: 'Check a dirty log: header, region count, bitmap and padding; report every problem (read-only)',
  positionals: logPositional,
  options: {
    regions: {
      schema: z.coerce.number().int().min(1).max(0xffffffff).optional(),
      type: 'number',
      describe: 'the region count the mirror has',
    },
    quiet: { ...flag('print nothing; the exit code says it all'), alias: 'q' },
    ...jsonOption,
  },
  examples: [
    ['$0 mirror-log-check mirror-log.img --regions 512', 'check a log and its region count'],
    ['$0 mirror-log-check -q mirror-log.img || echo damaged', 'exit 0 when clean, 1 when problems were found'],
  ],
  epilog: `Exit codes: 0 clean, 1 problems found (or an I/O error), 2 bad usage, 3 device refused (docs/mirror-log-tools.md).\n${LOG_HELP}`,
  async run(o) {
    if (o.quiet && o.json) throw new CliError('usage', '--quiet and --json exclude each other');
    const devices = await openAll([{ path: o.log, role: 'log', write: false }]);
    const [log] = devices;
    try {
      const r = checkLogImage(await readLogBytes(log), { logicalBlockSize: log.logicalBlockSize, expectRegions: o.regions });
      const out = new Output(o.json, 'mirror-log-check');
      if (!o.quiet) {
        for (const p of r.problems) out.line(`${p.kind}: ${p.message} (byte ${p.byteOffset} = 0x${p.byteOffset.toString(16)})`);
        const what = r.inSync === undefined ? '' : `dm-mirror log version ${r.version}, ${r.nrRegions} regions, ${r.inSync} in sync: `;
        const n = r.problems.length;
        out.line(`${log.path}: ${what}${n === 0 ? 'clean' : `${n} problem${n === 1 ? '' : 's'} found`}`);
        out.result({
          dryRun: false,
          log: log.path,
          problems: r.problems,
          summary: { version: r.version, regions: r.nrRegions, inSync: r.inSync, clean: n === 0 },
        });
      }
      return r.problems.length === 0 ? ExitCode.OK : PROBLEMS_FOUND;
    } finally {
      closeAll(devices);
    }
  },
});

const dumpCommand = defineCommand({
  command: 'mirror-log-dump <log>',
  describe: 'Write a dirty log as a versioned text (or JSON) document: header and out-of-sync regions as ranges',
  positionals: logPositional,
  options: {
    output: { schema: z.string().min(1).optional(), type: 'string', alias: 'o', describe: 'write to this file (default: stdout)' },
    ...jsonOption,
  },
  examples: [
    ['$0 mirror-log-dump mirror-log.img', 'version, regions, regions in sync, then "dirty START COUNT" lines'],
    ['$0 mirror-log-dump mirror-log.img --json -o log.json', 'the same as JSON, in a file'],
  ],
  epilog: `--json makes the dump itself JSON. mirror-log-restore writes either back byte for byte.\n${LOG_HELP}`,
  async run(o) {
    const devices = await openAll([{ path: o.log, role: 'log', write: false }]);
    const [log] = devices;
    try {
      if (o.output) refuseOutputOverInput(o.output, [log]);
      const buf = await readLogBytes(log);
      const image = decodeDiskLog(buf, { path: log.path, deviceBytes: log.sizeBytes, logicalBlockSize: log.logicalBlockSize });
      if (image.hadSurplusBits) {
        throw new MirrorError(
          'EBADMSG',
          'bad-region-count',
          `dirty log ${log.path} has bits set past its last region; run mirror-log-check`,
          {
            path: log.path,
          },
        );
      }
      const d: LogDump = { version: image.version, nrRegions: image.nrRegions, unused: image.unused, clean: image.clean };
      const file = await OutputFile.open(o.output);
      const out = new PieceWriter(file);
      try {
        for (const piece of o.json ? logDumpJson(d) : logDumpText(d)) await out.add(piece);
        await out.flush();
        await file.commit();
      } catch (e) {
        file.discard();
        throw e;
      }
      if (o.output) {
        process.stdout.write(`dumped the dirty log ${log.path} (${d.nrRegions} regions, ${d.clean.count()} in sync) to ${o.output}\n`);
      }
      return ExitCode.OK;
    } finally {
      closeAll(devices);
    }
  },
});

const restoreCommand = defineCommand({
  command: 'mirror-log-restore <log>',
  describe: 'Write a dirty log from a mirror-log-dump document (text or JSON)',
  positionals: logPositional,
  options: {
    input: { schema: z.string().min(1), type: 'string', alias: 'i', required: true, describe: 'the dump (text or JSON; - is stdin)' },
    force: flag('write over a device that holds a filesystem, an LVM label or a COW'),
    dryRun: flag('check the dump against the log device, write nothing'),
    ...jsonOption,
  },
  examples: [
    ['$0 mirror-log-restore -i log.txt mirror-log.img', 'write the log back'],
    ['$0 mirror-log-dump a.img | $0 mirror-log-restore -i - b.img', 'copy a log'],
  ],
  epilog: `The dump is read and checked whole before anything is written; the log buffer is then written in one piece and flushed.\n${LOG_HELP}`,
  async run(o) {
    const input = openDumpFile(o.input);
    let d: LogDump;
    try {
      d = readLogDump(input);
    } finally {
      input.close();
    }
    const devices = await openAll([{ path: o.log, role: 'log', write: !o.dryRun }]);
    const [log] = devices;
    try {
      const buf = encodeLogDump(d, log.logicalBlockSize);
      if (log.sizeBytes < buf.length) {
        throw new MirrorError(
          'EINVAL',
          'log-too-small',
          `log device ${log.path} is ${log.sizeBytes} bytes; ${d.nrRegions} regions need ${buf.length}`,
          {
            path: log.path,
          },
        );
      }
      const head = Buffer.alloc(4);
      await log.read(head, 0, 4, 0);
      const magic = head.readUInt32LE(0);
      if (!o.force && magic !== LOG_MAGIC && magic !== 0) {
        const found = await probeFormat(log);
        if (found)
          throw new CliError(
            'format-present',
            `${log.path} holds ${found.what} at sector ${found.sector}; give --force to write a dirty log over it`,
          );
      }
      const inSync = d.clean.count();
      const out = new Output(o.json, 'mirror-log-restore');
      if (o.dryRun) {
        out.line(`would restore a dirty log of ${d.nrRegions} regions (${inSync} in sync) to ${log.path}`);
        out.result({ dryRun: true, log: log.path, regions: d.nrRegions, inSync, bytes: buf.length });
        return ExitCode.OK;
      }
      await log.write(buf, 0, buf.length, 0);
      await log.flush();
      out.line(`restored a dirty log of ${d.nrRegions} regions (${inSync} in sync) to ${log.path}`);
      out.result({ dryRun: false, log: log.path, regions: d.nrRegions, inSync, bytes: buf.length });
      return ExitCode.OK;
    } finally {
      closeAll(devices);
    }
  },
});

/** A text dump streams line by line; a JSON one (first character "{") is read whole, up to a limit. */
function readLogDump(input: { read: (buf: Buffer) => number }): LogDump {
  let first = true;
  let json = false;
  const pieces: Buffer[] = [];
  let bytes = 0;
  const lines = dumpLines({
    read: (buf) => {
      const n = input.read(buf);
      if (first && n > 0) json = buf.subarray(0, n).toString('latin1').trimStart().startsWith('{');
      first = false;
      if (json) {
        bytes += n;
        if (bytes > JSON_DUMP_LIMIT_BYTES)
          throw new CliError(
            'bad-input-data',
            `a JSON dump is read whole, and this one is over ${JSON_DUMP_LIMIT_BYTES >> 20} MiB: use the text dump`,
          );
        pieces.push(Buffer.from(buf.subarray(0, n)));
        return n;
      }
      return n;
    },
  });
  const it = lines[Symbol.iterator]();
  const head = it.next();
  if (json) {
    for (let r = it.next(); !r.done; r = it.next());
    return parseLogDumpJson(Buffer.concat(pieces).toString('utf8'));
  }
  return parseLogDumpText(
    (function* () {
      if (!head.done) yield head.value;
      yield* { [Symbol.iterator]: () => it };
    })(),
  );
}

export const mirrorLogToolCommands: DmtoolCommand[] = [checkCommand, dumpCommand, restoreCommand];
