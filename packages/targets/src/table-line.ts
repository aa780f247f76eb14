/** One line of a device-mapper table: `<start sector> <length in sectors> <target> <arguments...>`. */
export interface TableLine {
  startSectors: number;
  lengthSectors: number;
  target: string;
  args: string[];
}

/** A table line that cannot be used; `message` names the field. */
export class TableError extends Error {
  readonly code = 'EINVAL';
  constructor(message: string) {
    super(message);
    this.name = 'TableError';
  }
}

export function parseSectors(text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw new TableError(`${what} must be a whole number of sectors, got ${JSON.stringify(text)}`);
  const n = Number(text);
  if (!Number.isSafeInteger(n)) throw new TableError(`${what} ${text} is too large`);
  return n;
}

export function parseTableLine(line: string): TableLine {
  const words = line
    .trim()
    .split(/\s+/)
    .filter((w) => w.length > 0);
  if (words.length < 3) throw new TableError(`table line needs <start> <length> <target> [args]: ${JSON.stringify(line)}`);
  const [start, length, target, ...args] = words;
  const startSectors = parseSectors(start, 'start');
  const lengthSectors = parseSectors(length, 'length');
  if (lengthSectors === 0) throw new TableError('length must be at least one sector');
  return { startSectors, lengthSectors, target, args };
}

/** `linear <device> <offset>`. */
export function linearArgs(t: TableLine): { device: string; offsetSectors: number } {
  if (t.target !== 'linear') throw new TableError(`not a linear target: ${t.target}`);
  if (t.args.length !== 2) throw new TableError(`linear takes <device> <offset>, got ${t.args.length} arguments`);
  return { device: t.args[0], offsetSectors: parseSectors(t.args[1], 'linear offset') };
}

/** `snapshot-origin <origin>`. */
export function snapshotOriginArgs(t: TableLine): { origin: string } {
  if (t.args.length !== 1) throw new TableError(`snapshot-origin takes <origin>, got ${t.args.length} arguments`);
  return { origin: t.args[0] };
}

export interface SnapshotArgs {
  origin: string;
  cow: string;
  /** P (persistent), PO (persistent, overflow-aware) or N (transient). */
  type: 'P' | 'PO' | 'N';
  chunkSectors: number;
}

/** `snapshot <origin> <COW> <P|PO|N> <chunk size>`. */
export function snapshotArgs(t: TableLine): SnapshotArgs {
  if (t.args.length !== 4) throw new TableError(`snapshot takes <origin> <COW> <P|PO|N> <chunk size>, got ${t.args.length} arguments`);
  const [origin, cow, typeWord, chunk] = t.args;
  const type = typeWord.toUpperCase();
  if (type !== 'P' && type !== 'PO' && type !== 'N')
    throw new TableError(`snapshot type must be P, PO or N, got ${JSON.stringify(typeWord)}`);
  const chunkSectors = parseSectors(chunk, 'chunk size');
  if (chunkSectors === 0 || (chunkSectors & (chunkSectors - 1)) !== 0)
    throw new TableError(`chunk size must be a power of two number of sectors, got ${chunk}`);
  return { origin, cow, type, chunkSectors };
}
