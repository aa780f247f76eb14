import * as path from 'path';
import { Device, KcopydClient, SECTOR_BYTES } from '@dmtool/kcopyd';
import type { StepReport } from './run-demo';
import { emptyImage, sha256File, writePatternImage } from './run-demo';

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
  const source = Device.open(src);
  const dests = destPaths.map((p) => Device.open(p, { write: true }));
  const client = new KcopydClient();
  try {
    const count = source.sizeSectors;
    const t0 = process.hrtime.bigint();
    const r = await client.copy({ device: source, sector: 0, count }, dests.map((d) => ({ device: d, sector: 0 })));
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
    ctx.report({ step: 'kcopyd zero', detail: `first ${zeroSectors} sectors of 3 devices zeroed${zeroed ? '' : ' -- NOT ZERO'}`, ok: zeroed && z.writeErr === 0 });
  } finally {
    await client.destroy();
    [source, ...dests].forEach((d) => d.close());
  }
};

export const demoSteps: DemoStep[] = [copyStep];
