import * as fs from 'fs';
import * as path from 'path';
import { AbortError, BlockDevice, KcopydClient, KcopydError, KcopydFlags, KcopydIoError } from '@dmtool/kcopyd';
import { openFaulty, setFaultPlan } from '../../../test/support/faults';
import { makeImage, patternBytes, readRange, sha256, sha256File } from '../../../test/support/images';
import { removeDir, tempDir } from '../../../test/support/loop';

const MiB = 1 << 20;

describe('KcopydClient on image files', () => {
  let dir: string;
  let src: BlockDevice;
  let dests: BlockDevice[];
  const srcSectors = 8 * 2048 + 77; // 8 MiB and an odd tail: many sub-jobs, a short last piece

  beforeEach(() => {
    dir = tempDir();
    makeImage(path.join(dir, 'src.img'), srcSectors * 512, 'SRC');
    src = openFaulty(path.join(dir, 'src.img'));
    dests = [0, 1, 2].map((i) => {
      makeImage(path.join(dir, `d${i}.img`), srcSectors * 512);
      return openFaulty(path.join(dir, `d${i}.img`), { write: true });
    });
  });

  afterEach(() => {
    setFaultPlan(undefined);
    [src, ...dests].forEach((d) => d.close());
    removeDir(dir);
  });

  it('reports each piece of a whole-range copy when it starts and when it is done, every piece started before it is done', async () => {
    const client = new KcopydClient({ subJobSectors: 1024 });
    const events: string[] = [];
    const r = await client.copy({ device: src, sector: 0, count: srcSectors }, [{ device: dests[0], sector: 0 }], {
      onPieceStart: (at, n) => events.push(`start ${at}+${n}`),
      onPieceDone: (at, n) => events.push(`done ${at}+${n}`),
    });
    expect(r).toMatchObject({ readErr: false, writeErr: 0, sectorsDone: srcSectors });
    const pieces = Array.from({ length: 17 }, (_, i) => `${i * 1024}+${i === 16 ? 77 : 1024}`);
    expect(events.filter((e) => e.startsWith('start'))).toEqual(pieces.map((p) => `start ${p}`));
    expect(events.filter((e) => e.startsWith('done')).sort()).toEqual(pieces.map((p) => `done ${p}`).sort());
    for (const p of pieces) expect(events.indexOf(`start ${p}`)).toBeLessThan(events.indexOf(`done ${p}`));
    await client.destroy();
  });

  it('copies one source to three destinations byte for byte', async () => {
    const client = new KcopydClient({ subJobSectors: 256 });
    const progress: number[] = [];
    const r = await client.copy(
      { device: src, sector: 0, count: srcSectors },
      dests.map((d) => ({ device: d, sector: 0 })),
      { onProgress: (p) => progress.push(p.doneSectors) },
    );
    expect(r).toMatchObject({ readErr: false, writeErr: 0, sectorsDone: srcSectors, errors: [] });
    const want = sha256File(path.join(dir, 'src.img'));
    for (let i = 0; i < 3; i++) expect(sha256File(path.join(dir, `d${i}.img`))).toBe(want);
    expect(progress.length).toBe(Math.ceil(srcSectors / 256));
    expect(progress[progress.length - 1]).toBe(srcSectors);
    expect([...progress].sort((a, b) => a - b)).toEqual(progress);
    await client.destroy();
  });

  it('copies a sub-range to a different offset and leaves the rest untouched', async () => {
    const client = new KcopydClient();
    await client.copy({ device: src, sector: 100, count: 3000 }, [{ device: dests[0], sector: 5000 }]);
    const d0 = path.join(dir, 'd0.img');
    expect(sha256(readRange(d0, 5000 * 512, 3000 * 512))).toBe(sha256(patternBytes('SRC', 100, 3000)));
    expect(readRange(d0, 0, 5000 * 512).every((b) => b === 0)).toBe(true);
    expect(readRange(d0, 8000 * 512, (srcSectors - 8000) * 512).every((b) => b === 0)).toBe(true);
    await client.destroy();
  });

  it('refuses bad jobs before any I/O', async () => {
    const client = new KcopydClient();
    const whole = { device: src, sector: 0, count: srcSectors };
    const d0 = { device: dests[0], sector: 0 };
    await expect(client.copy({ ...whole, count: 0 }, [d0])).rejects.toThrow(/positive integer/);
    await expect(client.copy({ ...whole, sector: 1 }, [d0])).rejects.toThrow(/beyond the device end/);
    await expect(client.copy(whole, [{ device: dests[0], sector: 1 }])).rejects.toThrow(/beyond the device end/);
    await expect(client.copy(whole, [])).rejects.toThrow(/at least one destination/);
    await expect(client.copy(whole, Array(9).fill(d0))).rejects.toThrow(/at most 8/);
    await expect(client.copy({ device: dests[0], sector: 0, count: 100 }, [{ device: dests[0], sector: 50 }])).rejects.toThrow(
      /overlaps the source/,
    );
    await expect(client.copy({ ...whole, count: 10 }, [d0, { device: dests[0], sector: 5 }])).rejects.toThrow(/overlap/);
    await expect(client.copy({ ...whole, count: 10 }, [{ device: src, sector: 100 }])).rejects.toThrow(/read-only/);
    await expect(client.copy({ ...whole, count: 10 }, [{ ...d0, count: 11 }])).rejects.toBeInstanceOf(KcopydError);
    expect(fs.statSync(path.join(dir, 'd0.img')).blocks).toBe(0);
    await client.destroy();
  });

  it('sets exactly the failing destination bit and keeps writing the others (IGNORE_ERROR)', async () => {
    setFaultPlan({ rules: [{ op: 'write', code: 'EIO', path: 'd1.img', fromByte: 2 * MiB, toByte: 3 * MiB }] });
    const client = new KcopydClient();
    const r = await client.copy(
      { device: src, sector: 0, count: srcSectors },
      dests.map((d) => ({ device: d, sector: 0 })),
      { flags: KcopydFlags.IGNORE_ERROR },
    );
    expect(r.readErr).toBe(false);
    expect(r.writeErr).toBe(0b010);
    expect(r.errors.map((e) => [e.code, e.op, path.basename(e.path)])).toEqual([
      ['EIO', 'write', 'd1.img'],
      ['EIO', 'write', 'd1.img'],
    ]);
    const want = sha256File(path.join(dir, 'src.img'));
    expect(sha256File(path.join(dir, 'd0.img'))).toBe(want);
    expect(sha256File(path.join(dir, 'd2.img'))).toBe(want);
    expect(sha256File(path.join(dir, 'd1.img'))).not.toBe(want);
    expect(readRange(path.join(dir, 'd1.img'), 2 * MiB, MiB).every((b) => b === 0)).toBe(true);
    await client.destroy();
  });

  it('stops claiming pieces after the first error without IGNORE_ERROR, and rejects with a KcopydIoError', async () => {
    setFaultPlan({ rules: [{ op: 'read', code: 'EIO', fromByte: 0, toByte: 512 }] });
    const client = new KcopydClient({ subJobSectors: 64, subJobsPerJob: 1 });
    const r = await client.copy({ device: src, sector: 0, count: srcSectors }, [{ device: dests[0], sector: 0 }]).catch((e: unknown) => e);
    expect(r).toBeInstanceOf(KcopydIoError);
    const e = r as KcopydIoError;
    expect([e.kind, e.reason, e.code, e.readErr, e.writeErr, e.sectorsDone]).toEqual(['io', 'read-failed', 'EIO', true, 0, 0]);
    expect(e.failedRanges).toEqual([{ op: 'read', path: src.path, sector: 0, sectors: 64 }]);
    expect(e.message).toMatch(/^copy failed after 0 sectors \(readErr=true, writeErr=0\): EIO: read failed on .*src\.img at sector 0/);
    expect(fs.statSync(path.join(dir, 'd0.img')).blocks).toBe(0);
    await client.destroy();
  });

  it('reports a short write as an error on that destination only', async () => {
    setFaultPlan({ rules: [{ op: 'write', code: 'ENOSPC', path: 'd2.img', shortBytes: 1024, times: 1 }] });
    const client = new KcopydClient({ subJobSectors: 64, subJobsPerJob: 1 });
    const r = (await client
      .copy(
        { device: src, sector: 0, count: 64 },
        dests.map((d) => ({ device: d, sector: 0 })),
      )
      .catch((e: unknown) => e)) as KcopydIoError;
    expect(r).toBeInstanceOf(KcopydIoError);
    expect([r.reason, r.code, r.writeErr, r.sectorsDone]).toEqual(['write-failed', 'ENOSPC', 0b100, 0]);
    expect(r.failedRanges).toEqual([{ op: 'write', path: dests[2].path, sector: 0, sectors: 64 }]);
    expect(r.errors[0].code).toBe('ENOSPC');
    const d2 = readRange(path.join(dir, 'd2.img'), 0, 64 * 512);
    expect(d2.subarray(0, 1024).equals(patternBytes('SRC', 0, 2))).toBe(true);
    expect(d2.subarray(1024).every((b) => b === 0)).toBe(true);
    await client.destroy();
  });

  it('WRITE_SEQ writes in ascending order: nothing after a failed piece is written', async () => {
    setFaultPlan({ rules: [{ op: 'write', code: 'EIO', fromByte: 3 * 256 * 512, toByte: 4 * 256 * 512 }] });
    const client = new KcopydClient({ subJobSectors: 256 });
    const r = await client.copy({ device: src, sector: 0, count: srcSectors }, [{ device: dests[0], sector: 0 }], {
      flags: KcopydFlags.WRITE_SEQ | KcopydFlags.IGNORE_ERROR,
    });
    expect(r.writeErr).toBe(1);
    expect(r.sectorsDone).toBe(3 * 256);
    const d0 = path.join(dir, 'd0.img');
    expect(sha256(readRange(d0, 0, 3 * 256 * 512))).toBe(sha256(patternBytes('SRC', 0, 3 * 256)));
    expect(readRange(d0, 3 * 256 * 512, (srcSectors - 3 * 256) * 512).every((b) => b === 0)).toBe(true);
    await client.destroy();
  });

  it('aborts mid-copy: in-flight pieces finish, what was reported done is on disk', async () => {
    const client = new KcopydClient({ subJobSectors: 128, subJobsPerJob: 2, rateBytesPerSecond: 4 * MiB });
    const ctl = new AbortController();
    let reported = 0;
    const job = client.copy({ device: src, sector: 0, count: srcSectors }, [{ device: dests[0], sector: 0 }], {
      signal: ctl.signal,
      onProgress: (p) => {
        reported = p.doneSectors;
        expect([p.doneBytes, p.totalBytes]).toEqual([p.doneSectors * 512, srcSectors * 512]);
        if (p.doneSectors >= 1024) ctl.abort('SIGINT');
      },
    });
    const err = await job.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AbortError);
    expect((err as AbortError).cause).toBe('SIGINT');
    const done = (err as AbortError).sectorsDone;
    expect(done).toBe(reported);
    expect(done).toBeGreaterThanOrEqual(1024);
    expect(done).toBeLessThan(srcSectors);
    expect(sha256(readRange(path.join(dir, 'd0.img'), 0, 1024 * 512))).toBe(sha256(patternBytes('SRC', 0, 1024)));
    await client.destroy();
  });

  it('zeroes the given regions only', async () => {
    const client = new KcopydClient();
    await client.copy({ device: src, sector: 0, count: srcSectors }, [{ device: dests[0], sector: 0 }]);
    const r = await client.zero([{ device: dests[0], sector: 10, count: 2000 }]);
    expect(r).toMatchObject({ readErr: false, writeErr: 0, sectorsDone: 2000 });
    const d0 = path.join(dir, 'd0.img');
    expect(sha256(readRange(d0, 0, 10 * 512))).toBe(sha256(patternBytes('SRC', 0, 10)));
    expect(readRange(d0, 10 * 512, 2000 * 512).every((b) => b === 0)).toBe(true);
    expect(sha256(readRange(d0, 2010 * 512, 512))).toBe(sha256(patternBytes('SRC', 2010, 1)));
    await client.destroy();
  });

  it('delivers the kernel-style notify callback once, with the context', async () => {
    const client = new KcopydClient();
    const calls: [boolean, number, string][] = [];
    const progress: number[] = [];
    await new Promise<void>((resolve) =>
      client.copyNotify(
        { device: src, sector: 0, count: 512 },
        [{ device: dests[0], sector: 0 }],
        0,
        (re, we, ctx: string) => {
          calls.push([re, we, ctx]);
          resolve();
        },
        'ctx-1',
        { onProgress: (p) => progress.push(p.doneBytes) },
      ),
    );
    expect(progress.at(-1)).toBe(512 * 512);
    // An I/O error is the kernel's (readErr, writeErr), not a rejection.
    setFaultPlan({ rules: [{ op: 'write', code: 'EIO', path: 'd1.img' }] });
    await new Promise<void>((resolve) =>
      client.copyNotify(
        { device: src, sector: 0, count: 512 },
        [
          { device: dests[0], sector: 0 },
          { device: dests[1], sector: 0 },
        ],
        0,
        (re, we, ctx: string) => {
          calls.push([re, we, ctx]);
          resolve();
        },
        'ctx-io',
      ),
    );
    // The callback form takes a signal and a progress callback; an abort is (true, ~0) with the AbortError.
    const ctl = new AbortController();
    ctl.abort('stop');
    const stopped = await new Promise<Error | undefined>((resolve) =>
      client.copyNotify(
        { device: src, sector: 0, count: 512 },
        [{ device: dests[0], sector: 0 }],
        0,
        (re, we, ctx: string, e) => {
          calls.push([re, we, ctx]);
          resolve(e);
        },
        'ctx-abort',
        { signal: ctl.signal },
      ),
    );
    expect(stopped).toBeInstanceOf(AbortError);
    expect((stopped as AbortError).cause).toBe('stop');
    // A request kcopyd refuses throws at once; notify is never called.
    const impossible = () =>
      client.copyNotify(
        { device: src, sector: 0, count: -1 },
        [{ device: dests[0], sector: 0 }],
        0,
        () => calls.push([true, -1, 'never']),
        'x',
      );
    expect(impossible).toThrow(KcopydError);
    expect(impossible).toThrow(expect.objectContaining({ reason: 'bad-count', kind: 'bad-input' }));
    const fire = client.prepareCallback((re, we, ctx: string) => calls.push([re, we, ctx]), 'ctx-2');
    fire(false, 0b11);
    await client.destroy();
    expect(calls).toEqual([
      [false, 0, 'ctx-1'],
      [false, 0b10, 'ctx-io'],
      [true, ~0, 'ctx-abort'],
      [false, 3, 'ctx-2'],
    ]);
  });

  it('paces a copy to the rate limit', async () => {
    const client = new KcopydClient({ subJobSectors: 256, rateBytesPerSecond: 8 * MiB });
    const t0 = Date.now();
    await client.copy({ device: src, sector: 0, count: 8192 }, [{ device: dests[0], sector: 0 }]);
    // 4 MiB at 8 MiB/s: the last of 32 pieces may start no sooner than 31/32 × 0.5 s.
    expect(Date.now() - t0).toBeGreaterThanOrEqual(480);
    await client.destroy();
  });

  it('destroy() waits for running jobs and refuses new ones', async () => {
    const client = new KcopydClient({ subJobSectors: 64 });
    let finished = false;
    void client.copy({ device: src, sector: 0, count: srcSectors }, [{ device: dests[0], sector: 0 }]).then(() => (finished = true));
    await client.destroy();
    expect(finished).toBe(true);
    await expect(client.copy({ device: src, sector: 0, count: 8 }, [{ device: dests[0], sector: 0 }])).rejects.toThrow(/destroyed/);
  });
});
