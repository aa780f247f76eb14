/**
 * Writes a server acknowledged but had not flushed when it died: `dmtool
 * serve` with a volatile write cache (DMTOOL_FAULTS) loses them on SIGKILL,
 * as a server whose machine lost power does. A copy to it that reconnects
 * after the restart must end byte-identical (the lost ranges written again)
 * and never report success with data missing.
 */
import { UnflushedWritesLost } from '@dmtool/devices';
import { NbdDevice } from '@dmtool/nbd';
import * as fs from 'fs';
import * as path from 'path';
import { startDmtool } from '../support/cli';
import { readRange } from '../support/images';
import { nbdUri, randomFile, ServeProcess, serveSandbox, sha256 } from './serve-process';

jest.setTimeout(120000);

const MiB = 1 << 20;
const box = serveSandbox('dmtool-nbd-unflushed-');
/** Writes wait in a volatile cache until a flush; a SIGKILL loses them. */
const cached = { ...process.env, DMTOOL_FAULTS: JSON.stringify({ volatileCache: {} }) };

/** SIGKILL: nothing the server cached survives. */
async function powerCut(s: ServeProcess): Promise<void> {
  box.forget(s);
  process.kill(s.pid, 'SIGKILL');
  expect(await s.stop()).toEqual({ status: null, signal: 'SIGKILL' });
}

/** Wait (bounded) until `file` holds `src`'s first `bytes` bytes: the copy has flushed that much through the server. */
async function flushedThrough(src: string, file: string, bytes: number): Promise<void> {
  const want = readRange(src, 0, bytes);
  for (let i = 0; i < 400 && !readRange(file, 0, bytes).equals(want); i++) await new Promise((r) => setTimeout(r, 25));
  expect(readRange(file, 0, bytes).equals(want)).toBe(true);
}

/**
 * `dmtool copy SRC [LOCAL] URI ...` to a 24 MiB export of `disk`, its server killed between two of the copy's
 * flushes (about one a second: what it wrote since the last is in the cache only) and restarted.
 */
async function copyThroughRestart(src: string, disk: string, args: (uri: string) => string[], env: NodeJS.ProcessEnv) {
  randomFile(src, 24 * MiB, 7);
  fs.writeFileSync(disk, Buffer.alloc(24 * MiB));
  const table = ['--dev', 'disk', `0 ${(24 * MiB) / 512} linear ${disk} 0`];
  let server = await box.serve(table, cached);
  const copy = startDmtool(['copy', src, ...args(nbdUri(server.socketPath, 'disk')), '--rate', '8M'], {
    env: { DMTOOL_NBD_RECONNECT_ATTEMPTS: '5', DMTOOL_NBD_RECONNECT_DELAY_MS: '200', ...env },
    timeoutMs: 60000,
  });
  try {
    await flushedThrough(src, disk, 512);
    await new Promise((r) => setTimeout(r, 1500));
    await powerCut(server);
    server = await box.serve(table, cached);
    return await copy.done;
  } finally {
    copy.signal('SIGKILL');
    await copy.done;
    await server.stop();
  }
}

test('copy to an export whose server loses its unflushed writes when killed and restarted: the copy ends byte-identical, exit 0', async () => {
  const src = path.join(box.dir, 'src.img');
  const disk = path.join(box.dir, 'disk.img');
  const r = await copyThroughRestart(src, disk, (uri) => [uri], { DMTOOL_NBD_CONNECTIONS: '1' });
  expect([r.status, r.stderr]).toEqual([0, '']);
  expect(r.stdout).toMatch(/^copied 49152 sectors from /);
  expect(sha256(disk)).toBe(sha256(src));
});

test('with --map and a second, local destination: both end byte-identical, exit 0, and the map is removed', async () => {
  const src = path.join(box.dir, 'src.img');
  const disk = path.join(box.dir, 'disk.img');
  const local = path.join(box.dir, 'local.img');
  const map = path.join(box.dir, 'copy.map');
  const r = await copyThroughRestart(src, disk, (uri) => [local, uri, '--map', map], {});
  expect([r.status, r.stderr]).toEqual([0, '']);
  expect(r.stdout).toMatch(/^copied 49152 sectors from .* to 2 destinations/);
  expect([sha256(disk), sha256(local)]).toEqual([sha256(src), sha256(src)]);
  expect(fs.existsSync(map)).toBe(false);
});

describe('NbdDevice: a flush after the server lost acknowledged writes', () => {
  const KiB = 1024;
  const table = (disk: string) => ['--dev', 'disk', `0 ${(8 * MiB) / 512} linear ${disk} 0`];
  const opts = { write: true, reconnectAttempts: 5, reconnectDelayMs: 100 };

  async function withDevice(connections: number, fn: (d: NbdDevice, disk: string, restart: () => Promise<void>) => Promise<void>) {
    const disk = path.join(box.dir, 'disk.img');
    fs.writeFileSync(disk, Buffer.alloc(8 * MiB));
    let server = await box.serve(table(disk), cached);
    const d = await NbdDevice.open(nbdUri(server.socketPath, 'disk'), { ...opts, connections });
    try {
      await fn(d, disk, async () => {
        await powerCut(server);
        server = await box.serve(table(disk), cached);
      });
    } finally {
      d.close();
    }
  }

  async function flushError(d: NbdDevice): Promise<unknown> {
    return d.flush().then(
      () => undefined,
      (e: unknown) => e,
    );
  }

  test('fails once with EIO naming how many writes; the next flush succeeds and covers the later writes', async () => {
    await withDevice(1, async (d, disk, restart) => {
      await d.write(Buffer.alloc(64 * KiB, 0x11), 0, 64 * KiB, 0);
      await d.flush();
      await d.write(Buffer.alloc(64 * KiB, 0x22), 0, 64 * KiB, MiB);
      await d.zeroRange(2 * MiB, 64 * KiB);
      await restart();
      await d.write(Buffer.alloc(4 * KiB, 0x33), 0, 4 * KiB, 3 * MiB);
      const e = await flushError(d);
      expect(e).toBeInstanceOf(UnflushedWritesLost);
      expect((e as UnflushedWritesLost).message).toBe(
        `EIO: flush failed on ${d.path}: connection lost after 2 writes were acknowledged but before they were flushed; they may not be durable`,
      );
      expect(d.reconnections).toBe(1);
      await d.flush();
      const b = fs.readFileSync(disk);
      // The write flushed before the kill and the one after the restart are there; the two between are not.
      expect(b.subarray(0, 64 * KiB).equals(Buffer.alloc(64 * KiB, 0x11))).toBe(true);
      expect(b.subarray(MiB, MiB + 64 * KiB).equals(Buffer.alloc(64 * KiB))).toBe(true);
      expect(b.subarray(3 * MiB, 3 * MiB + 4 * KiB).equals(Buffer.alloc(4 * KiB, 0x33))).toBe(true);
    });
  });

  test('writes covered by a flush, and FUA writes, are not reported after a restart', async () => {
    await withDevice(1, async (d, disk, restart) => {
      await d.write(Buffer.alloc(64 * KiB, 0x11), 0, 64 * KiB, 0);
      await d.flush();
      await d.write(Buffer.alloc(64 * KiB, 0x22), 0, 64 * KiB, MiB, { fua: true });
      await restart();
      await d.write(Buffer.alloc(4 * KiB, 0x33), 0, 4 * KiB, 3 * MiB);
      expect(await flushError(d)).toBeUndefined();
      const b = fs.readFileSync(disk);
      expect(b.subarray(MiB, MiB + 64 * KiB).equals(Buffer.alloc(64 * KiB, 0x22))).toBe(true);
    });
  });

  test('multi-conn: writes answered on any of the dead connections are reported by the first flush on the new ones', async () => {
    await withDevice(4, async (d, _disk, restart) => {
      expect(d.connectionCount).toBe(4);
      await d.write(Buffer.alloc(64 * KiB, 0x11), 0, 64 * KiB, 0);
      await d.flush();
      // 16 writes at once: spread over the four connections.
      await Promise.all(Array.from({ length: 16 }, (_, i) => d.write(Buffer.alloc(64 * KiB, i), 0, 64 * KiB, MiB + i * 64 * KiB)));
      await restart();
      const e = await flushError(d);
      expect((e as UnflushedWritesLost).message).toBe(
        `EIO: flush failed on ${d.path}: connection lost after 16 writes were acknowledged but before they were flushed; they may not be durable`,
      );
      expect(await flushError(d)).toBeUndefined();
    });
  });
});
