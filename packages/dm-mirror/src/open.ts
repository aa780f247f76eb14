import { BlockDevice, DeviceResolver } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { CoreLog, DirtyLog, SyncMode } from './dirty-log';
import { DiskLog } from './disk-log';
import { MirrorError } from './errors';
import { decodeDiskLog, LOG_HEADER_BYTES } from './log-format';
import { MAX_LEGS, MirrorSet } from './mirror-set';
import { checkRegionSize, MAX_REGION_SIZE } from './region-size';
import { MirrorTable } from './table';

export interface MirrorConfig {
  /** Mirror length in sectors (default: the legs' common size). */
  lengthSectors?: number;
  /** Region size in sectors (default for an existing disk log: derived from its nr_regions). */
  regionSize?: number;
  log: { type: 'core' } | { type: 'disk'; path: string };
  syncMode?: SyncMode;
  legs: { path: string; offsetSectors?: number }[];
  handleErrors?: boolean;
  keepLog?: boolean;
}

export interface OpenMirrorOptions {
  /** Open the legs read-write (resync, writes). */
  writeLegs?: boolean;
  /** Start a new disk log (mirror-create). */
  createLog?: boolean;
  /** Write the resumed log back, as activation does (default: writeLegs || createLog). */
  persistLog?: boolean;
  /** Open the log device read-write (default: persistLog); a dry run opens it as the real run does and writes nothing. */
  writeLog?: boolean;
  /**
   * Called with the opened log device before anything is read from or
   * written to it: a caller can refuse what the device holds while the open
   * (and its lock) keeps other writers out.
   */
  checkLog?: (log: BlockDevice) => Promise<void>;
  /** O_DIRECT for legs. */
  direct?: boolean;
  /**
   * Accept a disk log whose region count differs from the mirror's, as the
   * kernel does on activation (a resized mirror): regions the log did not
   * cover start out of sync, surplus bits are dropped. Needs the region size.
   */
  adoptLog?: boolean;
}

export const DEFAULT_REGION_SIZE = 1024;

export function configFromTable(t: MirrorTable): MirrorConfig {
  return {
    lengthSectors: t.lengthSectors,
    regionSize: t.regionSize,
    log: t.log,
    syncMode: t.syncMode,
    legs: t.legs,
    handleErrors: t.handleErrors,
    keepLog: t.keepLog,
  };
}

/** Refuse a device named twice (as two legs, or as a leg and the log), under one name or two. */
export function checkDistinct(resolver: DeviceResolver, paths: { path: string; role: string }[]): void {
  const seen = new Map<string, { path: string; role: string }>();
  for (const p of paths) {
    const id = resolver.identify(p.path, p.role);
    const before = seen.get(id);
    if (before?.path === p.path)
      throw new MirrorError('EINVAL', 'same-device', `${p.path} is given twice (as ${before.role} and as ${p.role})`, { path: p.path });
    // Two names of one device, e.g. a loop device and its backing file.
    if (before)
      throw new MirrorError('EINVAL', 'same-device', `${p.role} ${p.path} is the same device as ${before.role} ${before.path}`, {
        path: p.path,
      });
    seen.set(id, p);
  }
}

/** The power-of-two region size for which `lengthSectors` makes `regions` regions. */
export function deriveRegionSize(lengthSectors: number, regions: number): number | undefined {
  for (let rs = 2; rs <= Math.min(lengthSectors, MAX_REGION_SIZE); rs *= 2) if (Math.ceil(lengthSectors / rs) === regions) return rs;
  return undefined;
}

/** Read just the header of a disk log and validate magic and version. */
export async function readLogRegionCount(device: BlockDevice): Promise<number> {
  const head = allocBuffer(Math.min(device.sizeBytes, 1024));
  if (head.length < LOG_HEADER_BYTES) {
    decodeDiskLog(head, { path: device.path, deviceBytes: device.sizeBytes });
  }
  await device.read(head, 0, head.length, 0);
  const padded = Buffer.alloc(1024);
  head.copy(padded);
  try {
    decodeDiskLog(padded, { path: device.path, deviceBytes: device.sizeBytes });
  } catch (e) {
    // Only header defects matter here; truncation is judged once the region count is known.
    if (!(e instanceof MirrorError) || e.reason !== 'log-truncated' || device.sizeBytes < 1024) throw e;
  }
  return Number(padded.readBigUInt64LE(8));
}

/**
 * Open a mirror: check every device before any write (distinct devices,
 * leg sizes, log size and contents), then resume the log. The table names
 * its devices; `resolver` opens them.
 */
export async function openMirror(cfg: MirrorConfig, resolver: DeviceResolver, opts: OpenMirrorOptions = {}): Promise<MirrorSet> {
  if (cfg.legs.length < 2 || cfg.legs.length > MAX_LEGS) {
    throw new MirrorError('EINVAL', 'leg-count', `a mirror needs 2..${MAX_LEGS} legs (got ${cfg.legs.length})`);
  }
  checkDistinct(resolver, [
    ...cfg.legs.map((l, i) => ({ path: l.path, role: `leg ${i}` })),
    ...(cfg.log.type === 'disk' ? [{ path: cfg.log.path, role: 'the log' }] : []),
  ]);
  const opened: BlockDevice[] = [];
  try {
    const legs: { device: BlockDevice; offsetSectors: number }[] = [];
    for (const l of cfg.legs) {
      const d = await resolver.open(l.path, { write: opts.writeLegs === true, direct: opts.direct === true });
      opened.push(d);
      legs.push({ device: d, offsetSectors: l.offsetSectors ?? 0 });
    }
    let length = cfg.lengthSectors;
    if (length === undefined) {
      const sizes = legs.map((l) => l.device.sizeSectors - l.offsetSectors);
      const differ = sizes.findIndex((s) => s !== sizes[0]);
      if (differ >= 0) {
        throw new MirrorError(
          'EINVAL',
          'leg-size-mismatch',
          `legs differ in size: ${legs[0].device.path} has ${sizes[0]} sectors, ${legs[differ].device.path} has ${sizes[differ]} (give the mirror length with a table line)`,
          { path: legs[differ].device.path },
        );
      }
      length = sizes[0];
    }
    if (!(length > 0))
      throw new MirrorError('EINVAL', 'bad-length', `mirror length must be positive (legs have ${length} sectors)`, {
        path: legs[0].device.path,
      });
    for (const l of legs) {
      if (l.device.sizeSectors < l.offsetSectors + length) {
        throw new MirrorError(
          'EINVAL',
          'leg-too-small',
          `leg ${l.device.path} is smaller than the mirror: it has ${l.device.sizeSectors} sectors, the mirror needs sectors ${l.offsetSectors}..${l.offsetSectors + length - 1}`,
          { path: l.device.path, sector: l.offsetSectors, sectors: length },
        );
      }
    }
    const syncMode = cfg.syncMode ?? 'default';
    let log: DirtyLog;
    if (cfg.log.type === 'core') {
      const rs = cfg.regionSize ?? DEFAULT_REGION_SIZE;
      const regionCount = regionsFor(length, rs);
      if (opts.direct) checkDirectAlignment(legs, length, rs);
      log = new CoreLog(rs, regionCount, syncMode);
    } else {
      const create = opts.createLog === true;
      const persist = opts.persistLog ?? (opts.writeLegs === true || create);
      const logDev = await resolver.open(cfg.log.path, { write: opts.writeLog ?? persist });
      opened.push(logDev);
      await opts.checkLog?.(logDev);
      let rs = cfg.regionSize;
      if (rs === undefined && opts.adoptLog && !create) {
        throw new MirrorError(
          'EINVAL',
          'bad-option',
          `adopting the log ${logDev.path} needs the region size (--region-size or a table line)`,
          { path: logDev.path },
        );
      }
      if (rs === undefined) {
        if (create) rs = DEFAULT_REGION_SIZE;
        else {
          const onDisk = await readLogRegionCount(logDev);
          rs = deriveRegionSize(length, onDisk);
          if (rs === undefined) {
            throw new MirrorError(
              'EINVAL',
              'region-count-mismatch',
              `dirty log ${logDev.path} records ${onDisk} regions at sector 0, which no power-of-two region size gives for a mirror of ${length} sectors: wrong region count for the leg size`,
              { path: logDev.path, sector: 0, sectors: 1 },
            );
          }
        }
      }
      const regionCount = regionsFor(length, rs);
      // The region size may come from the log: check it before the log is written back.
      if (opts.direct) checkDirectAlignment(legs, length, rs);
      if (opts.adoptLog && !create) {
        // Still refuse what is not a dm-log at all: adopting only forgives the region count.
        const onDisk = await readLogRegionCount(logDev);
        if (onDisk < 1)
          throw new MirrorError('EINVAL', 'bad-region-count', `dirty log ${logDev.path} records no regions`, {
            path: logDev.path,
            sector: 0,
            sectors: 1,
          });
      }
      log = new DiskLog(logDev, { regionSize: rs, regionCount, syncMode, create, strict: opts.adoptLog !== true, persist });
      await log.resume();
    }
    return new MirrorSet({ legs, log, lengthSectors: length, handleErrors: cfg.handleErrors, keepLog: cfg.keepLog });
  } catch (e) {
    for (const d of opened) if (d.isOpen) d.close();
    throw e;
  }
}

/** O_DIRECT needs every region copy aligned to the legs' logical blocks: refuse now, not mid-resync. */
function checkDirectAlignment(legs: { device: BlockDevice; offsetSectors: number }[], length: number, regionSize: number): void {
  for (const l of legs) {
    const align = l.device.logicalBlockSize / 512;
    if (l.offsetSectors % align !== 0 || length % align !== 0 || regionSize % align !== 0) {
      throw new MirrorError(
        'EINVAL',
        'misaligned',
        `leg ${l.device.path} has ${l.device.logicalBlockSize}-byte blocks: with --direct the offset (${l.offsetSectors}), mirror length (${length}) and region size (${regionSize}) must be multiples of ${align} sectors`,
        { path: l.device.path, sector: l.offsetSectors, sectors: length },
      );
    }
  }
}

function regionsFor(lengthSectors: number, regionSize: number): number {
  checkRegionSize(regionSize);
  if (regionSize > lengthSectors) {
    throw new MirrorError('EINVAL', 'bad-region-size', `region size ${regionSize} is larger than the mirror (${lengthSectors} sectors)`);
  }
  return Math.ceil(lengthSectors / regionSize);
}
