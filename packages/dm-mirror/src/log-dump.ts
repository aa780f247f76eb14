import { Bitmap } from './bitmap';
import { MirrorError } from './errors';
import { encodeDiskLog, LOG_BITMAP_BYTE, LOG_HEADER_BYTES } from './log-format';

/**
 * The mirror log dump (docs/mirror-log-tools.md): a disk log as text
 * lines or JSON, its out-of-sync regions as ranges. Pure.
 */
export const LOG_DUMP_FORMAT = 'dmtool-mirror-log-dump';
export const LOG_DUMP_FORMAT_VERSION = 1;
const UNUSED_BYTES = LOG_BITMAP_BYTE - LOG_HEADER_BYTES;

export interface RegionRange {
  start: number;
  count: number;
}

export interface LogDump {
  /** The header's version (1 or 2), kept as read. */
  version: number;
  nrRegions: number;
  /** The 1008 unused header bytes; all zero in a log dmtool or the kernel created. */
  unused: Buffer;
  clean: Bitmap;
}

/** Out-of-sync (dirty) regions as ascending ranges, scanning whole bytes where they are uniform. */
export function* dirtyRanges(clean: Bitmap): Generator<RegionRange> {
  const bytes = clean.bytes;
  let start = -1;
  for (let r = 0; r < clean.bits;) {
    const b = bytes[r >>> 3];
    if ((r & 7) === 0 && r + 8 <= clean.bits && (b === 0xff || b === 0)) {
      if (b === 0 && start < 0) start = r;
      if (b === 0xff && start >= 0) {
        yield { start, count: r - start };
        start = -1;
      }
      r += 8;
      continue;
    }
    const isClean = (b >> (r & 7)) & 1;
    if (!isClean && start < 0) start = r;
    if (isClean && start >= 0) {
      yield { start, count: r - start };
      start = -1;
    }
    r++;
  }
  if (start >= 0) yield { start, count: clean.bits - start };
}

/** The text dump, line by line. */
export function* logDumpText(d: LogDump): Generator<string> {
  yield `${LOG_DUMP_FORMAT} ${LOG_DUMP_FORMAT_VERSION}\n`;
  yield `version ${d.version}\n`;
  yield `regions ${d.nrRegions}\n`;
  yield `in-sync ${d.clean.count()}\n`;
  if (d.unused.some((b) => b !== 0)) yield `unused ${d.unused.toString('hex')}\n`;
  for (const r of dirtyRanges(d.clean)) yield `dirty ${r.start} ${r.count}\n`;
}

/** The JSON dump, piece by piece. */
export function* logDumpJson(d: LogDump): Generator<string> {
  yield `{\n  "format": "${LOG_DUMP_FORMAT}",\n  "formatVersion": ${LOG_DUMP_FORMAT_VERSION},\n  "version": ${d.version},\n  "regions": ${d.nrRegions},\n  "inSync": ${d.clean.count()},\n`;
  if (d.unused.some((b) => b !== 0)) yield `  "unused": "${d.unused.toString('hex')}",\n`;
  yield '  "dirty": [';
  let first = true;
  for (const r of dirtyRanges(d.clean)) {
    yield `${first ? '' : ','}\n    { "start": ${r.start}, "count": ${r.count} }`;
    first = false;
  }
  yield `${first ? '' : '\n  '}]\n}\n`;
}

function bad(message: string): never {
  throw new MirrorError('EINVAL', 'bad-dump', message);
}

function wholeNumber(v: unknown, what: string, max: number): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0 || v > max) bad(`${what} must be a whole number from 0 to ${max}`);
  return v as number;
}

/** Collects a dump's fields in order, checking each; `finish` gives the log. */
class LogDumpBuilder {
  version?: number;
  nrRegions?: number;
  inSync?: number;
  unused = Buffer.alloc(UNUSED_BYTES);
  private clean?: Bitmap;
  private next = 0;

  setHeader(version: unknown, regions: unknown, inSync: unknown, unusedHex: unknown, at: string): void {
    if (version !== 1 && version !== 2) bad(`${at}version must be 1 or 2`);
    this.version = version as number;
    this.nrRegions = wholeNumber(regions, `${at}regions`, 0xffffffff);
    if (this.nrRegions === 0) bad(`${at}regions must be at least 1`);
    if (inSync !== undefined) this.inSync = wholeNumber(inSync, `${at}in-sync`, this.nrRegions);
    if (unusedHex !== undefined) {
      if (typeof unusedHex !== 'string' || !/^[0-9a-f]*$/.test(unusedHex) || unusedHex.length !== UNUSED_BYTES * 2) {
        bad(`${at}unused must be ${UNUSED_BYTES} bytes in lower-case hex`);
      }
      this.unused = Buffer.from(unusedHex as string, 'hex');
    }
    this.clean = new Bitmap(this.nrRegions);
    this.clean.fill(true);
  }

  dirty(start: unknown, count: unknown, at: string): void {
    if (!this.clean || this.nrRegions === undefined) return bad(`${at}dirty ranges come after version and regions`);
    const s = wholeNumber(start, `${at}start`, this.nrRegions - 1);
    const n = wholeNumber(count, `${at}count`, this.nrRegions);
    if (n === 0 || s + n > this.nrRegions) bad(`${at}range ${s}+${n} is empty or past region ${this.nrRegions - 1}`);
    if (s < this.next) bad(`${at}ranges must be ascending and apart (${s} < ${this.next})`);
    this.clean.fillRange(s, s + n, false);
    this.next = s + n;
  }

  finish(): LogDump {
    if (!this.clean || this.version === undefined || this.nrRegions === undefined) return bad('the dump has no version and regions');
    if (this.inSync !== undefined && this.inSync !== this.clean.count()) {
      bad(`in-sync says ${this.inSync}, the dirty ranges leave ${this.clean.count()} regions in sync`);
    }
    return { version: this.version, nrRegions: this.nrRegions, unused: this.unused, clean: this.clean };
  }
}

/** Read a text dump, line by line (`lines` yields them without their newline). */
export function parseLogDumpText(lines: Iterable<string>): LogDump {
  const b = new LogDumpBuilder();
  const header: Record<string, string> = {};
  let lineNo = 0;
  let started = false;
  let headerDone = false;
  for (const raw of lines) {
    lineNo++;
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const at = `dump line ${lineNo}: `;
    if (!started) {
      if (line !== `${LOG_DUMP_FORMAT} ${LOG_DUMP_FORMAT_VERSION}`) bad(`${at}expected "${LOG_DUMP_FORMAT} ${LOG_DUMP_FORMAT_VERSION}"`);
      started = true;
      continue;
    }
    const [key, ...rest] = line.split(/\s+/);
    if (key === 'dirty') {
      if (!headerDone) {
        b.setHeader(num(header.version), num(header.regions), num(header['in-sync']), header.unused, at);
        headerDone = true;
      }
      if (rest.length !== 2) bad(`${at}expected "dirty START COUNT"`);
      b.dirty(num(rest[0]), num(rest[1]), at);
      continue;
    }
    if (headerDone) bad(`${at}"${key}" after the dirty ranges`);
    if (!['version', 'regions', 'in-sync', 'unused'].includes(key) || rest.length !== 1) bad(`${at}unknown line "${line.slice(0, 40)}"`);
    if (key in header) bad(`${at}"${key}" given twice`);
    header[key] = rest[0];
  }
  if (!started) bad('dump line 1: the dump is empty');
  if (!headerDone) b.setHeader(num(header.version), num(header.regions), num(header['in-sync']), header.unused, '');
  return b.finish();
}

function num(v: string | undefined): number | undefined {
  return v === undefined ? undefined : /^(0|[1-9]\d{0,15})$/.test(v) ? Number(v) : NaN;
}

/** Read a JSON dump (held whole: the caller bounds its size). */
export function parseLogDumpJson(text: string): LogDump {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (e) {
    return bad(`the JSON dump does not parse: ${(e as Error).message}`);
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return bad('the JSON dump is not an object');
  const d = doc as Record<string, unknown>;
  if (d.format !== LOG_DUMP_FORMAT) bad(`format is ${JSON.stringify(d.format)}, not "${LOG_DUMP_FORMAT}"`);
  if (d.formatVersion !== LOG_DUMP_FORMAT_VERSION)
    bad(`format version ${JSON.stringify(d.formatVersion)} is not supported (only ${LOG_DUMP_FORMAT_VERSION})`);
  const b = new LogDumpBuilder();
  b.setHeader(d.version, d.regions, d.inSync, d.unused, '');
  if (!Array.isArray(d.dirty)) bad('"dirty" must be an array of { "start": N, "count": N }');
  (d.dirty as unknown[]).forEach((r, i) => {
    if (typeof r !== 'object' || r === null) bad(`dirty range ${i} must be { "start": N, "count": N }`);
    const range = r as Record<string, unknown>;
    b.dirty(range.start, range.count, `dirty range ${i}: `);
  });
  return b.finish();
}

/** The log buffer a dump restores: the kernel's layout, with the dump's version and unused bytes. */
export function encodeLogDump(d: LogDump, logicalBlockSize = 512): Buffer {
  const buf = encodeDiskLog(d.nrRegions, d.clean, logicalBlockSize, d.unused);
  buf.writeUInt32LE(d.version, 4);
  return buf;
}
