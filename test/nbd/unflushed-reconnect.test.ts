/**
 * Writes a server acknowledged but had not flushed when it died: `dmtool
 * serve` with a volatile write cache (DMTOOL_FAULTS) loses them on SIGKILL,
 * as a server whose machine lost power does. A copy to it that reconnects
 * after the restart must end byte-identical (the lost ranges written again)
 * and never report success with data missing.
 */
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

test('copy to an export whose server loses its unflushed writes when killed and restarted: the copy ends byte-identical, exit 0', async () => {
  const src = path.join(box.dir, 'src.img');
  const disk = path.join(box.dir, 'disk.img');
  randomFile(src, 24 * MiB, 7);
  fs.writeFileSync(disk, Buffer.alloc(24 * MiB));
  const table = ['--dev', 'disk', `0 ${(24 * MiB) / 512} linear ${disk} 0`];
  let server = await box.serve(table, cached);
  const copy = startDmtool(['copy', src, nbdUri(server.socketPath, 'disk'), '--rate', '8M'], {
    env: { DMTOOL_NBD_RECONNECT_ATTEMPTS: '5', DMTOOL_NBD_RECONNECT_DELAY_MS: '200', DMTOOL_NBD_CONNECTIONS: '1' },
    timeoutMs: 60000,
  });
  try {
    // Killed between two of the copy's flushes (about one a second): what it wrote since the last is in the cache only.
    await flushedThrough(src, disk, 512);
    await new Promise((r) => setTimeout(r, 1500));
    await powerCut(server);
    server = await box.serve(table, cached);
    const r = await copy.done;
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toMatch(/^copied 49152 sectors from /);
  } finally {
    copy.signal('SIGKILL');
    await copy.done;
    await server.stop();
  }
  expect(sha256(disk)).toBe(sha256(src));
});
