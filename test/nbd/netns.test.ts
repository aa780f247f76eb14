/**
 * NBD over TCP between two network namespaces joined by a veth pair: nbdkit
 * runs on the "remote host" (its own namespace, its own address), dmtool in
 * the other. A copy and a mirror resync to the remote export, and the
 * remote server killed mid-copy (restarted within the retry window, or gone
 * for good) and mid-resync.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { decodeDiskLog } from '@dmtool/dm-mirror';
import { waitFor } from '../support/cli';
import { readRange } from '../support/images';
import { haveNetns, withNetnsPair } from '../support/netns';
import { havePeer, nbdUri, peer, randomFile, sha256, startServe } from './serve-process';

jest.setTimeout(120000);

const MiB = 1 << 20;
const nbdkit = havePeer('nbdkit');
const nbdsh = havePeer('nbdsh');
const netns = haveNetns();
const when = (ok: boolean) => (ok ? test : test.skip);
const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-netns-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function files(bytes: number): { src: string; dst: string } {
  const src = path.join(dir, 'src.img');
  const dst = path.join(dir, 'dst.img');
  randomFile(src, bytes, 42);
  fs.writeFileSync(dst, Buffer.alloc(0));
  fs.truncateSync(dst, bytes);
  return { src, dst };
}

/** Wait (bounded) until the first sector of `src` has reached `dst` through the server. */
async function copyStarted(src: string, dst: string): Promise<void> {
  const want = readRange(src, 0, 512);
  expect(await waitFor(() => readRange(dst, 0, 512).equals(want), 15000)).toBe(true);
}

when(nbdkit && netns)('copy to nbdkit on the remote host over TCP: the remote file equals the source', async () => {
  const { src, dst } = files(8 * MiB);
  await withNetnsPair(async (pair) => {
    await pair.startNbdkit(['file', dst]);
    const uri = `nbd://${pair.remoteAddress}/`;
    const r = pair.dmtool(['copy', src, uri]);
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toMatch(new RegExp(`^copied 16384 sectors from ${esc(src)} to 1 destination: 8\\.0 MiB in `));
  });
  expect(sha256(dst)).toBe(sha256(src));
});

when(nbdkit && netns)('a mirror with a local leg and a leg on the remote host: created and resynced over TCP', async () => {
  const { src: local, dst: remoteFile } = files(16 * MiB);
  const log = path.join(dir, 'log.img');
  fs.writeFileSync(log, Buffer.alloc(MiB));
  await withNetnsPair(async (pair) => {
    await pair.startNbdkit(['file', remoteFile]);
    const remote = `nbd://${pair.remoteAddress}:10809/`;
    expect(pair.dmtool(['mirror-create', '--log', log, local, remote]).status).toBe(0);
    const r = pair.dmtool(['mirror-resync', '--log', log, local, remote]);
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(r.stdout.split('\n')).toEqual([
      expect.stringMatching(/^resynced 32 of 32 out-of-sync regions \(16\.0 MiB in /),
      `0 32768 mirror 2 ${local} ${remote} 32/32 1 AA 3 disk ${log} A`,
      '',
    ]);
  });
  expect(sha256(remoteFile)).toBe(sha256(local));
  expect(decodeDiskLog(fs.readFileSync(log), { path: log }).clean.zeros()).toEqual([]);
});

when(nbdkit && netns)(
  'the remote server killed mid-copy and restarted within the retry window: the copy completes byte-exact',
  async () => {
    const { src, dst } = files(32 * MiB);
    await withNetnsPair(async (pair) => {
      let server = await pair.startNbdkit(['file', dst]);
      const copy = pair.startDmtool(['copy', src, `nbd://${pair.remoteAddress}:10809/`, '--rate', '16M'], {
        env: { DMTOOL_NBD_RECONNECT_ATTEMPTS: '5', DMTOOL_NBD_RECONNECT_DELAY_MS: '200' },
        timeoutMs: 60000,
      });
      try {
        await copyStarted(src, dst);
        await server.stop('SIGKILL');
        server = await pair.startNbdkit(['file', dst]);
        const r = await copy.done;
        expect([r.status, r.stderr]).toEqual([0, '']);
        expect(r.stdout).toMatch(/^copied 65536 sectors from /);
      } finally {
        copy.signal('SIGKILL');
        await copy.done;
      }
    });
    expect(sha256(dst)).toBe(sha256(src));
  },
);

when(nbdkit && netns)('the remote server killed mid-copy for good: exit 1 after the bounded retries, one line naming the URI', async () => {
  const { src, dst } = files(32 * MiB);
  await withNetnsPair(async (pair) => {
    const uri = `nbd://${pair.remoteAddress}:10809/`;
    const server = await pair.startNbdkit(['file', dst]);
    const copy = pair.startDmtool(['copy', src, uri, '--rate', '16M'], {
      env: { DMTOOL_NBD_RECONNECT_ATTEMPTS: '2', DMTOOL_NBD_RECONNECT_DELAY_MS: '100' },
      timeoutMs: 60000,
    });
    try {
      await copyStarted(src, dst);
      await server.stop('SIGKILL');
      const r = await copy.done;
      expect([r.status, r.stdout]).toEqual([1, '']);
      expect(r.stderr).toMatch(
        new RegExp(
          `^dmtool: EIO: write failed on ${esc(uri)} at sector \\d+ \\(\\+\\d+ sectors\\): device failed: connection lost; 2 reconnection attempts failed \\(last: connect ECONNREFUSED ${esc(pair.remoteAddress)}:10809\\)( \\(and \\d+ more requests alike\\))?\\n` +
            `dmtool: finished with errors: readErr=0 writeErr=0x1\\n$`,
        ),
      );
    } finally {
      copy.signal('SIGKILL');
      await copy.done;
    }
  });
});

when(nbdkit && netns)(
  'the remote leg killed mid-resync over TCP: exit 1 with the leg failed; restarted, a rerun copies the regions still out of sync',
  async () => {
    const { src: local, dst: remoteFile } = files(16 * MiB);
    const log = path.join(dir, 'log.img');
    fs.writeFileSync(log, Buffer.alloc(MiB));
    const dirty = () => decodeDiskLog(fs.readFileSync(log), { path: log }).clean.zeros();
    await withNetnsPair(async (pair) => {
      const remote = `nbd://${pair.remoteAddress}:10809/`;
      const env = { DMTOOL_NBD_RECONNECT_ATTEMPTS: '2', DMTOOL_NBD_RECONNECT_DELAY_MS: '100' };
      const server = await pair.startNbdkit(['file', remoteFile]);
      expect(pair.dmtool(['mirror-create', '--log', log, '--region-size', '512', local, remote]).status).toBe(0);
      const run = pair.startDmtool(['mirror-resync', '--log', log, local, remote, '--rate', '4M', '--parallel', '1'], {
        env,
        timeoutMs: 60000,
      });
      try {
        expect(await waitFor(() => dirty().length < 64, 30000)).toBe(true);
        await server.stop('SIGKILL');
        const r = await run.done;
        expect(r.status).toBe(1);
        const left = dirty();
        expect([left.length > 0, left.length < 64]).toEqual([true, true]);
        expect(r.stderr).toMatch(
          new RegExp(
            `^dmtool: leg 1 ${esc(remote)} failed \\([SF]\\): EIO: (write|flush) failed on ${esc(remote)}.*: device failed: connection lost; ` +
              `2 reconnection attempts failed \\(last: connect ECONNREFUSED ${esc(pair.remoteAddress)}:10809\\)\\n` +
              `dmtool: ${left.length} regions left out of sync: `,
          ),
        );
      } finally {
        run.signal('SIGKILL');
        await run.done;
      }
      const left = dirty();
      await pair.startNbdkit(['file', remoteFile]);
      const again = pair.dmtool(['mirror-resync', '--log', log, local, remote], { env });
      expect([again.status, again.stderr]).toEqual([0, '']);
      expect(again.stdout).toMatch(new RegExp(`^resynced ${left.length} of ${left.length} out-of-sync regions `));
    });
    expect(sha256(remoteFile)).toBe(sha256(local));
    expect(dirty()).toEqual([]);
  },
);

when(nbdkit && nbdsh && netns)(
  'dmtool serve in the local namespace, its mirror leg on the remote host over TCP, the server killed while a client writes: the local leg takes the writes, the log keeps what the leg missed, a resync after the restart copies exactly that',
  async () => {
    const { src: local, dst: remoteFile } = files(16 * MiB);
    fs.copyFileSync(local, remoteFile);
    const log = path.join(dir, 'log.img');
    fs.writeFileSync(log, Buffer.alloc(MiB));
    const dirty = () => decodeDiskLog(fs.readFileSync(log), { path: log }).clean.zeros();
    const env = { DMTOOL_NBD_RECONNECT_ATTEMPTS: '2', DMTOOL_NBD_RECONNECT_DELAY_MS: '100' };
    await withNetnsPair(async (pair) => {
      const remote = `nbd://${pair.remoteAddress}:10809/`;
      const server = await pair.startNbdkit(['file', remoteFile]);
      expect(pair.dmtool(['mirror-create', '--nosync', '--log', log, '--region-size', '512', local, remote]).status).toBe(0);
      // A unix socket is a path: the client reaches it from any namespace.
      const sock = path.join(dir, 'serve.sock');
      const table = `0 32768 mirror disk 2 ${log} 512 2 ${local} 0 ${remote} 0`;
      const s = await startServe(['--dev', 'm', table], sock, 15000, { ...process.env, ...env }, ['ip', 'netns', 'exec', pair.local]);
      let stopped = false;
      try {
        await server.stop('SIGKILL');
        const w = peer('nbdsh', ['-u', nbdUri(sock, 'm'), '-c', `h.pwrite(b"\\x66" * 8192, ${7 * 256 * 1024 - 4096})\nh.flush()`]);
        expect([w.status, w.stderr]).toEqual([0, '']);
        expect(dirty()).toEqual([6, 7]);
        expect(await s.stop()).toEqual({ status: 0, signal: null });
        stopped = true;
        expect(s.stdout()).toContain(`status m: 0 32768 mirror 2 ${local} ${remote} 62/64 1 AD 3 disk ${log} A\n`);
      } finally {
        if (!stopped) await s.stop();
      }
      await pair.startNbdkit(['file', remoteFile]);
      const r = pair.dmtool(['mirror-resync', '--log', log, local, remote], { env });
      expect([r.status, r.stderr]).toEqual([0, '']);
      expect(r.stdout).toMatch(/^resynced 2 of 2 out-of-sync regions \(512\.0 KiB in /);
    });
    expect(sha256(remoteFile)).toBe(sha256(local));
    expect(dirty()).toEqual([]);
  },
);
