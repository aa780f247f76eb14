/**
 * A mirror with a local leg and a remote leg on an NBD server that dies:
 * killed (SIGKILL) during an offline resync and while `dmtool serve` takes
 * writes. The local leg keeps serving, the log records what the remote leg
 * missed and nothing it did not acknowledge and flush (checked against
 * nbdkit's own log of the requests it took), and once the server is back a
 * resync copies exactly those regions (the bytes written to the server are
 * counted) and the legs end identical.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { decodeDiskLog } from '@dmtool/dm-mirror';
import { dmtool, startDmtool, waitFor } from '../support/cli';
import { ServerProcess, startNbdkit } from '../support/nbd-servers';
import { readNbdkitLog, requestBytes } from '../support/nbdkit-log';
import { havePeer, nbdUri, peer, randomFile, sha256, startServe } from './serve-process';

jest.setTimeout(120000);

const MiB = 1 << 20;
const SIZE = 16 * MiB;
const REGION_SECTORS = 512;
const REGION_BYTES = REGION_SECTORS * 512;
const REGIONS = SIZE / REGION_BYTES;
/** Two reconnection attempts, 100 ms then 200 ms: the device fails within a second of the server's death. */
const RETRY_ENV = { DMTOOL_NBD_RECONNECT_ATTEMPTS: '2', DMTOOL_NBD_RECONNECT_DELAY_MS: '100' };

const nbdkit = havePeer('nbdkit');
const nbdsh = havePeer('nbdsh');
const when = (ok: boolean) => (ok ? test : test.skip);
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-remote-leg-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/**
 * A two-leg mirror's images in this test's folder: a local leg, the backing
 * file of a remote leg to be served on leg.sock, and a zeroed log. `data`:
 * which leg gets random data from `seed` (the other is zeroed), or both
 * (identical legs).
 */
function mirrorImages(data: 'local' | 'remote' | 'both', seed: number) {
  const local = path.join(dir, 'local.img');
  const remoteFile = path.join(dir, 'remote.img');
  const log = path.join(dir, 'log.img');
  if (data === 'remote') {
    randomFile(remoteFile, SIZE, seed);
    zeroFile(local, SIZE);
  } else {
    randomFile(local, SIZE, seed);
    if (data === 'both') fs.copyFileSync(local, remoteFile);
    else zeroFile(remoteFile, SIZE);
  }
  zeroFile(log, MiB);
  const sock = path.join(dir, 'leg.sock');
  const remote = nbdUri(sock, '');
  return { local, remoteFile, log, sock, remote, table: `0 32768 mirror disk 2 ${log} ${REGION_SECTORS} 2 ${local} 0 ${remote} 0` };
}

function zeroFile(file: string, bytes: number): void {
  fs.writeFileSync(file, Buffer.alloc(0));
  fs.truncateSync(file, bytes);
}

/** The regions the log on disk records dirty (clean bit 0). */
function dirtyRegions(log: string): number[] {
  return decodeDiskLog(fs.readFileSync(log), { path: log }).clean.zeros();
}

/** "0-3,7,9-12", as the CLI prints region lists. */
function regionList(regions: number[]): string {
  const runs: string[] = [];
  for (let i = 0; i < regions.length;) {
    let j = i;
    while (j + 1 < regions.length && regions[j + 1] === regions[j] + 1) j++;
    runs.push(i === j ? `${regions[i]}` : `${regions[i]}-${regions[j]}`);
    i = j + 1;
  }
  return runs.join(',');
}

/** The regions a set of requests touched, ascending. */
function regionsTouched(requests: { byteOffset: number; bytes: number }[]): number[] {
  const set = new Set<number>();
  for (const r of requests) {
    for (let at = r.byteOffset; at < r.byteOffset + r.bytes; at += 512) set.add(Math.floor(at / REGION_BYTES));
  }
  return [...set].sort((a, b) => a - b);
}

const all = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

describe('a mirror with a local and a remote leg whose server dies', () => {
  when(nbdkit)(
    'mirror-resync with the server killed mid-resync: the remote leg fails, the log keeps what it did not flush; after a restart a rerun copies exactly the rest',
    async () => {
      const { local, remoteFile, log, sock, remote } = mirrorImages('local', 7);
      const firstLog = path.join(dir, 'nbdkit-1.log');
      let server: ServerProcess = await startNbdkit(['--filter=log', 'file', remoteFile, `logfile=${firstLog}`], sock);
      try {
        const c = dmtool(['mirror-create', '--log', log, '--region-size', String(REGION_SECTORS), local, remote]);
        expect([c.status, c.stderr]).toEqual([0, '']);
        // 16 MiB at 4 MiB/s: regions are recorded clean (about a second apart) long before the end.
        const run = startDmtool(['mirror-resync', '--log', log, local, remote, '--rate', '4M', '--parallel', '1'], {
          env: RETRY_ENV,
          timeoutMs: 60000,
        });
        try {
          expect(await waitFor(() => dirtyRegions(log).length < REGIONS, 30000)).toBe(true);
          await server.stop('SIGKILL');
          const r = await run.done;
          expect([r.status, r.signal]).toEqual([1, null]);
          const dirty = dirtyRegions(log);
          const clean = all(0, REGIONS).filter((x) => !dirty.includes(x));
          expect(clean.length).toBeGreaterThan(0);
          expect(dirty.length).toBeGreaterThan(0);
          // As for a failed local leg: the leg, its status letter and first error, then the regions left out of sync.
          const m = new RegExp(
            `^dmtool: leg 1 ${esc(remote)} failed \\(([SF])\\): EIO: (write|flush) failed on ${esc(remote)}( at sector \\d+ \\(\\+\\d+ sectors\\))?: ` +
              `device failed: connection lost; 2 reconnection attempts failed \\(last: connect ECONNREFUSED ${esc(sock)}\\)\\n` +
              `dmtool: ${dirty.length} regions left out of sync: ${esc(regionList(dirty))}\\n$`,
          ).exec(r.stderr);
          expect([m !== null, r.stderr]).toEqual([true, r.stderr]);
          const letter = (m as RegExpExecArray)[1];
          expect(r.stdout.split('\n')[1]).toBe(
            `0 32768 mirror 2 ${local} ${remote} ${clean.length}/${REGIONS} 1 A${letter} 3 disk ${log} A`,
          );
          // Every region recorded clean was written on the server and flushed there (its own log says so) and holds the local bytes.
          const flushed = readNbdkitLog(firstLog).flushedSectors(SIZE);
          for (const region of clean) {
            const sectors = flushed.subarray((region * REGION_BYTES) / 512, ((region + 1) * REGION_BYTES) / 512);
            expect([region, sectors.every((b) => b === 1)]).toEqual([region, true]);
            expect([region, sha256(remoteFile, region * REGION_BYTES, REGION_BYTES)]).toEqual([
              region,
              sha256(local, region * REGION_BYTES, REGION_BYTES),
            ]);
          }
        } finally {
          run.signal('SIGKILL');
          await run.done;
        }

        // The server comes back on the same file: the rerun writes exactly the regions still out of sync.
        const dirty = dirtyRegions(log);
        const secondLog = path.join(dir, 'nbdkit-2.log');
        server = await startNbdkit(['--filter=log', 'file', remoteFile, `logfile=${secondLog}`], sock);
        const again = dmtool(['mirror-resync', '--log', log, local, remote], { env: RETRY_ENV });
        expect([again.status, again.stderr]).toEqual([0, '']);
        expect(again.stdout.split('\n')[0]).toMatch(
          new RegExp(
            `^resynced ${dirty.length} of ${dirty.length} out-of-sync regions \\(${esc(((dirty.length * REGION_BYTES) / MiB).toFixed(1))} MiB in `,
          ),
        );
        const written = readNbdkitLog(secondLog).started.filter((q) => q.kind === 'Write');
        expect(requestBytes(readNbdkitLog(secondLog))).toBe(dirty.length * REGION_BYTES);
        expect(regionsTouched(written)).toEqual(dirty);
      } finally {
        await server.stop();
      }
      expect(sha256(remoteFile)).toBe(sha256(local));
      expect(dirtyRegions(log)).toEqual([]);
    },
  );

  when(nbdkit)(
    'the remote leg as primary, its server killed mid-resync: the resync stops as for a failed local primary; after a restart a rerun reads exactly the rest',
    async () => {
      const { local, remoteFile, log, sock, remote } = mirrorImages('remote', 9);
      let server: ServerProcess = await startNbdkit(['file', remoteFile], sock);
      try {
        expect(dmtool(['mirror-create', '--log', log, '--region-size', String(REGION_SECTORS), remote, local]).status).toBe(0);
        const run = startDmtool(['mirror-resync', '--log', log, remote, local, '--rate', '4M', '--parallel', '1'], {
          env: RETRY_ENV,
          timeoutMs: 60000,
        });
        try {
          expect(await waitFor(() => dirtyRegions(log).length < REGIONS, 30000)).toBe(true);
          await server.stop('SIGKILL');
          const r = await run.done;
          expect([r.status, r.signal]).toEqual([1, null]);
          const dirty = dirtyRegions(log);
          const clean = all(0, REGIONS).filter((x) => !dirty.includes(x));
          expect([clean.length > 0, dirty.length > 0]).toEqual([true, true]);
          const m = new RegExp(
            `^dmtool: leg 0 ${esc(remote)} failed \\(([SF])\\): EIO: (read|flush) failed on ${esc(remote)}( at sector \\d+ \\(\\+\\d+ sectors\\))?: ` +
              `device failed: connection lost; 2 reconnection attempts failed \\(last: connect ECONNREFUSED ${esc(sock)}\\)\\n` +
              `dmtool: ${dirty.length} regions left out of sync: ${esc(regionList(dirty))}\\n$`,
          ).exec(r.stderr);
          expect([m !== null, r.stderr]).toEqual([true, r.stderr]);
          expect(r.stdout.split('\n')[1]).toBe(
            `0 32768 mirror 2 ${remote} ${local} ${clean.length}/${REGIONS} 1 ${(m as RegExpExecArray)[1]}A 3 disk ${log} A`,
          );
          for (const region of clean) {
            expect([region, sha256(local, region * REGION_BYTES, REGION_BYTES)]).toEqual([
              region,
              sha256(remoteFile, region * REGION_BYTES, REGION_BYTES),
            ]);
          }
        } finally {
          run.signal('SIGKILL');
          await run.done;
        }
        const dirty = dirtyRegions(log);
        const nbdkitLog = path.join(dir, 'nbdkit.log');
        server = await startNbdkit(['--filter=log', 'file', remoteFile, `logfile=${nbdkitLog}`], sock);
        const again = dmtool(['mirror-resync', '--log', log, remote, local], { env: RETRY_ENV });
        expect([again.status, again.stderr]).toEqual([0, '']);
        expect(again.stdout.split('\n')[0]).toMatch(new RegExp(`^resynced ${dirty.length} of ${dirty.length} out-of-sync regions `));
        const reads = readNbdkitLog(nbdkitLog).started.filter((q) => q.kind === 'Read');
        expect(requestBytes(readNbdkitLog(nbdkitLog), 'Read')).toBe(dirty.length * REGION_BYTES);
        expect(regionsTouched(reads)).toEqual(dirty);
      } finally {
        await server.stop();
      }
      expect(sha256(local)).toBe(sha256(remoteFile));
      expect(dirtyRegions(log)).toEqual([]);
    },
  );

  when(nbdkit && nbdsh)(
    'dmtool serve with the server killed while a client writes: writes succeed on the local leg, the leg is D, the regions it missed stay dirty across a restart and are resynced exactly',
    async () => {
      const { local, remoteFile, log, sock, remote, table } = mirrorImages('both', 11);
      let server: ServerProcess = await startNbdkit(['file', remoteFile], sock);
      const serveSock = path.join(dir, 'serve.sock');
      const served = nbdUri(serveSock, 'm');
      // Before the death: regions 0-3; after it: regions 10-11 and one sector of region 40.
      const before = Buffer.alloc(4 * REGION_BYTES, 0x5a);
      const after = Buffer.alloc(2 * REGION_BYTES, 0xa5);
      const sector = Buffer.alloc(512, 0x3c);
      const missed = [10, 11, 40];
      try {
        expect(dmtool(['mirror-create', '--nosync', '--log', log, '--region-size', String(REGION_SECTORS), local, remote]).status).toBe(0);
        const s = await startServe(['--dev', 'm', table], serveSock, 15000, { ...process.env, ...RETRY_ENV });
        let stopped = false;
        try {
          const w1 = peer('nbdsh', ['-u', served, '-c', `h.pwrite(b"\\x5a" * ${before.length}, 0)\nh.flush()`]);
          expect([w1.status, w1.stderr]).toEqual([0, '']);
          // Regions 0-3 recorded clean again (legs flushed, log written): only then the server dies.
          expect(await waitFor(() => dirtyRegions(log).length === 0, 10000)).toBe(true);
          await server.stop('SIGKILL');
          const w2 = peer('nbdsh', [
            '-u',
            served,
            '-c',
            `h.pwrite(b"\\xa5" * ${after.length}, ${10 * REGION_BYTES})\nh.pwrite(b"\\x3c" * 512, ${40 * REGION_BYTES + 512})\nh.flush()\nprint(h.pread(512, ${40 * REGION_BYTES + 512}) == b"\\x3c" * 512)`,
          ]);
          expect([w2.status, w2.stderr, w2.stdout]).toEqual([0, '', 'True\n']);
          // Acknowledged means marked in the log: the regions are dirty on disk before serve stops.
          expect(dirtyRegions(log)).toEqual(missed);
          const st = await s.stop();
          stopped = true;
          expect([st, s.stderr()]).toEqual([{ status: 0, signal: null }, 'dmtool serve: SIGTERM: finishing requests in flight\n']);
          expect(s.stdout()).toContain('stopped; every device flushed but the failed mirror legs\n');
          expect(s.stdout()).toContain(`status m: 0 32768 mirror 2 ${local} ${remote} ${REGIONS - 3}/${REGIONS} 1 AD 3 disk ${log} A\n`);
        } finally {
          if (!stopped) await s.stop();
        }
        expect(dirtyRegions(log)).toEqual(missed);
        // The local leg holds every write; the remote file only those made before its server died.
        expect(fs.readFileSync(local).subarray(0, before.length).equals(before)).toBe(true);
        expect(
          fs
            .readFileSync(local)
            .subarray(10 * REGION_BYTES, 12 * REGION_BYTES)
            .equals(after),
        ).toBe(true);
        expect(
          fs
            .readFileSync(local)
            .subarray(40 * REGION_BYTES + 512, 40 * REGION_BYTES + 1024)
            .equals(sector),
        ).toBe(true);
        expect(fs.readFileSync(remoteFile).subarray(0, before.length).equals(before)).toBe(true);
        expect(sha256(remoteFile, 10 * REGION_BYTES, 2 * REGION_BYTES)).not.toBe(sha256(local, 10 * REGION_BYTES, 2 * REGION_BYTES));

        // The server is back; a read-only serve restart shows the same regions out of sync and changes no log byte.
        const secondLog = path.join(dir, 'nbdkit.log');
        server = await startNbdkit(['--filter=log', 'file', remoteFile, `logfile=${secondLog}`], sock);
        const logBytes = sha256(log);
        const config = path.join(dir, 'devices.json');
        fs.writeFileSync(config, JSON.stringify({ devices: [{ name: 'm', table, readOnly: true }] }));
        const ro = await startServe(['--config', config], serveSock, 15000, { ...process.env, ...RETRY_ENV });
        const view = peer('nbdsh', ['-u', served, '-c', `print(h.pread(512, ${40 * REGION_BYTES + 512}) == b"\\x3c" * 512)`]);
        expect([view.status, view.stderr, view.stdout]).toEqual([0, '', 'True\n']);
        expect(await ro.stop()).toEqual({ status: 0, signal: null });
        expect(ro.stdout()).toContain(`status m: 0 32768 mirror 2 ${local} ${remote} ${REGIONS - 3}/${REGIONS} 1 AA 3 disk ${log} A\n`);
        expect(sha256(log)).toBe(logBytes);

        // Offline resync copies exactly the three regions.
        const r = dmtool(['mirror-resync', '--log', log, local, remote], { env: RETRY_ENV });
        expect([r.status, r.stderr]).toEqual([0, '']);
        expect(r.stdout.split('\n')[0]).toMatch(/^resynced 3 of 3 out-of-sync regions \(768\.0 KiB in /);
        const written = readNbdkitLog(secondLog).started.filter((q) => q.kind === 'Write');
        expect(requestBytes(readNbdkitLog(secondLog))).toBe(3 * REGION_BYTES);
        expect(regionsTouched(written)).toEqual(missed);
      } finally {
        await server.stop();
      }
      expect(sha256(remoteFile)).toBe(sha256(local));
      expect(dirtyRegions(log)).toEqual([]);
    },
  );

  when(nbdkit && nbdsh)(
    'dmtool serve with the server killed and back within the retry window: the leg stays A, every region is recorded clean, the legs are identical',
    async () => {
      const { local, remoteFile, log, sock, remote, table } = mirrorImages('both', 13);
      let server: ServerProcess = await startNbdkit(['file', remoteFile], sock);
      const serveSock = path.join(dir, 'serve.sock');
      const served = nbdUri(serveSock, 'm');
      try {
        expect(dmtool(['mirror-create', '--nosync', '--log', log, '--region-size', String(REGION_SECTORS), local, remote]).status).toBe(0);
        // Five attempts from 200 ms: the server is back long before they are used up.
        const env = { ...process.env, DMTOOL_NBD_RECONNECT_ATTEMPTS: '5', DMTOOL_NBD_RECONNECT_DELAY_MS: '200' };
        const s = await startServe(['--dev', 'm', table], serveSock, 15000, env);
        try {
          const w1 = peer('nbdsh', ['-u', served, '-c', `h.pwrite(b"\\x11" * ${REGION_BYTES}, 0)\nh.flush()`]);
          expect([w1.status, w1.stderr]).toEqual([0, '']);
          await server.stop('SIGKILL');
          server = await startNbdkit(['file', remoteFile], sock);
          const w2 = peer('nbdsh', ['-u', served, '-c', `h.pwrite(b"\\x22" * ${2 * REGION_BYTES}, ${20 * REGION_BYTES})\nh.flush()`]);
          expect([w2.status, w2.stderr]).toEqual([0, '']);
        } finally {
          expect(await s.stop()).toEqual({ status: 0, signal: null });
        }
        expect(s.stdout()).toContain(`status m: 0 32768 mirror 2 ${local} ${remote} ${REGIONS}/${REGIONS} 1 AA 3 disk ${log} A\n`);
        expect(s.stdout()).toContain('stopped; every device flushed\n');
      } finally {
        await server.stop();
      }
      expect(dirtyRegions(log)).toEqual([]);
      expect(
        fs
          .readFileSync(local)
          .subarray(20 * REGION_BYTES, 22 * REGION_BYTES)
          .equals(Buffer.alloc(2 * REGION_BYTES, 0x22)),
      ).toBe(true);
      expect(sha256(remoteFile)).toBe(sha256(local));
    },
  );

  when(nbdkit && nbdsh)(
    'dmtool serve with a remote leg that hangs (nbdkit delay filter past the request timeout): the leg fails D, the write is answered from the local leg and its region stays dirty',
    async () => {
      const { local, remoteFile, log, sock, remote, table } = mirrorImages('both', 17);
      // Writes take 3 s on the server; the client gives each request 300 ms, sent three times at most.
      const server = await startNbdkit(['--filter=delay', 'file', remoteFile, 'delay-write=3'], sock);
      const serveSock = path.join(dir, 'serve.sock');
      try {
        expect(dmtool(['mirror-create', '--nosync', '--log', log, '--region-size', String(REGION_SECTORS), local, remote]).status).toBe(0);
        const s = await startServe(['--dev', 'm', table], serveSock, 15000, { ...process.env, ...RETRY_ENV, DMTOOL_NBD_TIMEOUT_MS: '300' });
        let stopped = false;
        try {
          const w = peer('nbdsh', ['-u', nbdUri(serveSock, 'm'), '-c', `h.pwrite(b"\\x44" * 4096, ${5 * REGION_BYTES})\nh.flush()`], {
            timeoutMs: 30000,
          });
          expect([w.status, w.stderr]).toEqual([0, '']);
          expect(dirtyRegions(log)).toEqual([5]);
          expect(await s.stop()).toEqual({ status: 0, signal: null });
          stopped = true;
          expect(s.stdout()).toContain(`status m: 0 32768 mirror 2 ${local} ${remote} ${REGIONS - 1}/${REGIONS} 1 AD 3 disk ${log} A\n`);
        } finally {
          if (!stopped) await s.stop();
        }
      } finally {
        await server.stop('SIGKILL');
      }
      expect(dirtyRegions(log)).toEqual([5]);
      expect(
        fs
          .readFileSync(local)
          .subarray(5 * REGION_BYTES, 5 * REGION_BYTES + 4096)
          .equals(Buffer.alloc(4096, 0x44)),
      ).toBe(true);
    },
  );
});

describe('a remote leg whose server loses its unflushed writes when killed, and is back within the retry window', () => {
  /** Writes wait in a volatile cache until a flush; a SIGKILL loses them. */
  const cached = { ...process.env, DMTOOL_FAULTS: JSON.stringify({ volatileCache: {} }) };
  /** Five attempts from 200 ms: a server restarted at once is reached again. */
  const BACK_ENV = { DMTOOL_NBD_RECONNECT_ATTEMPTS: '5', DMTOOL_NBD_RECONNECT_DELAY_MS: '200' };

  test('mirror-resync: the leg fails on the flush that would record the lost regions clean; they stay dirty and a rerun makes the legs equal', async () => {
    const { local, remoteFile, log, sock } = mirrorImages('local', 11);
    const remote = nbdUri(sock, 'leg');
    const serveLeg = () => startServe(['--dev', 'leg', `0 32768 linear ${remoteFile} 0`], sock, 15000, cached);
    let server = await serveLeg();
    try {
      const c = dmtool(['mirror-create', '--log', log, '--region-size', String(REGION_SECTORS), local, remote]);
      expect([c.status, c.stderr]).toEqual([0, '']);
      const run = startDmtool(['mirror-resync', '--log', log, local, remote, '--rate', '4M', '--parallel', '1'], {
        env: BACK_ENV,
        timeoutMs: 60000,
      });
      try {
        expect(await waitFor(() => dirtyRegions(log).length < REGIONS, 30000)).toBe(true);
        // The regions copied since that flush are in the server's cache only.
        await new Promise((r) => setTimeout(r, 500));
        process.kill(server.pid, 'SIGKILL');
        expect(await server.stop()).toEqual({ status: null, signal: 'SIGKILL' });
        server = await serveLeg();
        const r = await run.done;
        const dirty = dirtyRegions(log);
        expect([r.status, r.signal, dirty.length > 0]).toEqual([1, null, true]);
        expect(r.stderr).toMatch(
          new RegExp(
            `^dmtool: leg 1 ${esc(remote)} failed \\(F\\): EIO: flush failed on ${esc(remote)}: connection lost after \\d+ writes were acknowledged but before they were flushed; they may not be durable\\n` +
              `dmtool: ${dirty.length} regions left out of sync: ${esc(regionList(dirty))}\\n$`,
          ),
        );
        // Every region recorded clean holds the local bytes on the server's file.
        for (const region of all(0, REGIONS).filter((x) => !dirty.includes(x))) {
          expect([region, sha256(remoteFile, region * REGION_BYTES, REGION_BYTES)]).toEqual([
            region,
            sha256(local, region * REGION_BYTES, REGION_BYTES),
          ]);
        }
      } finally {
        run.signal('SIGKILL');
        await run.done;
      }
      const again = dmtool(['mirror-resync', '--log', log, local, remote], { env: BACK_ENV });
      expect([again.status, again.stderr]).toEqual([0, '']);
    } finally {
      await server.stop();
    }
    expect(sha256(remoteFile)).toBe(sha256(local));
    expect(dirtyRegions(log)).toEqual([]);
  });

  when(nbdsh)(
    'dmtool serve: a write its leg server held unflushed when killed and restarted; the FLUSH after it fails the leg F and the regions stay dirty',
    async () => {
      const { local, remoteFile, log, sock } = mirrorImages('both', 19);
      const remote = nbdUri(sock, 'leg');
      const serveLeg = () => startServe(['--dev', 'leg', `0 32768 linear ${remoteFile} 0`], sock, 15000, cached);
      let server = await serveLeg();
      const serveSock = path.join(dir, 'serve.sock');
      const served = nbdUri(serveSock, 'm');
      try {
        expect(dmtool(['mirror-create', '--nosync', '--log', log, '--region-size', String(REGION_SECTORS), local, remote]).status).toBe(0);
        const table = `0 32768 mirror disk 2 ${log} ${REGION_SECTORS} 2 ${local} 0 ${remote} 0`;
        const s = await startServe(['--dev', 'm', table], serveSock, 15000, { ...process.env, ...BACK_ENV });
        try {
          const w1 = peer('nbdsh', ['-u', served, '-c', `h.pwrite(b"\\x11" * ${REGION_BYTES}, 0)\nh.flush()`]);
          expect([w1.status, w1.stderr]).toEqual([0, '']);
          const w2 = peer('nbdsh', ['-u', served, '-c', `h.pwrite(b"\\x22" * ${2 * REGION_BYTES}, ${20 * REGION_BYTES})`]);
          expect([w2.status, w2.stderr]).toEqual([0, '']);
          process.kill(server.pid, 'SIGKILL');
          expect(await server.stop()).toEqual({ status: null, signal: 'SIGKILL' });
          server = await serveLeg();
          const f = peer('nbdsh', ['-u', served, '-c', 'h.flush()']);
          expect([f.status, f.stderr]).toEqual([0, '']);
        } finally {
          expect(await s.stop()).toEqual({ status: 0, signal: null });
        }
        expect(s.stdout()).toContain(`status m: 0 32768 mirror 2 ${local} ${remote} ${REGIONS - 2}/${REGIONS} 1 AF 3 disk ${log} A\n`);
        expect(dirtyRegions(log)).toEqual([20, 21]);
        // The leg's file lost the write; the region written and flushed before the kill is there.
        expect(sha256(remoteFile, 20 * REGION_BYTES, 2 * REGION_BYTES)).not.toBe(sha256(local, 20 * REGION_BYTES, 2 * REGION_BYTES));
        expect(sha256(remoteFile, 0, REGION_BYTES)).toBe(sha256(local, 0, REGION_BYTES));
        const again = dmtool(['mirror-resync', '--log', log, local, remote], { env: BACK_ENV });
        expect([again.status, again.stderr]).toEqual([0, '']);
        expect(again.stdout.split('\n')[0]).toMatch(/^resynced 2 of 2 out-of-sync regions /);
      } finally {
        await server.stop();
      }
      expect(sha256(remoteFile)).toBe(sha256(local));
      expect(dirtyRegions(log)).toEqual([]);
    },
  );
});
