import * as fs from 'fs';
import * as path from 'path';
import { FileDevice } from '@dmtool/native';
import { mergeSnapshot, Origin, PersistentStore, planMerge, Snapshot } from '@dmtool/dm-snapshot';
import { sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';
import { makeBaseOrigin, makeZeroFile, PlannedWrite, planPieces, snapshotViewSha, unpackFixture } from '../support/fixtures';

const CHUNKS = [8, 16];

describe.each(CHUNKS)('kernel fixture snapshot-cow-chunk%i', (cs) => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir('dmtool-snapfx-');
  });
  afterAll(() => removeDir(dir));

  test('replaying the write plan reproduces the kernel origin, COW and status lines byte for byte', async () => {
    const { dir: fx, manifest } = unpackFixture(`snapshot-cow-chunk${cs}`, dir);
    const progress = fs
      .readFileSync(path.join(fx, 'guest/status-progress.txt'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => l.split(' '));
    const originFile = path.join(dir, `origin-${cs}.img`);
    const cowFile = path.join(dir, `cow-${cs}.img`);
    makeBaseOrigin(originFile, manifest.images['origin.img'].size);
    makeZeroFile(cowFile, manifest.images['cow.img'].size);
    expect(sha256File(originFile)).toBe(manifest.images['origin.img'].sha256_before);
    expect(sha256File(cowFile)).toBe(manifest.images['cow.img'].sha256_before);

    const originDev = FileDevice.open(originFile, { write: true });
    const cowDev = FileDevice.open(cowFile, { write: true });
    const origin = new Origin(originDev);
    try {
      const snap = await Snapshot.create(origin, cowDev, { chunkSectors: cs });
      expect(`snap: ${snap.statusLine()}`).toBe(manifest.kernel_reported.status_fresh[1]);
      const writes = manifest.writes as PlannedWrite[];
      writes.forEach((w, i) => expect(progress[i][0]).toBe(w.name));
      const pieces = planPieces(writes);
      for (const [i, p] of pieces.entries()) {
        if (p.target === 'origin') await origin.write(p.data, p.sector);
        else await snap.write(p.data, p.sector);
        if (pieces[i + 1]?.writeIndex !== p.writeIndex)
          expect(`${p.write.name} ${snap.statusLine()}`).toBe(progress[p.writeIndex].join(' '));
      }
      expect(`snap: ${snap.statusLine()}`).toBe(manifest.kernel_reported.status[1]);
      expect(await snapshotViewSha(snap)).toBe(manifest.expected.snapshot_view_sha256);
    } finally {
      await origin.close();
      originDev.close();
      cowDev.close();
    }
    expect(sha256File(originFile)).toBe(manifest.images['origin.img'].sha256_after);
    expect(sha256File(cowFile)).toBe(manifest.images['cow.img'].sha256_after);
  });

  test('the kernel-made COW parses to the manifest table, status and snapshot view', async () => {
    const { dir: fx, manifest } = unpackFixture(`snapshot-cow-chunk${cs}`, dir);
    const originDev = FileDevice.open(path.join(fx, 'origin.img'));
    const cowDev = FileDevice.open(path.join(fx, 'cow.img'));
    const origin = new Origin(originDev);
    try {
      const snap = await Snapshot.open(origin, cowDev);
      expect(snap.chunkSectors).toBe(cs);
      expect([...snap.exceptions()].map((e) => [e.oldChunk, e.newChunk])).toEqual(manifest.exceptions_in_table_order);
      const store = snap.store as PersistentStore;
      expect(store.currentArea).toBe(manifest.cow_decoded.areas.length - 1);
      expect(store.currentCommitted).toBe(manifest.cow_decoded.areas.at(-1).entries);
      expect(`snap: ${snap.statusLine()}`).toBe(manifest.kernel_reported.status[1]);
      expect(await snapshotViewSha(snap)).toBe(manifest.kernel_reported.sha256_of_mapped_devices_after_writes['/dev/mapper/snap']);
    } finally {
      await origin.close();
      originDev.close();
      cowDev.close();
    }
  });
});

describe.each(CHUNKS)('kernel fixture snapshot-merge-chunk%i', (cs) => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir('dmtool-snapmerge-');
  });
  afterAll(() => removeDir(dir));

  test.each([
    ['dmtool batches', false, undefined],
    ['dmtool batches of 64 KiB', false, 64 << 10],
    ['kernel batches', true, undefined],
  ])('offline merge (%s) gives the kernel merged origin and COW', async (_label, kernelBatches, batchBytes) => {
    const sub = fs.mkdtempSync(path.join(dir, 'm-'));
    const input = unpackFixture(`snapshot-cow-chunk${cs}`, sub);
    const expected = unpackFixture(`snapshot-merge-chunk${cs}`, sub).manifest;
    const originFile = path.join(input.dir, 'origin.img');
    const cowFile = path.join(input.dir, 'cow.img');
    expect(sha256File(originFile)).toBe(expected.inputs.origin_sha256);
    expect(sha256File(cowFile)).toBe(expected.inputs.cow_sha256);

    const originDev = FileDevice.open(originFile, { write: true });
    const cowDev = FileDevice.open(cowFile, { write: true });
    const seen: number[] = [];
    try {
      const plan = await planMerge(originDev, cowDev, { kernelBatches, batchBytes });
      const r = await mergeSnapshot(originDev, cowDev, { kernelBatches, batchBytes, onProgress: (p) => seen.push(p.mergedChunks) });
      // The dry run plans exactly the batches and runs the merge then takes.
      expect([plan.batches, plan.runs, plan.mergedChunks, plan.mergedBytes]).toEqual([r.batches, r.runs, r.mergedChunks, r.mergedBytes]);
      // Reported before the first batch, as copies complete, and after each batch is retired.
      expect(seen[0]).toBe(0);
      expect(new Set(seen).size).toBe(plan.batches + 1);
      expect(r.exceptions).toBe(expected.input_exception_count);
      expect(r.mergedChunks).toBe(expected.input_exception_count);
      expect(`0 131072 snapshot-merge ${r.status}`).toBe(expected.kernel_reported.status_merge_final[0]);
      expect(seen.at(-1)).toBe(expected.input_exception_count);
      if (kernelBatches) expect(r.batches).toBe(r.runs);
      else expect(r.batches).toBeLessThan(r.runs);
    } finally {
      originDev.close();
      cowDev.close();
    }
    expect(sha256File(originFile)).toBe(expected.outputs['origin.img_sha256']);
    expect(sha256File(cowFile)).toBe(expected.outputs['cow.img_sha256']);
    // The kernel's merged origin equals the snapshot view it showed before the merge.
    expect(expected.outputs['origin.img_sha256']).toBe(expected.kernel_reported.sha256['/dev/mapper/snapview']);
  });
});
