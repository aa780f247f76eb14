/**
 * Holes across NBD: an export offering `base:allocation` lists its data
 * with BLOCK_STATUS, so `dmtool copy` reads only the data and leaves holes
 * in a created file; an export as destination gets the source's holes as
 * WRITE_ZEROES. Real nbdkit servers with the log filter counting what was
 * asked of them; content checked by sha256, holes by st_blocks.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { NbdDevice } from '@dmtool/nbd';
import { dmtool } from '../support/cli';
import { startNbdkit } from '../support/nbd-servers';
import { readNbdkitLog, requestBytes } from '../support/nbdkit-log';
import { havePeer, nbdUri, sha256 } from './serve-process';

jest.setTimeout(60000);

const KiB = 1024;
const MiB = 1 << 20;
const nbdkit = havePeer('nbdkit');
const when = (ok: boolean) => (ok ? test : test.skip);

/** The data of the sparse source: [byte offset, bytes], 4 KiB aligned; the rest of its 16 MiB is holes. */
const DATA: readonly [number, number][] = [
  [0, 64 * KiB],
  [3 * MiB, 256 * KiB],
  [9 * MiB + 4 * KiB, 12 * KiB],
  [16 * MiB - 4 * KiB, 4 * KiB],
];
const DATA_BYTES = DATA.reduce((n, [, b]) => n + b, 0);

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-nbd-holes-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A 16 MiB file with DATA written (bytes never zero) and holes elsewhere. */
function sparseSource(file: string): void {
  const fd = fs.openSync(file, 'w');
  try {
    fs.ftruncateSync(fd, 16 * MiB);
    for (const [at, bytes] of DATA) {
      const buf = Buffer.alloc(bytes);
      for (let i = 0; i < bytes; i++) buf[i] = 1 + ((at + i * 7) % 251);
      fs.writeSync(fd, buf, 0, bytes, at);
    }
  } finally {
    fs.closeSync(fd);
  }
}

/** `dmtool copy` with an nbdkit file export of `served` (log filter on) at `uri`; what nbdkit was asked. */
async function copyWithLoggedExport(served: string, copyArgs: (uri: string) => string[], nbdkitFlags: string[] = []) {
  const sock = path.join(dir, 'nbd.sock');
  const log = path.join(dir, 'nbdkit.log');
  const server = await startNbdkit([...nbdkitFlags, '--filter=log', 'file', served, `logfile=${log}`], sock);
  try {
    const r = dmtool(['copy', ...copyArgs(nbdUri(sock, ''))]);
    expect([r.status, r.stderr]).toEqual([0, '']);
  } finally {
    await server.stop();
  }
  return readNbdkitLog(log);
}

/** Bytes the file's blocks take on disk. */
const allocated = (file: string) => fs.statSync(file).blocks * 512;

when(nbdkit)('the data extents of an nbdkit file export are the source file data', async () => {
  const src = path.join(dir, 'src.img');
  sparseSource(src);
  const sock = path.join(dir, 'nbd.sock');
  const server = await startNbdkit(['file', src], sock);
  try {
    const dev = await NbdDevice.open(nbdUri(sock, ''), { write: false });
    try {
      expect(dev.listsHoles).toBe(true);
      const extents = await dev.sparseFile().dataExtents(0, 16 * MiB);
      expect(extents.map((e) => [e.byteOffset, e.bytes])).toEqual(DATA);
      // A range starting inside a hole and ending inside data is clipped to it.
      expect(await dev.sparseFile().dataExtents(2 * MiB, MiB + 4 * KiB)).toEqual([{ byteOffset: 3 * MiB, bytes: 4 * KiB }]);
    } finally {
      dev.close();
    }
  } finally {
    await server.stop();
  }
});

when(nbdkit)('copy from a sparse export into a new file reads only the data and leaves holes', async () => {
  const src = path.join(dir, 'src.img');
  sparseSource(src);
  const out = path.join(dir, 'out.img');
  const log = await copyWithLoggedExport(src, (uri) => [uri, out]);
  expect(sha256(out)).toBe(sha256(src));
  expect(requestBytes(log, 'Read')).toBe(DATA_BYTES);
  expect(allocated(out)).toBeLessThanOrEqual(DATA_BYTES + 64 * KiB);
});

when(nbdkit)('copy --sparse=never from a sparse export reads everything', async () => {
  const src = path.join(dir, 'src.img');
  sparseSource(src);
  const out = path.join(dir, 'out.img');
  const log = await copyWithLoggedExport(src, (uri) => ['--sparse=never', uri, out]);
  expect(sha256(out)).toBe(sha256(src));
  expect(requestBytes(log, 'Read')).toBe(16 * MiB);
});

when(nbdkit)('an export without structured replies lists no holes: everything is read, content exact', async () => {
  const src = path.join(dir, 'src.img');
  sparseSource(src);
  const out = path.join(dir, 'out.img');
  const log = await copyWithLoggedExport(src, (uri) => [uri, out], ['--no-sr']);
  expect(sha256(out)).toBe(sha256(src));
  expect(requestBytes(log, 'Read')).toBe(16 * MiB);
});

when(nbdkit)('copy of a sparse file to an export writes the data and zeroes the holes with WRITE_ZEROES', async () => {
  const src = path.join(dir, 'src.img');
  sparseSource(src);
  const dst = path.join(dir, 'dst.img');
  fs.writeFileSync(dst, Buffer.alloc(16 * MiB, 0xa5));
  const l = await copyWithLoggedExport(dst, (uri) => [src, uri]);
  expect(sha256(dst)).toBe(sha256(src));
  expect(requestBytes(l, 'Write')).toBe(DATA_BYTES);
  expect(requestBytes(l, 'Zero')).toBe(16 * MiB - DATA_BYTES);
  // The file plugin punches where it is asked to zero: the holes come back.
  expect(allocated(dst)).toBeLessThanOrEqual(DATA_BYTES + 64 * KiB);
});
