import { SyncMode } from './dirty-log';
import { MirrorError } from './errors';
import { MAX_LEGS } from './mirror-set';
import { isValidRegionSize, regionSizeMessage } from './region-size';

export interface MirrorTable {
  startSector: number;
  lengthSectors: number;
  log: { type: 'core' } | { type: 'disk'; path: string };
  regionSize: number;
  syncMode: SyncMode;
  legs: { path: string; offsetSectors: number }[];
  handleErrors: boolean;
  keepLog: boolean;
}

function bad(message: string): never {
  throw new MirrorError('EINVAL', 'bad-table', `mirror table: ${message}`);
}

function uint(word: string | undefined, what: string): number {
  if (word === undefined) bad(`${what} is missing`);
  if (!/^\d+$/.test(word)) bad(`${what} must be a non-negative integer (got "${word}")`);
  const n = Number(word);
  if (!Number.isSafeInteger(n)) bad(`${what} is too large (${word})`);
  return n;
}

/**
 * Parse a device-mapper table line for the mirror target:
 *   `<start> <length> mirror <log_type> <#log_args> <log_args...> <#mirrors> <dev> <offset>... [<#features> <feature>...]`
 * The `<start> <length> mirror` prefix may be left out only if `lengthSectors` is given.
 */
export function parseMirrorTable(line: string, lengthSectors?: number): MirrorTable {
  const words = line
    .trim()
    .split(/\s+/)
    .filter((w) => w.length > 0);
  let i: number;
  let startSector = 0;
  let length = lengthSectors;
  if (words[0] !== 'mirror') {
    startSector = uint(words[0], 'start sector');
    length = uint(words[1], 'length');
    if (words[2] !== 'mirror') bad(`target must be "mirror" (got "${words[2] ?? ''}")`);
    i = 3;
  } else {
    i = 1;
  }
  if (length === undefined) bad('the line needs "<start> <length> mirror ..." to know the mirror length');
  if (length <= 0) bad('length must be positive');
  const logType = words[i++];
  if (logType !== 'core' && logType !== 'disk') bad(`log type must be core or disk (got "${logType ?? ''}")`);
  const nArgs = uint(words[i++], '#log_args');
  const args = words.slice(i, i + nArgs);
  if (args.length !== nArgs) bad(`${nArgs} log arguments announced, ${args.length} present`);
  i += nArgs;
  const [minArgs, maxArgs] = logType === 'core' ? [1, 2] : [2, 3];
  if (nArgs < minArgs || nArgs > maxArgs) bad(`a ${logType} log takes ${minArgs}..${maxArgs} arguments (got ${nArgs})`);
  const logPath = logType === 'disk' ? args[0] : undefined;
  const rest = logType === 'disk' ? args.slice(1) : args;
  const regionSize = uint(rest[0], 'region size');
  if (!isValidRegionSize(regionSize)) bad(regionSizeMessage(regionSize));
  if (regionSize > length) bad(`region size ${regionSize} is larger than the mirror (${length} sectors)`);
  let syncMode: SyncMode = 'default';
  if (rest[1] !== undefined) {
    if (rest[1] !== 'sync' && rest[1] !== 'nosync') bad(`log sync argument must be sync or nosync (got "${rest[1]}")`);
    syncMode = rest[1];
  }
  const nLegs = uint(words[i++], '#mirrors');
  if (nLegs < 2 || nLegs > MAX_LEGS) bad(`#mirrors must be 2..${MAX_LEGS} (got ${nLegs})`);
  const legs: MirrorTable['legs'] = [];
  for (let m = 0; m < nLegs; m++) {
    const path = words[i++];
    if (path === undefined) bad(`${nLegs} mirrors announced, ${m} present`);
    legs.push({ path, offsetSectors: uint(words[i++], `offset of mirror ${m}`) });
  }
  let handleErrors = false;
  let keepLog = false;
  if (i < words.length) {
    const nFeatures = uint(words[i++], '#features');
    const features = words.slice(i, i + nFeatures);
    if (features.length !== nFeatures || i + nFeatures !== words.length)
      bad(`${nFeatures} features announced, ${words.length - i} words follow`);
    for (const f of features) {
      if (f === 'handle_errors') handleErrors = true;
      else if (f === 'keep_log') keepLog = true;
      else bad(`unknown feature "${f}"`);
    }
    if (keepLog && !handleErrors) bad('keep_log requires handle_errors');
  }
  return {
    startSector,
    lengthSectors: length,
    log: logType === 'disk' ? { type: 'disk', path: logPath as string } : { type: 'core' },
    regionSize,
    syncMode,
    legs,
    handleErrors,
    keepLog,
  };
}

/** The table line as dmsetup prints it. */
export function formatMirrorTable(t: MirrorTable): string {
  const sync = t.syncMode === 'default' ? '' : ` ${t.syncMode}`;
  const extra = t.syncMode === 'default' ? 0 : 1;
  const log = t.log.type === 'disk' ? `disk ${2 + extra} ${t.log.path} ${t.regionSize}${sync}` : `core ${1 + extra} ${t.regionSize}${sync}`;
  const legs = t.legs.map((l) => `${l.path} ${l.offsetSectors}`).join(' ');
  const nf = (t.handleErrors ? 1 : 0) + (t.keepLog ? 1 : 0);
  const features = nf > 0 ? ` ${nf}${t.handleErrors ? ' handle_errors' : ''}${t.keepLog ? ' keep_log' : ''}` : '';
  return `${t.startSector} ${t.lengthSectors} mirror ${log} ${t.legs.length} ${legs}${features}`;
}
