import { SnapshotError } from './errors';
import { checkChunkSectors, ENTRY_BYTES } from './geometry';
import { SECTOR_BYTES } from '@dmtool/devices';

/**
 * The snapshot dump (docs/snapshot-dump.md): a COW's header and exception
 * table as a JSON or XML document, written entry by entry. Pure: strings
 * in, strings out.
 */
export const DUMP_FORMAT = 'dmtool-snapshot-dump';
export const DUMP_FORMAT_VERSION = 1;

export type DumpSyntax = 'json' | 'xml';

/** What a dump says before its entries. */
export interface DumpHeader {
  /** Size of the COW the dump was taken of (information only; restore checks the table against the target). */
  cowSectors: number;
  valid: boolean;
  chunkSectors: number;
}

export function exceptionsPerAreaOf(chunkSectors: number): number {
  return (chunkSectors * SECTOR_BYTES) / ENTRY_BYTES;
}

/** Everything before the first entry. */
export function dumpPrologue(syntax: DumpSyntax, h: DumpHeader): string {
  const perArea = exceptionsPerAreaOf(h.chunkSectors);
  if (syntax === 'xml') {
    return (
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      `<snapshot_dump format="${DUMP_FORMAT}" format_version="${DUMP_FORMAT_VERSION}" cow_sectors="${h.cowSectors}" ` +
      `magic="SnAp" valid="${h.valid ? 1 : 0}" version="1" chunk_sectors="${h.chunkSectors}" exceptions_per_area="${perArea}">\n`
    );
  }
  return (
    '{\n' +
    `  "format": "${DUMP_FORMAT}",\n` +
    `  "formatVersion": ${DUMP_FORMAT_VERSION},\n` +
    `  "cowSectors": ${h.cowSectors},\n` +
    `  "header": { "magic": "SnAp", "valid": ${h.valid}, "version": 1, "chunkSectors": ${h.chunkSectors} },\n` +
    `  "exceptionsPerArea": ${perArea},\n` +
    '  "exceptions": ['
  );
}

/** Entry `index` (0-based, table order). */
export function dumpEntry(syntax: DumpSyntax, index: number, oldChunk: number, newChunk: number): string {
  if (syntax === 'xml') return `  <exception old_chunk="${oldChunk}" new_chunk="${newChunk}"/>\n`;
  return `${index === 0 ? '' : ','}\n    { "oldChunk": ${oldChunk}, "newChunk": ${newChunk} }`;
}

/** Everything after the last of `count` entries. */
export function dumpEpilogue(syntax: DumpSyntax, count: number): string {
  if (syntax === 'xml') return '</snapshot_dump>\n';
  return `${count === 0 ? '' : '\n  '}]\n}\n`;
}

/** Check the header fields a dump gives; `at` says where they were read. */
export function validateDumpHeader(f: Record<string, unknown>, at: string): DumpHeader {
  const bad = (message: string): never => {
    throw new SnapshotError('EINVAL', 'bad-dump', `${at}: ${message}`);
  };
  if (f.format !== DUMP_FORMAT) bad(`format is ${JSON.stringify(f.format)}, not "${DUMP_FORMAT}"`);
  if (f.formatVersion !== DUMP_FORMAT_VERSION)
    bad(`format version ${JSON.stringify(f.formatVersion)} is not supported (only ${DUMP_FORMAT_VERSION})`);
  if (f.magic !== 'SnAp') bad(`header magic ${JSON.stringify(f.magic)} is not "SnAp"`);
  if (f.version !== 1) bad(`header version ${JSON.stringify(f.version)} is not 1`);
  if (typeof f.valid !== 'boolean') bad('header valid must be true or false');
  const chunkSectors = f.chunkSectors;
  if (typeof chunkSectors !== 'number') return bad('header chunkSectors is missing');
  try {
    checkChunkSectors(chunkSectors);
  } catch (e) {
    if (e instanceof SnapshotError) bad(e.message.replace(/^EINVAL: /, ''));
    throw e;
  }
  if (f.exceptionsPerArea !== undefined && f.exceptionsPerArea !== exceptionsPerAreaOf(chunkSectors)) {
    bad(
      `exceptionsPerArea ${JSON.stringify(f.exceptionsPerArea)} does not match chunk size ${chunkSectors} (${exceptionsPerAreaOf(chunkSectors)})`,
    );
  }
  const cowSectors = f.cowSectors;
  if (typeof cowSectors !== 'number' || !Number.isSafeInteger(cowSectors) || cowSectors < 0)
    return bad('cowSectors must be a whole number');
  return { cowSectors, valid: f.valid as boolean, chunkSectors };
}
