import {
  AbortError,
  ClientOptions,
  DestinationRegion,
  DeviceError,
  KcopydClient,
  KcopydIoError,
  normalizeRanges,
  Region,
  SECTOR_BYTES,
  SectorRange,
  SparseCopy,
  UnflushedWritesLost,
} from '@dmtool/kcopyd';
import { errorJson } from '../json/error-json';
import { bytesPerSecond, percentOf } from '../json/numbers';
import { interruptedMessage, interruptExitCode, interruptSignal } from './interrupt';
import { ExitCode, ExitCodeValue } from './exit-codes';
import { Output } from './output';
import { Progress, ProgressMode } from './progress';
import { formatBytes, formatRate, plural } from './units';

const PROGRESS_FLUSH_MS = 1000;

export interface CopyRun {
  from?: Region;
  to: (DestinationRegion & { count?: number })[];
  count?: number;
  flags: number;
  signal: AbortSignal;
  onProgress: (doneSectors: number) => void;
  /** Copy only these parts of the range (offsets from its start). */
  only?: readonly SectorRange[];
  sparse?: SparseCopy;
  /**
   * Parts of the range written to every destination and flushed on every
   * destination since the last call: called after each such flush.
   */
  onDurable?: (ranges: SectorRange[]) => void;
}

/**
 * A copy or zero job as a command runs it: its own kcopyd client, its
 * progress, SIGINT/SIGTERM turned into an abort.
 */
export async function runWithProgress(
  label: string,
  clientOpts: ClientOptions,
  mode: ProgressMode,
  job: Omit<CopyRun, 'signal' | 'onProgress'> & { count: number },
): Promise<CopyRunResult> {
  const client = new KcopydClient(clientOpts);
  // A resumed copy's progress is of what this run does: its rate and ETA stay true.
  const totalSectors = job.only ? job.only.reduce((n, r) => n + r.count, 0) : job.count;
  const progress = new Progress(label, { mode, rateBytesPerSecond: clientOpts.rateBytesPerSecond }, totalSectors * SECTOR_BYTES);
  const interrupt = interruptSignal();
  try {
    return await run(client, { ...job, signal: interrupt.signal, onProgress: (s) => progress.update(s * SECTOR_BYTES) });
  } finally {
    progress.stop();
    interrupt.dispose();
    await client.destroy();
  }
}

/**
 * One line per distinct error: errors that differ only in their sector
 * range (a device that failed every request in flight, as a network device
 * does once its server is gone) are one line, with their count.
 */
export function errorLines(errors: readonly DeviceError[]): string[] {
  const groups = new Map<string, { first: DeviceError; count: number }>();
  for (const e of errors) {
    const key = `${e.path}\0${e.message.replace(/ at sector \d+ \(\+\d+ sectors\)/, '')}`;
    const g = groups.get(key);
    if (g) g.count++;
    else groups.set(key, { first: e, count: 1 });
  }
  return [...groups.values()].map((g) => (g.count > 1 ? `${g.first.message} (and ${g.count - 1} more requests alike)` : g.first.message));
}

/** Errors and interruption on stderr, one line each; the exit code for the outcome. */
export function outcome(
  out: Output,
  r: CopyRunResult,
  totalSectors: number,
  lines: { success: string; verb: 'copied' | 'zeroed'; resume?: { command: string; doneSectors: number } },
): ExitCodeValue {
  for (const line of errorLines(r.errors)) process.stderr.write(`dmtool: ${line}\n`);
  if (r.interrupted && lines.resume) {
    const state = `${lines.resume.doneSectors} of ${plural(totalSectors, 'sector')} ${lines.verb} and flushed`;
    process.stderr.write(`dmtool: ${interruptedMessage(state, 'finish', lines.resume.command)}\n`);
    return interruptExitCode();
  }
  if (r.interrupted) {
    // Sub-jobs complete out of order, so what was done is a count, not a prefix: a rerun does the whole range.
    const state = `${r.sectorsDone} of ${plural(totalSectors, 'sector')} ${lines.verb} and flushed`;
    process.stderr.write(`dmtool: ${interruptedMessage(state, `${lines.verb === 'copied' ? 'copy' : 'zero'} the whole range`)}\n`);
    return interruptExitCode();
  }
  if (r.readErr || r.writeErr) {
    process.stderr.write(`dmtool: finished with errors: readErr=${r.readErr ? 1 : 0} writeErr=0x${r.writeErr.toString(16)}\n`);
    if (lines.resume) process.stderr.write(`dmtool: the map keeps what was done; to finish: ${lines.resume.command}\n`);
    return ExitCode.IO_ERROR;
  }
  out.line(r.report(lines.success));
  return ExitCode.OK;
}

/** The outcome fields of a copy or zero job's JSON (docs/json.md#copy-and-zero). */
export function jobJson(r: CopyRunResult, totalSectors: number, resumedSectors = 0) {
  const bytesDone = r.sectorsDone * SECTOR_BYTES;
  return {
    sectorsDone: r.sectorsDone,
    bytesDone,
    percent: percentOf(resumedSectors + r.sectorsDone, totalSectors),
    seconds: r.seconds,
    bytesPerSecond: bytesPerSecond(bytesDone, r.seconds),
    writeErr: r.writeErr,
    interrupted: r.interrupted,
    errors: r.errors.map(errorJson),
  };
}

export interface CopyRunResult {
  readErr: boolean;
  writeErr: number;
  errors: DeviceError[];
  sectorsDone: number;
  seconds: number;
  interrupted: boolean;
  report(what: string): string;
}

/**
 * Passes that write again what a destination reported lost at a flush (its
 * server restarted with the writes in a volatile cache), after the job's own.
 */
const MAX_REWRITE_PASSES = 3;

/**
 * Run one kcopyd copy (or zero, without `from`) and then flush every
 * destination that took no error, so "done" means durable. An interrupt
 * stops new sub-jobs; what was written is still flushed. A copy whose
 * destination reports acknowledged writes lost at a flush copies again
 * what it wrote since the last successful flush, then flushes again.
 */
export async function run(client: KcopydClient, job: CopyRun): Promise<CopyRunResult> {
  const started = process.hrtime.bigint();
  let readErr = false;
  let writeErr = 0;
  let errors: DeviceError[] = [];
  let sectorsDone = 0;
  let interrupted = false;
  let flushErr = 0;
  const flushErrors: DeviceError[] = [];
  /** Destinations that reported lost writes, with their last report; failures only if the rewrite does not finish. */
  const losses = new Map<number, UnflushedWritesLost>();
  /** Flush every destination still in use; true if one reported acknowledged writes lost (only a copy can write them again). */
  const flushAll = async (): Promise<boolean> => {
    let lost = false;
    await Promise.all(
      job.to.map(async (d, i) => {
        if ((writeErr | flushErr) & (1 << i)) return;
        try {
          await d.device.flush();
        } catch (e) {
          if (e instanceof UnflushedWritesLost && job.from) {
            losses.set(i, e);
            lost = true;
            return;
          }
          if (!(e instanceof DeviceError)) throw e;
          flushErr |= 1 << i;
          flushErrors.push(e);
        }
      }),
    );
    return lost;
  };
  // Progress reports durable sectors: about once a second the destinations
  // are flushed and what was written before the flush is reported.
  let written = 0;
  let durable = 0;
  let unflushed = false;
  let flushing: Promise<void> | undefined;
  // Pieces done since the last flush began; a flush covers those done before it started.
  let piecesWritten: SectorRange[] = [];
  // Pieces to write again: done since the last successful flush began when a flush reported writes lost, or in
  // flight then (started in an earlier loss generation).
  let rewrite: SectorRange[] = [];
  let lossGeneration = 0;
  const startedIn = new Map<number, number>();
  const writesLost = (covered: SectorRange[]) => {
    rewrite.push(...covered, ...piecesWritten);
    piecesWritten = [];
    lossGeneration++;
  };
  const reportDurable = (ranges: SectorRange[]) => {
    // A destination that failed is no longer flushed: nothing is durable on it from then on.
    if (ranges.length > 0 && (writeErr | flushErr) === 0) job.onDurable?.(ranges);
  };
  const ticker = setInterval(() => {
    if (flushing || !unflushed) return;
    unflushed = false;
    const upTo = written;
    const covered = piecesWritten;
    piecesWritten = [];
    flushing = flushAll()
      .then((lost) => {
        if (lost) return writesLost(covered);
        durable = upTo;
        job.onProgress(durable);
        reportDurable(covered);
      })
      // A failed flush is the job's to report (its final flush fails too); progress just stays where it was.
      .catch(() => undefined)
      .finally(() => (flushing = undefined));
  }, PROGRESS_FLUSH_MS);
  const onProgress = (p: { doneSectors: number }) => {
    written = p.doneSectors;
    unflushed = true;
  };
  const onPieceStart = (startSector: number) => startedIn.set(startSector, lossGeneration);
  const onPieceDone = (startSector: number, count: number) => {
    const generation = startedIn.get(startSector) ?? lossGeneration;
    startedIn.delete(startSector);
    (generation < lossGeneration ? rewrite : piecesWritten).push({ startSector, count });
  };
  const failed = (e: unknown) => {
    if (e instanceof KcopydIoError) {
      readErr ||= e.readErr;
      writeErr |= e.writeErr;
      errors = [...errors, ...e.errors];
    } else if (e instanceof AbortError) {
      interrupted = true;
    } else {
      throw e;
    }
  };
  try {
    const r = job.from
      ? await client.copy(job.from, job.to, {
          flags: job.flags,
          signal: job.signal,
          onProgress,
          only: job.only,
          sparse: job.sparse,
          onPieceStart,
          onPieceDone,
        })
      : await client.zero(
          job.to.map((d) => ({ device: d.device, sector: d.sector, count: job.count as number })),
          { flags: job.flags, signal: job.signal, onProgress },
        );
    ({ readErr, writeErr, errors, sectorsDone } = r);
  } catch (e) {
    failed(e);
    if (e instanceof KcopydIoError || e instanceof AbortError) sectorsDone = e.sectorsDone;
  } finally {
    clearInterval(ticker);
    await flushing;
  }
  for (let pass = 0; ; pass++) {
    if (await flushAll()) writesLost([]);
    else reportDurable(piecesWritten.splice(0));
    if (rewrite.length === 0 || pass === MAX_REWRITE_PASSES || interrupted || readErr || (writeErr | flushErr) !== 0) break;
    const only = normalizeRanges(rewrite, job.from!.count);
    rewrite = [];
    try {
      await client.copy(job.from!, job.to, {
        flags: job.flags,
        signal: job.signal,
        only,
        sparse: job.sparse,
        onPieceStart,
        onPieceDone,
      });
    } catch (e) {
      failed(e);
    }
  }
  // Lost writes not written again (errors, an interrupt, or passes used up) fail their destination.
  if (rewrite.length > 0) {
    for (const [i, e] of losses) {
      if ((flushErr | writeErr) & (1 << i)) continue;
      flushErr |= 1 << i;
      flushErrors.push(e);
    }
  }
  writeErr |= flushErr;
  errors = [...errors, ...flushErrors];
  if (!readErr && writeErr === 0) job.onProgress(sectorsDone);
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  return {
    readErr,
    writeErr,
    errors,
    sectorsDone,
    seconds,
    interrupted,
    report(what: string) {
      const bytes = sectorsDone * 512;
      return `${what}: ${formatBytes(bytes)} in ${seconds.toFixed(2)} s (${formatRate(bytes, seconds)})`;
    },
  };
}
