/**
 * `dmtool serve` with the snapshot-merge target on the kernel fixture's
 * COW: reads through nbdcopy while the merge runs equal the snapshot view
 * (the merged result); writes during the merge, to a chunk still in the
 * COW and to one already merged, land where the kernel puts them; the end
 * state is the offline merge's plus those writes; kill -9 mid-merge and
 * the offline merge finishes to the same bytes.
 */
import * as fs from 'fs';
import * as path from 'path';
import { dmtool, waitFor } from '../support/cli';
import { unpackFixture } from '../support/fixtures';
import { sha256 as sha256FromBuffer } from '../support/images';
import { havePeer, nbdUri, peer, ServeProcess, sha256, serveSandbox } from './serve-process';

jest.setTimeout(120000);

const CHUNK_BYTES = 8 * 512;
const nbdsh = havePeer('nbdsh');
const nbdcopy = havePeer('nbdcopy');
const when = (ok: boolean) => (ok ? test : test.skip);

const sandbox = serveSandbox('dmtool-serve-merge-');
const serve = sandbox.serve;

interface Images {
  origin: string;
  cow: string;
  /** The origin and COW after an offline merge of copies. */
  mergedOrigin: Buffer;
  mergedCow: Buffer;
  /** The COW's table, index order: the merge takes it from the end. */
  table: { oldChunk: number; newChunk: number }[];
}

/** The kernel fixture's chunk-8 origin and COW, and what the offline merge makes of them. */
function fixture(): Images {
  const root = unpackFixture('snapshot-cow-chunk8', sandbox.dir).dir;
  const origin = path.join(root, 'origin.img');
  const cow = path.join(root, 'cow.img');
  const list = dmtool(['snapshot-list', cow, '--json']);
  expect(list.status).toBe(0);
  const table = (JSON.parse(list.stdout) as { table: { oldChunk: number; newChunk: number }[] }).table;
  const o2 = path.join(sandbox.dir, 'offline-origin.img');
  const c2 = path.join(sandbox.dir, 'offline-cow.img');
  fs.copyFileSync(origin, o2);
  fs.copyFileSync(cow, c2);
  expect(dmtool(['snapshot-merge', o2, c2]).status).toBe(0);
  const images = { origin, cow, mergedOrigin: fs.readFileSync(o2), mergedCow: fs.readFileSync(c2), table };
  fs.rmSync(o2);
  fs.rmSync(c2);
  return images;
}

const table = (im: Images) => `0 131072 snapshot-merge ${im.origin} ${im.cow} P 8`;
const ctl = (s: ServeProcess, ...words: string[]) => dmtool(['ctl', `${s.socketPath}.ctl`, ...words]);
const allocatedOf = (s: ServeProcess) => Number(/snapshot-merge (\d+)\//.exec(ctl(s, 'status', 'd').stdout)?.[1] ?? NaN);

when(nbdsh && nbdcopy)(
  'reads mid-merge are the merged result; writes land as the kernel puts them; the end is the offline merge plus the writes',
  async () => {
    const im = fixture();
    expect(im.table).toHaveLength(310);
    const s = await serve(['--dev', 'd', table(im), '--merge-rate', '64k']);
    expect(ctl(s, 'status')).toMatchObject({ status: 0, stdout: 'd: 0 131072 snapshot-merge 2504/32768 24\n' });
    expect(ctl(s, 'table').stdout).toBe(`d: ${table(im)}\n`);
    const view = path.join(sandbox.dir, 'view.img');
    expect(peer('nbdcopy', [nbdUri(s.socketPath, 'd'), view]).status).toBe(0);
    expect(sha256(view)).toBe(sha256FromBuffer(im.mergedOrigin));
    // The read happened mid-merge: exceptions are left.
    const allocated = allocatedOf(s);
    expect(allocated).toBeGreaterThan(16);
    // The tail's first batch is retired once the allocation shrank; entry 0 is merged last.
    expect(await waitFor(() => allocatedOf(s) < 2504, 30000)).toBe(true);
    const inCow = im.table[0];
    const merged = im.table[309];
    let plain = 0; // a chunk without an exception
    while (im.table.some((e) => e.oldChunk === plain)) plain++;
    const writes = [
      { chunk: inCow.oldChunk, byte: 0xa1 },
      { chunk: merged.oldChunk, byte: 0xb2 },
      { chunk: plain, byte: 0xc3 },
    ];
    // 1 KiB at 512 bytes into each chunk.
    const script = [`h.connect_uri(${JSON.stringify(nbdUri(s.socketPath, 'd'))})`];
    for (const w of writes) script.push(`h.pwrite(bytes([${w.byte}]) * 1024, ${w.chunk * CHUNK_BYTES + 512})`);
    script.push('h.flush()');
    expect(peer('nbdsh', ['-c', script.join('\n')]).status).toBe(0);
    // The write to the chunk still in the COW went to its COW chunk, not to the origin.
    const cowNow = fs.readFileSync(im.cow);
    expect(cowNow.subarray(inCow.newChunk * CHUNK_BYTES + 512, inCow.newChunk * CHUNK_BYTES + 1536).equals(Buffer.alloc(1024, 0xa1))).toBe(
      true,
    );
    // Reads see all three writes.
    expect(peer('nbdcopy', [nbdUri(s.socketPath, 'd'), view]).status).toBe(0);
    const expectedOrigin = Buffer.from(im.mergedOrigin);
    for (const w of writes) expectedOrigin.fill(w.byte, w.chunk * CHUNK_BYTES + 512, w.chunk * CHUNK_BYTES + 1536);
    expect(sha256(view)).toBe(sha256FromBuffer(expectedOrigin));
    expect(ctl(s, 'message', 'd', 'rate', '0')).toMatchObject({ status: 0, stdout: 'd: rate unlimited\n' });
    expect(await waitFor(() => ctl(s, 'status', 'd').stdout === 'd: 0 131072 snapshot-merge 16/32768 16\n', 60000)).toBe(true);
    expect(ctl(s, 'message', 'd', 'rate', '1M')).toMatchObject({ status: 2, stderr: 'dmtool: d: the merge has ended\n' });
    // After the merge the device is the origin.
    expect(peer('nbdcopy', [nbdUri(s.socketPath, 'd'), view]).status).toBe(0);
    expect(sha256(view)).toBe(sha256FromBuffer(expectedOrigin));
    sandbox.forget(s);
    expect(await s.stop()).toEqual({ status: 0, signal: null });
    expect(s.stdout()).toContain('status d: 0 131072 snapshot-merge 16/32768 16\nstopped; every device flushed\n');
    expect(sha256(im.origin)).toBe(sha256FromBuffer(expectedOrigin));
    // The COW is what the offline merge leaves, but for the data written into a COW chunk while it waited to be merged.
    const expectedCow = Buffer.from(im.mergedCow);
    expectedCow.fill(0xa1, inCow.newChunk * CHUNK_BYTES + 512, inCow.newChunk * CHUNK_BYTES + 1536);
    expect(sha256(im.cow)).toBe(sha256FromBuffer(expectedCow));
  },
);

test('kill -9 mid-merge: the COW is valid, and the offline merge finishes to the same bytes', async () => {
  const im = fixture();
  const s = await serve(['--dev', 'd', table(im), '--merge-rate', '64k']);
  expect(await waitFor(() => allocatedOf(s) < 2504, 30000)).toBe(true);
  process.kill(s.pid, 'SIGKILL');
  sandbox.forget(s);
  expect(await s.stop()).toEqual({ status: null, signal: 'SIGKILL' });
  const check = dmtool(['snapshot-check', im.cow, '--origin', im.origin]);
  expect({ status: check.status, stderr: check.stderr }).toEqual({ status: 0, stderr: '' });
  const left = /(\d+)\/32768/.exec(dmtool(['snapshot-status', im.cow]).stdout)?.[1];
  expect(Number(left)).toBeLessThan(2504);
  expect(Number(left)).toBeGreaterThan(16);
  expect(dmtool(['snapshot-merge', im.origin, im.cow]).status).toBe(0);
  expect(sha256(im.origin)).toBe(sha256FromBuffer(im.mergedOrigin));
  expect(sha256(im.cow)).toBe(sha256FromBuffer(im.mergedCow));
});

test('suspend stops the merge after its batch under way; resume carries on to the end', async () => {
  const im = fixture();
  const s = await serve(['--dev', 'd', table(im), '--merge-rate', '64k']);
  expect(ctl(s, 'suspend', 'd')).toMatchObject({ status: 0, stdout: 'd: suspended\n' });
  const held = allocatedOf(s);
  await new Promise((r) => setTimeout(r, 2000));
  expect(allocatedOf(s)).toBe(held);
  expect(held).toBeGreaterThan(16);
  expect(ctl(s, 'resume', 'd')).toMatchObject({ status: 0, stdout: 'd: resumed\n' });
  expect(ctl(s, 'message', 'd', 'rate', '0').status).toBe(0);
  expect(await waitFor(() => allocatedOf(s) === 16, 60000)).toBe(true);
  sandbox.forget(s);
  expect(await s.stop()).toEqual({ status: 0, signal: null });
  expect(sha256(im.origin)).toBe(sha256FromBuffer(im.mergedOrigin));
  expect(sha256(im.cow)).toBe(sha256FromBuffer(im.mergedCow));
});
