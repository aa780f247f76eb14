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
