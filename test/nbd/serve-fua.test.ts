/**
 * FUA through `dmtool serve`: every device sits behind a volatile write
 * cache (DMTOOL_FAULTS) that a SIGKILL loses, as a power cut loses a disk
 * cache. nbdsh sends plain and FUA writes and gets their replies, then the
 * server is killed: exactly the FUA writes (and what the targets made
 * durable for them) are on disk; the plain ones are not, because FUA is
 * the device write's, not a flush of the whole device. The mirror's
 * cases that depend on timing are in packages/targets/test/targets.test.ts.
 */
import * as fs from 'fs';
import * as path from 'path';
import { dmtool } from '../support/cli';
import { makeZeroFile } from '../support/fixtures';
import { havePeer, nbdUri, peer, randomFile, ServeProcess, serveSandbox } from './serve-process';

jest.setTimeout(120000);

const KiB = 1024;
const MiB = 1 << 20;
const nbdsh = havePeer('nbdsh');
const when = (ok: boolean) => (ok ? test : test.skip);
const box = serveSandbox('dmtool-serve-fua-');
/** Writes wait in a volatile cache until a flush; a SIGKILL loses them. */
const cached = { ...process.env, DMTOOL_FAULTS: JSON.stringify({ volatileCache: {} }) };

/** Run `script` in nbdsh on export `name`; it must print ok once every reply came back. */
function nbdshOk(s: ServeProcess, name: string, script: string): void {
  const r = peer('nbdsh', ['-u', nbdUri(s.socketPath, name), '-c', `${script}\nprint("ok")\n`]);
  expect({ status: r.status, stdout: r.stdout, stderr: r.stderr }).toEqual({ status: 0, stdout: 'ok\n', stderr: '' });
}

/** A power cut: SIGKILL, nothing cached survives. */
async function powerCut(s: ServeProcess): Promise<void> {
  box.forget(s);
  process.kill(s.pid, 'SIGKILL');
  expect(await s.stop()).toEqual({ status: null, signal: 'SIGKILL' });
}

function bytesWith(file: string, fills: [number, number, number][]): Buffer {
  const b = fs.readFileSync(file);
  for (const [value, at, n] of fills) b.fill(value, at, at + n);
  return b;
}

when(nbdsh)('linear: FUA writes and zeroes are on disk after a power cut; a plain write before them is not', async () => {
  const file = path.join(box.dir, 'disk.img');
  randomFile(file, 8 * MiB, 41);
  const expected = bytesWith(file, [
    [0x22, MiB, 64 * KiB],
    [0, 2 * MiB, 64 * KiB],
  ]);
  const s = await box.serve(['--dev', 'disk', `0 16384 linear ${file} 0`], cached);
  nbdshOk(
    s,
    'disk',
    `assert h.can_fua()
h.pwrite(b"\\x11" * 65536, 0)
h.pwrite(b"\\x22" * 65536, ${MiB}, nbd.CMD_FLAG_FUA)
h.zero(65536, ${2 * MiB}, nbd.CMD_FLAG_FUA)
assert h.pread(65536, 0) == b"\\x11" * 65536`,
  );
  await powerCut(s);
  expect(fs.readFileSync(file).equals(expected)).toBe(true);
});

when(nbdsh)('mirror: a FUA write is on every leg after a power cut', async () => {
  const legs = [path.join(box.dir, 'leg0.img'), path.join(box.dir, 'leg1.img')];
  const log = path.join(box.dir, 'log.img');
  for (const f of legs) makeZeroFile(f, 8 * MiB);
  makeZeroFile(log, MiB);
  expect(dmtool(['mirror-create', '--log', log, '--region-size', '1024', '--nosync', ...legs]).status).toBe(0);
  const s = await box.serve(['--dev', 'm', `0 16384 mirror disk 2 ${log} 1024 2 ${legs[0]} 0 ${legs[1]} 0`], cached);
  // (Which plain writes survive depends on when the mirror last recorded regions clean, which flushes the legs.)
  nbdshOk(s, 'm', `h.pwrite(b"\\x22" * 65536, ${3 * MiB}, nbd.CMD_FLAG_FUA)`);
  await powerCut(s);
  const expected = Buffer.alloc(8 * MiB);
  expected.fill(0x22, 3 * MiB, 3 * MiB + 64 * KiB);
  for (const leg of legs) expect(fs.readFileSync(leg).equals(expected)).toBe(true);
});

when(nbdsh)(
  'snapshot: FUA writes to a new exception and to the origin are durable; the snapshot view keeps the origin as it was',
  async () => {
    const origin = path.join(box.dir, 'origin.img');
    const cow = path.join(box.dir, 'cow.img');
    randomFile(origin, 8 * MiB, 43);
    makeZeroFile(cow, 4 * MiB);
    expect(dmtool(['snapshot-create', origin, cow, '--chunk-size', '8']).status).toBe(0);
    const view = bytesWith(origin, [[0x33, 512, 512]]);
    const originAfter = bytesWith(origin, [[0x44, 64 * KiB, 4096]]);
    const s = await box.serve(
      ['--dev', 'data', `0 16384 snapshot-origin ${origin}`, '--dev', 'snap', `0 16384 snapshot ${origin} ${cow} P 8`],
      cached,
    );
    // The origin write copies chunk 16 into the snapshot first (a commit). Then a partial write to the snapshot's
    // chunk 0 (copy, commit, then the FUA write), and a plain one to the same chunk, which the power cut loses.
    nbdshOk(s, 'data', `h.pwrite(b"\\x44" * 4096, ${64 * KiB}, nbd.CMD_FLAG_FUA)`);
    nbdshOk(
      s,
      'snap',
      `h.pwrite(b"\\x33" * 512, 512, nbd.CMD_FLAG_FUA)
h.pwrite(b"\\x55" * 512, 2048)`,
    );
    await powerCut(s);
    expect(fs.readFileSync(origin).equals(originAfter)).toBe(true);
    const out = path.join(box.dir, 'view.img');
    const r = dmtool(['snapshot-read', origin, cow, '-o', out]);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    expect(fs.readFileSync(out).equals(view)).toBe(true);
  },
);
