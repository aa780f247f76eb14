import * as fs from 'fs';
import * as path from 'path';
import { BlockDevice, normalizeRanges, SectorRange } from '@dmtool/kcopyd';
import { CliError } from './errors';
import { syncFolder } from './sync-folder';

/**
 * The map of a resumable copy (`copy --map FILE`), as ddrescue keeps one: a
 * small text file naming the copy (devices by identity and size, the range)
 * and the parts of the range that are done, written only after the flush
 * that made them durable. docs/copy-map.md has the format.
 */
export const MAP_MAGIC = 'dmtool-copy-map 1';

export interface MapDevice {
  identity: string;
  sizeBytes: number;
  path: string;
}

export interface CopyMapHeader {
  source: MapDevice;
  destinations: MapDevice[];
  offset: number;
  destOffset: number;
  sectors: number;
}

export interface CopyMap extends CopyMapHeader {
  /** Done parts, as sector offsets from the range's start, sorted and merged. */
  done: SectorRange[];
}

export function mapDevice(d: BlockDevice): MapDevice {
  return { identity: d.identity, sizeBytes: d.sizeBytes, path: d.path };
}

export function formatMap(map: CopyMap): string {
  const dev = (role: string, d: MapDevice) => `${role} ${JSON.stringify(d.identity)} ${d.sizeBytes} ${JSON.stringify(d.path)}`;
  return [
    MAP_MAGIC,
    dev('source', map.source),
    ...map.destinations.map((d) => dev('destination', d)),
    `range ${map.offset} ${map.destOffset} ${map.sectors}`,
    ...map.done.map((r) => `done ${map.offset + r.startSector} ${r.count}`),
    '',
  ].join('\n');
}

/** Parse a map; anything that is not one is a CliError naming the file and line. */
export function parseMap(text: string, file: string): CopyMap {
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const bad = (n: number, why: string) => new CliError('bad-map', `map ${file} line ${n + 1}: ${why}`);
  if (lines[0] !== MAP_MAGIC) throw new CliError('bad-map', `map ${file} is not a dmtool copy map (no "${MAP_MAGIC}" line)`);
  let source: MapDevice | undefined;
  const destinations: MapDevice[] = [];
  let range: number[] | undefined;
  const doneAbsolute: { start: number; count: number }[] = [];
  lines.slice(1).forEach((line, i) => {
    const n = i + 1;
    const m = /^(source|destination) ("(?:[^"\\]|\\.)*") (\d+) ("(?:[^"\\]|\\.)*")$/.exec(line);
    if (m) {
      const d = { identity: jsonString(m[2], () => bad(n, 'the identity is not a quoted string')), sizeBytes: Number(m[3]), path: '' };
      d.path = jsonString(m[4], () => bad(n, 'the path is not a quoted string'));
      if (m[1] === 'source') source = d;
      else destinations.push(d);
      return;
    }
    const r = /^range (\d+) (\d+) (\d+)$/.exec(line);
    if (r) {
      range = r.slice(1).map(Number);
      return;
    }
    const d = /^done (\d+) (\d+)$/.exec(line);
    if (d) {
      doneAbsolute.push({ start: Number(d[1]), count: Number(d[2]) });
      return;
    }
    throw bad(n, `not a source, destination, range or done line: ${JSON.stringify(line.slice(0, 80))}`);
  });
  if (!source || destinations.length === 0 || !range)
    throw new CliError('bad-map', `map ${file} lacks its source, destination or range line`);
  const [offset, destOffset, sectors] = range;
  for (const r of doneAbsolute) {
    if (r.start < offset || r.start + r.count > offset + sectors)
      throw new CliError('bad-map', `map ${file}: done ${r.start} ${r.count} lies outside the range`);
  }
  const done = normalizeRanges(
    doneAbsolute.map((r) => ({ startSector: r.start - offset, count: r.count })),
    sectors,
  );
  return { source, destinations, offset, destOffset, sectors, done };
}

function jsonString(text: string, fail: () => Error): string {
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v === 'string') return v;
  } catch {
    // fall through
  }
  throw fail();
}

/** The map must describe this copy: the same devices (identity and size) and the same range. */
export function checkMapMatches(map: CopyMap, copy: CopyMapHeader, file: string): void {
  const mismatch = (what: string) =>
    new CliError('map-mismatch', `map ${file} belongs to another copy: ${what}; give the copy it records, or remove the map`);
  const same = (a: MapDevice, b: MapDevice) => a.identity === b.identity && a.sizeBytes === b.sizeBytes;
  if (!same(map.source, copy.source))
    throw mismatch(
      `its source is ${map.source.path} (${map.source.sizeBytes} bytes), not ${copy.source.path} (${copy.source.sizeBytes} bytes)`,
    );
  if (map.destinations.length !== copy.destinations.length)
    throw mismatch(`it has ${map.destinations.length} destinations, not ${copy.destinations.length}`);
  map.destinations.forEach((d, i) => {
    const c = copy.destinations[i];
    if (!same(d, c)) throw mismatch(`its destination ${i} is ${d.path} (${d.sizeBytes} bytes), not ${c.path} (${c.sizeBytes} bytes)`);
  });
  if (map.offset !== copy.offset || map.destOffset !== copy.destOffset || map.sectors !== copy.sectors) {
    throw mismatch(
      `its range is --offset ${map.offset} --dest-offset ${map.destOffset} --length ${map.sectors}, not --offset ${copy.offset} --dest-offset ${copy.destOffset} --length ${copy.sectors}`,
    );
  }
}

export function readMap(file: string): CopyMap {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new CliError('usage', `--resume: map ${file} does not exist; leave out --resume to start the copy`);
    throw new CliError('bad-map', `map ${file} cannot be read: ${code ?? String(e)}`);
  }
  return parseMap(text, file);
}

/**
 * Replace the map atomically: a temporary file beside it, fsynced, renamed
 * over it, then the folder fsynced, so a crash leaves the old map or the
 * new one, never a torn one. The temporary file is always a new one
 * (O_EXCL): whatever sits at its name (left by a crashed run with the same
 * pid, or a symlink planted in a shared folder) is removed, never written
 * through.
 */
export function writeMapAtomically(file: string, map: CopyMap): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  fs.rmSync(tmp, { force: true });
  const fd = fs.openSync(tmp, 'wx', 0o644);
  try {
    fs.writeFileSync(fd, formatMap(map));
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
  syncFolder(file);
}

/** Remove the map once the copy is complete (and the folder's entry durably gone). */
export function removeMap(file: string): void {
  fs.rmSync(file, { force: true });
  syncFolder(file);
}
