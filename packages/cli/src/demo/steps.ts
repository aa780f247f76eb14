import * as path from 'path';
import { BlockDevice, KcopydClient, SECTOR_BYTES } from '@dmtool/kcopyd';
import { openDevice, resolver } from '../util/open-device';
import { checkLegs, MirrorConfig, openMirror, resync } from '@dmtool/dm-mirror';
import { mergeSnapshot, Origin, Snapshot, snapshotBuffer } from '@dmtool/dm-snapshot';
import { ExportTable, NbdDevice, NbdServer } from '@dmtool/nbd';
import { TargetSet } from '@dmtool/targets';
import type { StepReport } from './run-demo';
import { emptyImage, sha256File, writePatternImage } from './run-demo';

/** Status lines name the images; inside the demo folder their base names suffice. */
function short(ctx: DemoContext, line: string): string {
  return line.split(`${ctx.dir}${path.sep}`).join('');
}

export interface DemoContext {
  dir: string;
  sizeBytes: number;
  report(r: StepReport): void;
}

export type DemoStep = (ctx: DemoContext) => Promise<void>;

/** kcopyd: one source to three destinations in one job, then a zero job. */
export const copyStep: DemoStep = async (ctx) => {
  const src = path.join(ctx.dir, 'source.img');
  writePatternImage(src, ctx.sizeBytes, 'SOURCE');
  const destPaths = [1, 2, 3].map((i) => path.join(ctx.dir, `copy-${i}.img`));
  destPaths.forEach((p) => emptyImage(p, ctx.sizeBytes));
  const source = await openDevice(src, { write: false });
  const dests: BlockDevice[] = [];
  const client = new KcopydClient();
  try {
    for (const p of destPaths) dests.push(await openDevice(p, { write: true }));
    const count = source.sizeSectors;
    const t0 = process.hrtime.bigint();
    const r = await client.copy(
      { device: source, sector: 0, count },
      dests.map((d) => ({ device: d, sector: 0 })),
    );
    await Promise.all(dests.map((d) => d.flush()));
    const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
    const want = sha256File(src);
    const same = destPaths.every((p) => sha256File(p) === want);
    ctx.report({
      step: 'kcopyd copy',
      detail: `1 source -> 3 destinations, ${same ? 'all three sha256-identical to the source' : 'CONTENT DIFFERS'} (readErr=${r.readErr ? 1 : 0} writeErr=${r.writeErr})`,
      bytes: count * SECTOR_BYTES * dests.length,
      seconds,
      ok: same && !r.readErr && r.writeErr === 0,
    });

    const zeroSectors = 2048;
    const z = await client.zero(dests.map((d) => ({ device: d, sector: 0, count: zeroSectors })));
    const buf = Buffer.alloc(zeroSectors * SECTOR_BYTES);
    await dests[0].read(buf, 0, buf.length, 0);
    const zeroed = buf.every((b) => b === 0);
    ctx.report({
      step: 'kcopyd zero',
      detail: `first ${zeroSectors} sectors of 3 devices zeroed${zeroed ? '' : ' -- NOT ZERO'}`,
      ok: zeroed && z.writeErr === 0,
    });
  } finally {
    await client.destroy();
    [source, ...dests].forEach((d) => d.close());
  }
};

function seconds(since: bigint): number {
  return Number(process.hrtime.bigint() - since) / 1e9;
}

/** Every 8th MiB of the origin, in 64 KiB writes, each with a recognisable byte. */
function originWrites(sizeBytes: number): { sector: number; data: Buffer }[] {
  const writes = [];
  for (let off = 0; off < sizeBytes; off += 8 << 20) {
    for (let i = 0; i < 16; i++) {
      const data = snapshotBuffer(64 << 10);
      data.fill(0xa0 + (i & 0xf));
      writes.push({ sector: (off + i * (64 << 10)) / SECTOR_BYTES, data });
    }
  }
  return writes;
}

async function shaOfView(read: (buf: Buffer, sector: number) => Promise<void>, sizeBytes: number): Promise<string> {
  const { createHash } = await import('crypto');
  const h = createHash('sha256');
  const buf = snapshotBuffer(1 << 20);
  for (let off = 0; off < sizeBytes; off += buf.length) {
    await read(buf, off / SECTOR_BYTES);
    h.update(buf);
  }
  return h.digest('hex');
}

/** dm-snapshot: take a snapshot, write to the origin (copy-on-write), read the snapshot view, serve it over NBD, merge back. */
export const snapshotStep: DemoStep = async (ctx) => {
  const originPath = path.join(ctx.dir, 'origin.img');
  const cowPath = path.join(ctx.dir, 'cow.img');
  writePatternImage(originPath, ctx.sizeBytes, 'ORIGIN');
  emptyImage(cowPath, ctx.sizeBytes / 2);
  const before = sha256File(originPath);
  await snapshotAndWrite(ctx, originPath, cowPath, before);
  await serveSnapshot(ctx, originPath, cowPath);
  await mergeBack(ctx, originPath, cowPath, before);
};

async function snapshotAndWrite(ctx: DemoContext, originPath: string, cowPath: string, before: string): Promise<void> {
  const originDev = await openDevice(originPath, { write: true });
  const cowDev = await openDevice(cowPath, { write: true });
  const origin = new Origin(originDev);
  try {
    const snap = await Snapshot.create(origin, cowDev, { chunkSectors: 8 });
    ctx.report({
      step: 'snapshot-create',
      detail: `COW formatted in the kernel's format, chunk 8 sectors; status ${snap.statusLine()}`,
      ok: true,
    });
    const writes = originWrites(ctx.sizeBytes);
    const t0 = process.hrtime.bigint();
    for (const w of writes) await origin.write(w.data, w.sector);
    await origin.flush();
    const written = writes.length * (64 << 10);
    ctx.report({
      step: 'origin writes',
      detail: `${writes.length} writes of 64 KiB; old chunks copied to the COW first (${snap.exceptionCount} exceptions); status ${snap.statusLine()}`,
      bytes: written,
      seconds: seconds(t0),
      ok: snap.exceptionCount === written / 4096,
    });
    const view = await shaOfView((b, s) => snap.read(b, s), ctx.sizeBytes);
    const changed = sha256File(originPath) !== before;
    ctx.report({
      step: 'snapshot view',
      detail: `${view === before ? 'equals the origin as it was when the snapshot was taken' : 'DIFFERS from the original origin'}; origin itself ${changed ? 'has changed' : 'UNCHANGED'}`,
      ok: view === before && changed,
    });
    snap.close();
  } finally {
    await origin.close();
    originDev.close();
    cowDev.close();
  }
}

/** What `snapshot-read` reads: the snapshot view, opened offline. */
async function snapshotReadSha(originPath: string, cowPath: string, sizeBytes: number): Promise<string> {
  const originDev = await openDevice(originPath, { write: false });
  const cowDev = await openDevice(cowPath, { write: false });
  const origin = new Origin(originDev);
  try {
    const snap = await Snapshot.open(origin, cowDev);
    try {
      return await shaOfView((b, s) => snap.read(b, s), sizeBytes);
    } finally {
      snap.close();
    }
  } finally {
    await origin.close();
    originDev.close();
    cowDev.close();
  }
}

/** `dmtool serve` in process: the snapshot as a read-only export on a unix socket in the demo folder, read back through dmtool's own NBD client. */
async function serveSnapshot(ctx: DemoContext, originPath: string, cowPath: string): Promise<void> {
  const socketPath = path.join(ctx.dir, 'nbd.sock');
  const table = `0 ${ctx.sizeBytes / SECTOR_BYTES} snapshot ${originPath} ${cowPath} P 8`;
  const targets = await TargetSet.open([{ name: 'snap', table, readOnly: true }], resolver);
  const exports = new ExportTable();
  const server = new NbdServer(exports, { log: () => undefined });
  let served: string;
  const t0 = process.hrtime.bigint();
  try {
    exports.add('snap', targets.devices.get('snap')!, { readOnly: true, description: table });
    await server.listen({ socketPath });
    const client = await NbdDevice.open(`nbd+unix:///snap?socket=${socketPath}`, { write: false });
    try {
      served = await shaOfView((b, s) => client.read(b, 0, b.length, s * SECTOR_BYTES), client.sizeBytes);
    } finally {
      client.close();
    }
  } finally {
    await server.close();
    await targets.close();
  }
  const elapsed = seconds(t0);
  const same = served === (await snapshotReadSha(originPath, cowPath, ctx.sizeBytes));
  ctx.report({
    step: 'nbd serve',
    detail: `snapshot exported read-only on nbd.sock, read through dmtool's NBD client: ${same ? 'sha256 equal to snapshot-read' : 'DIFFERS from snapshot-read'}`,
    bytes: ctx.sizeBytes,
    seconds: elapsed,
    ok: same,
  });
}

async function mergeBack(ctx: DemoContext, originPath: string, cowPath: string, before: string): Promise<void> {
  const originDev = await openDevice(originPath, { write: true });
  const cowDev = await openDevice(cowPath, { write: true });
  try {
    const t1 = process.hrtime.bigint();
    const m = await mergeSnapshot(originDev, cowDev);
    const after = sha256File(originPath);
    ctx.report({
      step: 'snapshot-merge',
      detail: `${m.mergedChunks} chunks merged in ${m.batches} batch${m.batches === 1 ? '' : 'es'}; status ${m.status}; origin ${after === before ? 'restored (sha256 equal)' : 'NOT restored'}`,
      bytes: m.mergedBytes,
      seconds: seconds(t1),
      ok: after === before,
    });
  } finally {
    originDev.close();
    cowDev.close();
  }
}

/** dm-mirror: three legs, a disk log with dirty regions, resync, check. */
export const mirrorStep: DemoStep = async (ctx) => {
  const legs = [0, 1, 2].map((i) => path.join(ctx.dir, `leg${i}.img`));
  const logPath = path.join(ctx.dir, 'mirror-log.img');
  writePatternImage(legs[0], ctx.sizeBytes, 'LEG');
  emptyImage(logPath, 1 << 20);
  const regionSize = 1024;
  const config: MirrorConfig = { log: { type: 'disk', path: logPath }, regionSize, legs: legs.map((p) => ({ path: p })) };
  legs.slice(1).forEach((p) => emptyImage(p, ctx.sizeBytes));

  // Legs 1 and 2 start empty and a new log says every region is out of sync.
  const created = await openMirror(config, resolver, { createLog: true, writeLegs: true });
  const regions = created.regionCount;
  ctx.report({
    step: 'mirror-create',
    detail: `disk log in the kernel's dm-log format; status ${short(ctx, created.statusInfo())}`,
    ok: created.log.getSyncCount() === 0,
  });
  const t0 = process.hrtime.bigint();
  const full = await resync(created, { parallel: 4 });
  ctx.report({
    step: 'mirror-resync (full)',
    detail: `${full.regionsSynced} regions copied from leg 0 to legs 1 and 2; status ${short(ctx, created.statusInfo())}`,
    bytes: full.sectorsCopied * SECTOR_BYTES * 2,
    seconds: seconds(t0),
    ok: full.inSync,
  });
  created.close();

  // A crash while writing: leg 0 got new data in three regions, the other legs did not, and the log says those regions are dirty.
  const dirty = [3, Math.floor(regions / 2), regions - 1];
  const primary = await openDevice(legs[0], { write: true });
  try {
    const data = Buffer.alloc(regionSize * SECTOR_BYTES, 0x77);
    for (const r of dirty) await primary.write(data, 0, Math.min(data.length, primary.sizeBytes - r * data.length), r * data.length);
    await primary.flush();
  } finally {
    primary.close();
  }
  const marking = await openMirror(config, resolver, { writeLegs: true });
  dirty.forEach((r) => marking.log.markRegion(r));
  await marking.log.flush();
  marking.close();

  const mirror = await openMirror(config, resolver, { writeLegs: true });
  try {
    const beforeStatus = mirror.statusInfo();
    const t1 = process.hrtime.bigint();
    const partial = await resync(mirror, { parallel: 4 });
    ctx.report({
      step: 'mirror-resync (dirty regions)',
      detail: `log had ${beforeStatus.split(' ')[4]} in sync; copied regions ${dirty.join(', ')} only (${partial.regionsSynced} regions); status ${short(ctx, mirror.statusInfo())}`,
      bytes: partial.sectorsCopied * SECTOR_BYTES * 2,
      seconds: seconds(t1),
      ok: partial.inSync && partial.regionsSynced === dirty.length,
    });
    const check = await checkLegs(
      mirror.legs.map((l) => l.device),
      { regionSize, lengthSectors: mirror.lengthSectors },
    );
    ctx.report({
      step: 'mirror-check',
      detail: `${check.regions} regions compared, ${check.differingRegions.length} differ`,
      ok: check.differingRegions.length === 0,
    });
  } finally {
    mirror.close();
  }
};

export const demoSteps: DemoStep[] = [copyStep, snapshotStep, mirrorStep];
