import * as fs from 'fs';
import * as path from 'path';
import { FileDevice } from '@dmtool/native';
import { PersistentStore } from '@dmtool/dm-snapshot';
import { readRange, sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';
import { dmtool, dmtoolKilledAfter } from '../support/cli';
import { unpackFixture } from '../support/fixtures';

/**
 * kill -9 the merge at many points (named crash points, after the n-th
 * write, at random times), check that what is left on disk is a valid COW
 * whose table is a prefix of the original and whose retired entries are
 * durable in the origin, then run the merge again and compare with the
 * kernel's merged origin and COW.
 */
const CS = 8;
const CHUNK_BYTES = CS * 512;
let dir: string;
let fixtureOrigin: string;
let fixtureCow: string;
let expected: { origin: string; cow: string };
let original: [number, number][];

beforeAll(() => {
  dir = tempDir('dmtool-mergecrash-');
  const input = unpackFixture(`snapshot-cow-chunk${CS}`, dir);
  fixtureOrigin = path.join(input.dir, 'origin.img');
  fixtureCow = path.join(input.dir, 'cow.img');
  original = input.manifest.exceptions_in_table_order;
  const m = unpackFixture(`snapshot-merge-chunk${CS}`, dir).manifest;
  expected = { origin: m.outputs['origin.img_sha256'], cow: m.outputs['cow.img_sha256'] };
});
afterAll(() => removeDir(dir));

let n = 0;
function freshPair(): { origin: string; cow: string } {
  const sub = path.join(dir, `run${n++}`);
  fs.mkdirSync(sub);
  const pair = { origin: path.join(sub, 'origin.img'), cow: path.join(sub, 'cow.img') };
  fs.copyFileSync(fixtureOrigin, pair.origin);
  fs.copyFileSync(fixtureCow, pair.cow);
  return pair;
}

/** The interrupted COW must read as a valid table: a prefix of the original, the rest merged for good. */
async function checkInterrupted(pair: { origin: string; cow: string }): Promise<number> {
  const cow = FileDevice.open(pair.cow);
  let remaining: number;
  try {
    const store = await PersistentStore.open(cow, { originSectors: fs.statSync(pair.origin).size / 512 });
    expect(store.valid).toBe(true);
    remaining = store.table.size;
    for (let i = 0; i < remaining; i++) expect([store.table.oldAt(i), store.table.newAt(i)]).toEqual(original[i]);
    // The kernel's reader would see the same: nothing but zeros after the terminator.
    const E = store.exceptionsPerArea;
    const lastArea = Math.floor(remaining / E);
    const areaBytes = readRange(pair.cow, (1 + lastArea * (E + 1)) * CHUNK_BYTES, CHUNK_BYTES);
    expect(areaBytes.subarray((remaining % E) * 16).every((b) => b === 0)).toBe(true);
    expect(store.usage().metadataSectors).toBe((lastArea + 2) * CS);
  } finally {
    cow.close();
  }
  // Every entry already retired has its data in the origin.
  for (let i = remaining; i < original.length; i++) {
    const [oldChunk, newChunk] = original[i];
    expect(
      readRange(pair.origin, oldChunk * CHUNK_BYTES, CHUNK_BYTES).equals(readRange(pair.cow, newChunk * CHUNK_BYTES, CHUNK_BYTES)),
    ).toBe(true);
  }
  return remaining;
}

function finish(pair: { origin: string; cow: string }, extra: string[] = []): void {
  const r = dmtool(['snapshot-merge', pair.origin, pair.cow, '--json', ...extra]);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(JSON.parse(r.stdout).status).toBe('16/32768 16');
  expect(sha256File(pair.origin)).toBe(expected.origin);
  expect(sha256File(pair.cow)).toBe(expected.cow);
}

const BATCH = ['--batch-size', '16k'];

describe('snapshot-merge survives kill -9 and resumes', () => {
  const points: [string, number][] = [
    ['snapshot-merge:batch-start', 1],
    ['snapshot-merge:batch-start', 2],
    ['snapshot-merge:batch-start', 45],
    ['snapshot-merge:copied', 1],
    ['snapshot-merge:copied', 14],
    ['snapshot-merge:origin-flushed', 1],
    ['snapshot-merge:origin-flushed', 15],
    ['snapshot-merge:origin-flushed', 70],
    ['snapshot-merge:area-written', 1],
    ['snapshot-merge:area-written', 2],
    ['snapshot-merge:area-written', 15],
    ['snapshot-merge:area-written', 16],
    ['snapshot-merge:retired', 3],
    ['snapshot-merge:retired', 77],
  ];

  test.each(points)('crash at %s (hit %i)', async (point, hit) => {
    const pair = freshPair();
    const r = dmtool(['snapshot-merge', pair.origin, pair.cow, ...BATCH], {
      env: { DMTOOL_FAULTS: JSON.stringify({ crashAt: { point, hit } }) },
    });
    expect(r.signal).toBe('SIGKILL');
    const remaining = await checkInterrupted(pair);
    expect(remaining).toBeLessThan(original.length + 1);
    finish(pair);
  });

  // A power cut, not just a killed process: writes not yet flushed are lost,
  // and a flush in progress may have persisted its writes in any order.
  const powerCut = { volatileCache: { order: 'reverse' as const } };

  test.each(points)('power cut at %s (hit %i)', async (point, hit) => {
    const pair = freshPair();
    const r = dmtool(['snapshot-merge', pair.origin, pair.cow, ...BATCH], {
      env: { DMTOOL_FAULTS: JSON.stringify({ ...powerCut, crashAt: { point, hit } }) },
    });
    expect(r.signal).toBe('SIGKILL');
    await checkInterrupted(pair);
    finish(pair);
  });

  test.each([1, 2, 5, 13, 40, 150])('power cut after %i cached writes reached the disk during flushes', async (applied) => {
    const pair = freshPair();
    const r = dmtool(['snapshot-merge', pair.origin, pair.cow, ...BATCH], {
      env: { DMTOOL_FAULTS: JSON.stringify({ ...powerCut, crashDuringFlush: applied }) },
    });
    expect(r.signal).toBe('SIGKILL');
    await checkInterrupted(pair);
    finish(pair);
  });

  test.each([1, 3, 8, 21, 60, 90])('crash after %i writes', async (writes) => {
    const pair = freshPair();
    const r = dmtool(['snapshot-merge', pair.origin, pair.cow, ...BATCH], {
      env: { DMTOOL_FAULTS: JSON.stringify({ crashAfterWrites: writes }) },
    });
    expect(r.signal).toBe('SIGKILL');
    await checkInterrupted(pair);
    finish(pair);
  });

  test('crash in kernel-batch mode, finished in dmtool batches, then the other way round', async () => {
    const pair = freshPair();
    let r = dmtool(['snapshot-merge', pair.origin, pair.cow, '--kernel-batches'], {
      env: { DMTOOL_FAULTS: JSON.stringify({ crashAt: { point: 'snapshot-merge:retired', hit: 4 } }) },
    });
    expect(r.signal).toBe('SIGKILL');
    const left = await checkInterrupted(pair);
    expect(left).toBeLessThan(original.length);
    r = dmtool(['snapshot-merge', pair.origin, pair.cow, ...BATCH], {
      env: { DMTOOL_FAULTS: JSON.stringify({ crashAt: { point: 'snapshot-merge:retired', hit: 2 } }) },
    });
    expect(r.signal).toBe('SIGKILL');
    expect(await checkInterrupted(pair)).toBeLessThan(left);
    finish(pair, ['--kernel-batches']);
  });

  test('repeated crashes, each run making progress, until done', async () => {
    const pair = freshPair();
    let left = original.length;
    let kills = 0;
    for (let i = 0; i < 6; i++) {
      const r = dmtool(['snapshot-merge', pair.origin, pair.cow, ...BATCH], {
        env: { DMTOOL_FAULTS: JSON.stringify({ crashAt: { point: 'snapshot-merge:area-written', hit: 7 } }) },
      });
      if (r.signal !== 'SIGKILL') break;
      kills++;
      const now = await checkInterrupted(pair);
      expect(now).toBeLessThan(left);
      left = now;
    }
    expect(kills).toBeGreaterThanOrEqual(2);
    finish(pair);
  });

  test.each([60, 150, 300])('SIGKILL from outside after %i ms of a rate-limited merge', async (ms) => {
    const pair = freshPair();
    const r = await dmtoolKilledAfter(['snapshot-merge', pair.origin, pair.cow, '--rate', '1M', ...BATCH], ms);
    expect(r.signal).toBe('SIGKILL');
    const left = await checkInterrupted(pair);
    expect(left).toBeGreaterThan(0);
    finish(pair);
  });

  test('an I/O error on the origin stops the merge with nothing wrongly retired; a rerun finishes', async () => {
    const pair = freshPair();
    const r = dmtool(['snapshot-merge', pair.origin, pair.cow, ...BATCH], {
      env: { DMTOOL_FAULTS: JSON.stringify({ rules: [{ op: 'write', code: 'EIO', path: 'origin.img', skip: 10, times: 1 }] }) },
    });
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^dmtool: EIO: merge copy of origin chunks \d+\.\.\d+ failed \(nothing retired\)/);
    const left = await checkInterrupted(pair);
    expect(left).toBeGreaterThan(0);
    expect(left).toBeLessThan(original.length);
    finish(pair);
  });
});

describe('an I/O error on the COW while retiring stops the merge; the snapshot stays valid and a rerun finishes', () => {
  // 310 exceptions in batches of 64 chunks: 5 batches; the first clears the
  // tail of area 1 and of area 0 (2 area writes), the others 1 each.
  const RETIRE_BATCH = ['--batch-size', '256k'];
  const AREA_WRITES = 6;
  const COW_FLUSHES = 5;
  const steps: ['write' | 'flush', number][] = [
    ...Array.from({ length: AREA_WRITES }, (_, i) => ['write', i] as ['write', number]),
    ...Array.from({ length: COW_FLUSHES }, (_, i) => ['flush', i] as ['flush', number]),
  ];

  test.each(steps)('COW %s number %i fails', async (op, skip) => {
    const pair = freshPair();
    const r = dmtool(['snapshot-merge', pair.origin, pair.cow, ...RETIRE_BATCH], {
      faults: { rules: [{ op, code: 'EIO', path: 'cow.img', skip, times: 1 }] },
    });
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr.trimEnd()).toMatch(
      new RegExp(
        `^dmtool: EIO: merge stopped: clearing \\d+ merged exceptions from the table failed \\(EIO: ${op} failed on .*cow\\.img.*: injected fault\\); ` +
          `the snapshot is still valid, run the merge again to finish \\(.*cow\\.img sectors \\d+\\.\\.\\d+\\)$`,
      ),
    );
    expect(r.status).toBe(1);
    const status = dmtool(['snapshot-status', pair.cow]);
    expect(status.stdout).not.toMatch(/Invalid/);
    const left = await checkInterrupted(pair);
    // A failed area write leaves its batch in the table; after a failed flush
    // the writes may all have landed (the last batch's leave none).
    if (op === 'write') expect(left).toBeGreaterThan(0);
    finish(pair, RETIRE_BATCH);
  });

  test.each(['write', 'flush'] as const)('every COW %s of the merge was failed once above', (op) => {
    const pair = freshPair();
    const skip = op === 'write' ? AREA_WRITES : COW_FLUSHES;
    const r = dmtool(['snapshot-merge', pair.origin, pair.cow, ...RETIRE_BATCH], {
      faults: { rules: [{ op, code: 'EIO', path: 'cow.img', skip, times: 1 }] },
    });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(sha256File(pair.origin)).toBe(expected.origin);
    expect(sha256File(pair.cow)).toBe(expected.cow);
  });

  test('the kernel fixture merges in the order the step counts assume', () => {
    const pair = freshPair();
    const r = dmtool(['snapshot-merge', pair.origin, pair.cow, ...RETIRE_BATCH, '--json']);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ exceptions: original.length, batches: COW_FLUSHES });
  });
});
