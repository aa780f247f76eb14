/**
 * Several connections per device when the server advertises
 * NBD_FLAG_CAN_MULTI_CONN: nbdkit's file plugin (which does) with the log
 * filter showing which connection took each request, and the multi-conn
 * filter turning the flag off. Content checked by sha256 of the backing file.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { createHash } from 'crypto';
import { NbdDevice } from '@dmtool/nbd';
import { startNbdkit } from '../support/nbd-servers';
import { readNbdkitLog } from '../support/nbdkit-log';
import { havePeer, nbdUri, randomFile, sha256 } from './serve-process';

jest.setTimeout(60000);

const MiB = 1 << 20;
const nbdkit = havePeer('nbdkit');
const when = (ok: boolean) => (ok ? test : test.skip);

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-nbd-multi-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** 64 writes of 64 KiB of `data` all asked for at once, then a flush asked for before any was answered. */
async function writeAllThenFlush(d: NbdDevice, data: Buffer): Promise<void> {
  const writes = Array.from({ length: 64 }, (_, i) => d.write(data, i * 65536, 65536, i * 65536));
  await Promise.all([...writes, d.flush()]);
}

when(nbdkit)('4 connections to a multi-conn export: requests spread over all, one flush after every write, bytes exact', async () => {
  const image = path.join(dir, 'image.img');
  fs.writeFileSync(image, Buffer.alloc(8 * MiB));
  const source = path.join(dir, 'source.img');
  randomFile(source, 4 * MiB, 11);
  const data = fs.readFileSync(source);
  const sock = path.join(dir, 'nbd.sock');
  const log = path.join(dir, 'nbdkit.log');
  const server = await startNbdkit(['--filter=log', '--filter=delay', 'file', image, `logfile=${log}`, 'delay-write=5ms'], sock);
  try {
    const d = await NbdDevice.open(nbdUri(sock, ''), { write: true, connections: 4 });
    try {
      expect(d.connectionCount).toBe(4);
      await writeAllThenFlush(d, data);
      const back = Buffer.alloc(4 * MiB);
      await d.read(back, 0, back.length, 0);
      expect(back.equals(data)).toBe(true);
    } finally {
      d.close();
    }
  } finally {
    await server.stop();
  }
  expect(sha256(image, 0, 4 * MiB)).toBe(createHash('sha256').update(data).digest('hex'));
  const l = readNbdkitLog(log);
  const writes = l.started.filter((r) => r.kind === 'Write');
  expect(new Set(writes.map((r) => r.connection)).size).toBe(4);
  const flushes = l.started.filter((r) => r.kind === 'Flush');
  expect(flushes).toHaveLength(1);
  expect(l.succeeded.filter((r) => r.kind === 'Write')).toHaveLength(64);
  // The flush started only after every write was answered, whichever connection took it: it covers them all.
  expect(
    l
      .flushedSectors(8 * MiB)
      .subarray(0, 8192)
      .every((b) => b === 1),
  ).toBe(true);
});

when(nbdkit)('a server without multi-conn gets one connection', async () => {
  const image = path.join(dir, 'image.img');
  fs.writeFileSync(image, Buffer.alloc(8 * MiB));
  const data = Buffer.alloc(4 * MiB, 0x5a);
  const sock = path.join(dir, 'nbd.sock');
  const log = path.join(dir, 'nbdkit.log');
  const server = await startNbdkit(
    ['--filter=log', '--filter=multi-conn', 'file', image, `logfile=${log}`, 'multi-conn-mode=disable'],
    sock,
  );
  try {
    const d = await NbdDevice.open(nbdUri(sock, ''), { write: true, connections: 4 });
    try {
      expect(d.connectionCount).toBe(1);
      await writeAllThenFlush(d, data);
    } finally {
      d.close();
    }
  } finally {
    await server.stop();
  }
  expect(sha256(image, 0, 4 * MiB)).toBe(createHash('sha256').update(data).digest('hex'));
  expect(new Set(readNbdkitLog(log).started.map((r) => r.connection))).toEqual(new Set([1]));
});

when(nbdkit)('a dropped server with 4 connections: every connection is re-made and the writes in flight are sent again', async () => {
  const image = path.join(dir, 'image.img');
  fs.writeFileSync(image, Buffer.alloc(8 * MiB));
  const source = path.join(dir, 'source.img');
  randomFile(source, 4 * MiB, 12);
  const data = fs.readFileSync(source);
  const sock = path.join(dir, 'nbd.sock');
  const args = ['--filter=delay', 'file', image, 'delay-write=50ms'];
  let server = await startNbdkit(args, sock);
  try {
    const d = await NbdDevice.open(nbdUri(sock, ''), { write: true, connections: 4, reconnectDelayMs: 100 });
    try {
      const writes = Array.from({ length: 64 }, (_, i) => d.write(data, i * 65536, 65536, i * 65536));
      await new Promise((r) => setTimeout(r, 120));
      await server.stop('SIGKILL');
      server = await startNbdkit(args, sock);
      await Promise.all(writes);
      // The writes the killed server acknowledged are counted over the four connections: the first flush cannot vouch for them.
      await expect(d.flush()).rejects.toThrow(
        /: connection lost after \d+ writes were acknowledged but before they were flushed; they may not be durable$/,
      );
      await d.flush();
      // Each dropped connection is re-made on its own: the last ones may still be on their way.
      for (let i = 0; i < 100 && d.connectionCount < 4; i++) await new Promise((r) => setTimeout(r, 50));
      expect([d.reconnections, d.connectionCount]).toEqual([4, 4]);
    } finally {
      d.close();
    }
  } finally {
    await server.stop();
  }
  expect(sha256(image, 0, 4 * MiB)).toBe(createHash('sha256').update(data).digest('hex'));
});
