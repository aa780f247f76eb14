/**
 * `dmtool serve --max-connections 64` with 64 clients connected at once,
 * each reading and writing a little: every client gets its own bytes back,
 * and the server's peak RSS (VmHWM) stays under the 128 MiB goal
 * (docs/benchmarks.md, "NBD serving": about 65 MiB here).
 */
import * as fs from 'fs';
import * as path from 'path';
import { NbdDevice } from '@dmtool/nbd';
import { makeZeroFile } from '../support/fixtures';
import { nbdUri, serveSandbox } from './serve-process';

jest.setTimeout(60000);

const CLIENTS = 64;
const BLOCK_BYTES = 4096;
const box = serveSandbox('dmtool-serve-many-');

function peakRssMiB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmHWM for process ${pid}`);
  return Number(m[1]) / 1024;
}

test('64 clients connected at once, each writing and reading its own 4 KiB: bytes exact, server peak RSS under 128 MiB', async () => {
  const image = path.join(box.dir, 'image.img');
  makeZeroFile(image, CLIENTS * BLOCK_BYTES);
  const s = await box.serve(['--dev', 'd', `0 ${(CLIENTS * BLOCK_BYTES) / 512} linear ${image} 0`, '--max-connections', String(CLIENTS)]);
  const uri = nbdUri(s.socketPath, 'd');
  const clients: NbdDevice[] = [];
  try {
    for (let i = 0; i < CLIENTS; i++) clients.push(await NbdDevice.open(uri, { write: true }));
    await Promise.all(
      clients.map(async (d, i) => {
        const data = Buffer.alloc(BLOCK_BYTES, i + 1);
        await d.write(data, 0, BLOCK_BYTES, i * BLOCK_BYTES);
        const back = Buffer.alloc(BLOCK_BYTES);
        await d.read(back, 0, BLOCK_BYTES, i * BLOCK_BYTES);
        expect(back.equals(data)).toBe(true);
      }),
    );
    expect(peakRssMiB(s.pid)).toBeLessThan(128);
  } finally {
    for (const d of clients) d.close();
  }
  const image2 = fs.readFileSync(image);
  for (let i = 0; i < CLIENTS; i++) expect(image2.subarray(i * BLOCK_BYTES, (i + 1) * BLOCK_BYTES).every((b) => b === i + 1)).toBe(true);
});
