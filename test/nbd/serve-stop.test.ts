/**
 * How `dmtool serve` ends while real clients write: SIGTERM answers what
 * is in flight, flushes and exits 0 with every acknowledged write on disk;
 * SIGKILL leaves images that are consistent (a valid COW whose snapshot
 * still shows the old origin, a mirror log marking every region whose legs
 * differ), and a restart carries on.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { decodeDiskLog } from '@dmtool/dm-mirror';
import { dmtool, waitFor } from '../support/cli';
import { makeZeroFile } from '../support/fixtures';
import { havePeer, nbdUri, peer, randomFile, sha256, serveSandbox } from './serve-process';

jest.setTimeout(120000);

const MiB = 1 << 20;
const BLOCK_BYTES = 64 * 1024;
const nbdsh = havePeer('nbdsh');
const nbdcopy = havePeer('nbdcopy');
const when = (ok: boolean) => (ok ? test : test.skip);

const sandbox = serveSandbox('dmtool-serve-stop-');
const serve = sandbox.serve;

/** The bytes block `i` is written with: its number in every byte, never 0. */
function blockOf(i: number): Buffer {
  return Buffer.alloc(BLOCK_BYTES, (i % 255) + 1);
}

interface Writer {
  /** Block numbers whose write was acknowledged, in order. */
  acked(): number[];
  done: Promise<number | null>;
}

/**
 * nbdsh writing blocks first..first+count-1 of the export one after another,
 * printing each block's number once its write was acknowledged; it stops
 * quietly when the server goes away.
 */
function writer(uri: string, first: number, count: number): Writer {
  const script = [
    'import sys',
    `h.connect_uri(${JSON.stringify(uri)})`,
    'try:',
    `    for i in range(${first}, ${first + count}):`,
    `        h.pwrite(bytes([i % 255 + 1]) * ${BLOCK_BYTES}, i * ${BLOCK_BYTES})`,
    '        print(i, flush=True)',
    'except nbd.Error:',
    '    pass',
  ].join('\n');
  const child = spawn('nbdsh', ['-c', script], {
    stdio: ['ignore', 'pipe', 'ignore'],
    env: { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}`, LIBNBD_DEBUG: '0' },
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
  return {
    acked: () =>
      out
        .split('\n')
        .filter((l) => /^\d+$/.test(l))
        .map(Number),
    done: new Promise((resolve) =>
      child.on('close', (status) => {
        clearTimeout(timer);
        resolve(status);
      }),
    ),
  };
}

function expectAckedOnDisk(file: string, acked: number[]): void {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(BLOCK_BYTES);
    for (const i of acked) {
      fs.readSync(fd, buf, 0, BLOCK_BYTES, i * BLOCK_BYTES);
      if (!buf.equals(blockOf(i))) throw new Error(`block ${i} was acknowledged but ${file} does not hold it`);
    }
  } finally {
    fs.closeSync(fd);
  }
}

when(nbdsh)('SIGTERM mid-write: exit 0, status lines printed, every acknowledged write on disk, the COW valid', async () => {
  const origin = path.join(sandbox.dir, 'origin.img');
  const cow = path.join(sandbox.dir, 'cow.img');
  const disk = path.join(sandbox.dir, 'disk.img');
  randomFile(origin, 32 * MiB, 7);
  makeZeroFile(cow, 48 * MiB);
  makeZeroFile(disk, 64 * MiB);
  const originBefore = sha256(origin);
  const s = await serve([
    '--dev',
    'data',
    `0 65536 snapshot-origin ${origin}`,
    '--dev',
    'snap',
    `0 65536 snapshot ${origin} ${cow} P 16`,
    '--dev',
    'd',
    `0 131072 linear ${disk} 0`,
  ]);
  // Four clients at once: two on the linear device, two on the origin (each write copies chunks into the COW first).
  const writers = [writer(nbdUri(s.socketPath, 'd'), 0, 512), writer(nbdUri(s.socketPath, 'd'), 512, 512)];
  writers.push(writer(nbdUri(s.socketPath, 'data'), 0, 256), writer(nbdUri(s.socketPath, 'data'), 256, 256));
  expect(await waitFor(() => writers.every((w) => w.acked().length >= 20), 30000)).toBe(true);
  const stopped = await s.stop();
  sandbox.forget(s);
  for (const w of writers) expect(await w.done).toBe(0);
  expect(stopped).toEqual({ status: 0, signal: null });
  // Writers were cut before their end: the stop happened mid-write.
  const counts = [512, 512, 256, 256];
  expect(writers.some((w, i) => w.acked().length < counts[i])).toBe(true);
  expectAckedOnDisk(disk, [...writers[0].acked(), ...writers[1].acked()]);
  expectAckedOnDisk(origin, [...writers[2].acked(), ...writers[3].acked()]);
  expect(s.stdout()).toMatch(
    /status data: 0 65536 snapshot-origin \nstatus snap: 0 65536 snapshot \d+\/98304 \d+\nstatus d: 0 131072 linear \nstopped; every device flushed\n$/,
  );
  expect(s.stderr()).toContain('dmtool serve: SIGTERM: finishing requests in flight\n');
  expect(dmtool(['snapshot-check', cow, '--origin', origin]).status).toBe(0);
  // The snapshot still shows the origin as it was.
  const again = await serve(['--dev', 'snap', `0 65536 snapshot ${origin} ${cow} P 16`]);
  const view = path.join(sandbox.dir, 'view.img');
  if (nbdcopy) {
    expect(peer('nbdcopy', [nbdUri(again.socketPath, 'snap'), view]).status).toBe(0);
    expect(sha256(view)).toBe(originBefore);
  }
});

when(nbdsh)(
  'SIGKILL mid-write: the COW is valid and the snapshot unchanged; the mirror log marks every region whose legs differ; a restart resyncs',
  async () => {
    const origin = path.join(sandbox.dir, 'origin.img');
    const cow = path.join(sandbox.dir, 'cow.img');
    const legs = [path.join(sandbox.dir, 'leg0.img'), path.join(sandbox.dir, 'leg1.img')];
    const log = path.join(sandbox.dir, 'log.img');
    randomFile(origin, 32 * MiB, 8);
    makeZeroFile(cow, 48 * MiB);
    randomFile(legs[0], 32 * MiB, 9);
    fs.copyFileSync(legs[0], legs[1]);
    makeZeroFile(log, MiB);
    expect(dmtool(['mirror-create', '--nosync', '--log', log, '--region-size', '256', ...legs]).status).toBe(0);
    const originBefore = sha256(origin);
    const mirrorTable = `0 65536 mirror disk 2 ${log} 256 2 ${legs[0]} 0 ${legs[1]} 0`;
    const s = await serve([
      '--dev',
      'data',
      `0 65536 snapshot-origin ${origin}`,
      '--dev',
      'snap',
      `0 65536 snapshot ${origin} ${cow} P 16`,
      '--dev',
      'm',
      mirrorTable,
    ]);
    const writers = [writer(nbdUri(s.socketPath, 'data'), 0, 512), writer(nbdUri(s.socketPath, 'm'), 0, 512)];
    expect(await waitFor(() => writers.every((w) => w.acked().length >= 20), 30000)).toBe(true);
    process.kill(s.pid, 'SIGKILL');
    expect(await s.stop()).toEqual({ status: null, signal: 'SIGKILL' });
    sandbox.forget(s);
    for (const w of writers) await w.done;
    expect(writers[0].acked().length).toBeLessThan(512);
    expectAckedOnDisk(origin, writers[0].acked());
    const check = dmtool(['snapshot-check', cow, '--origin', origin]);
    expect({ status: check.status, stdout: check.stdout }).toMatchObject({ status: 0 });
    // Every region whose legs differ is marked out of sync (dirty) in the log.
    const image = decodeDiskLog(fs.readFileSync(log), { path: log });
    const regionBytes = 256 * 512;
    const l0 = fs.readFileSync(legs[0]);
    const l1 = fs.readFileSync(legs[1]);
    const differing: number[] = [];
    for (let r = 0; r < 256; r++) {
      if (!l0.subarray(r * regionBytes, (r + 1) * regionBytes).equals(l1.subarray(r * regionBytes, (r + 1) * regionBytes)))
        differing.push(r);
    }
    for (const r of differing) expect({ region: r, clean: image.clean.get(r) }).toEqual({ region: r, clean: false });
    // A restart: the snapshot shows the old origin, the mirror resyncs what the log marks.
    const again = await serve(['--dev', 'snap', `0 65536 snapshot ${origin} ${cow} P 16`, '--dev', 'm', mirrorTable]);
    if (nbdcopy) {
      const view = path.join(sandbox.dir, 'view.img');
      expect(peer('nbdcopy', [nbdUri(again.socketPath, 'snap'), view]).status).toBe(0);
      expect(sha256(view)).toBe(originBefore);
    }
    const inSync = () => decodeDiskLog(fs.readFileSync(log), { path: log }).clean.count() === 256;
    expect(await waitFor(inSync, 30000)).toBe(true);
    expect(await again.stop()).toEqual({ status: 0, signal: null });
    sandbox.forget(again);
    expect(sha256(legs[1])).toBe(sha256(legs[0]));
    expectAckedOnDisk(legs[0], writers[1].acked());
  },
);

when(nbdsh)('SIGTERM while a device is suspended: the held write is answered and on disk, exit 0', async () => {
  const disk = path.join(sandbox.dir, 'disk.img');
  makeZeroFile(disk, 4 * MiB);
  const s = await serve(['--dev', 'd', `0 8192 linear ${disk} 0`]);
  expect(dmtool(['ctl', `${s.socketPath}.ctl`, 'suspend', 'd'])).toMatchObject({ status: 0, stdout: 'd: suspended\n' });
  const w = writer(nbdUri(s.socketPath, 'd'), 3, 1);
  await new Promise((r) => setTimeout(r, 1500));
  expect(w.acked()).toEqual([]);
  const stopped = await s.stop();
  sandbox.forget(s);
  expect(stopped).toEqual({ status: 0, signal: null });
  expect(await w.done).toBe(0);
  expect(w.acked()).toEqual([3]);
  expectAckedOnDisk(disk, [3]);
});
