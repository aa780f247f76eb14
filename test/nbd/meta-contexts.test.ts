/**
 * NBD_CMD_BLOCK_STATUS of `dmtool serve` seen by libnbd's tools:
 * `dmtool:exceptions` on snapshot exports of the kernel fixtures equals
 * what `dmtool snapshot-delta` prints; `base:allocation` reports a sparse
 * image's holes through linear, snapshot-origin and snapshot exports.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { dmtool } from '../support/cli';
import { unpackFixture } from '../support/fixtures';
import { havePeer, nbdUri, peer, ServeProcess, sha256, startServe } from './serve-process';

jest.setTimeout(120000);

const KiB = 1024;
const MiB = 1 << 20;
const nbdinfo = havePeer('nbdinfo');
const nbdsh = havePeer('nbdsh');
const nbdcopy = havePeer('nbdcopy');
const when = (ok: boolean) => (ok ? test : test.skip);

let dir: string;
const servers: ServeProcess[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-nbd-meta-'));
});

afterEach(async () => {
  try {
    for (const s of servers.splice(0)) expect(await s.stop()).toEqual({ status: 0, signal: null });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

async function serve(args: string[]): Promise<string> {
  const socketPath = path.join(dir, 'nbd.sock');
  servers.push(await startServe(args, socketPath));
  return socketPath;
}

/** nbdinfo --map lines as [offset, length, flags] triples (the description column left out). */
function map(uri: string, context?: string): number[][] {
  const r = peer('nbdinfo', [context ? `--map=${context}` : '--map', uri]);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return r.stdout
    .trim()
    .split('\n')
    .map((line) => line.trim().split(/\s+/).slice(0, 3).map(Number));
}

/** Map lines for [0, sizeBytes): `inFlags` in the ranges, `outFlags` between them. */
function expectedMap(ranges: { byteOffset: number; bytes: number }[], sizeBytes: number, inFlags: number, outFlags: number): number[][] {
  const lines: number[][] = [];
  let at = 0;
  for (const r of ranges) {
    if (r.byteOffset > at) lines.push([at, r.byteOffset - at, outFlags]);
    lines.push([r.byteOffset, r.bytes, inFlags]);
    at = r.byteOffset + r.bytes;
  }
  if (at < sizeBytes) lines.push([at, sizeBytes - at, outFlags]);
  return lines;
}

function contextsOf(uri: string, exportName: string): string[] {
  const info = JSON.parse(peer('nbdinfo', ['--json', '--list', uri]).stdout);
  return info.exports.find((e: { 'export-name': string }) => e['export-name'] === exportName).contexts;
}

describe.each([8, 16])('dmtool:exceptions on the kernel fixture of chunk %i', (cs) => {
  let origin: string;
  let cow: string;
  let sizeSectors: number;

  beforeEach(() => {
    const { dir: f } = unpackFixture(`snapshot-cow-chunk${cs}`, dir);
    origin = path.join(f, 'origin.img');
    cow = path.join(f, 'cow.img');
    sizeSectors = fs.statSync(origin).size / 512;
  });

  /** snapshot-delta's ranges in bytes. */
  function deltaBytes(): { byteOffset: number; bytes: number }[] {
    const r = dmtool(['snapshot-delta', cow, '--origin', origin, '--json']);
    expect(r.status).toBe(0);
    const delta = JSON.parse(r.stdout) as { chunkSectors: number; ranges: { start: number; count: number }[] };
    expect(delta.chunkSectors).toBe(cs);
    expect(delta.ranges.length).toBeGreaterThan(3);
    const chunkBytes = cs * 512;
    return delta.ranges.map((x) => ({ byteOffset: x.start * chunkBytes, bytes: x.count * chunkBytes }));
  }

  function serveBoth(): Promise<string> {
    return serve([
      '--dev',
      'origin',
      `0 ${sizeSectors} snapshot-origin ${origin}`,
      '--dev',
      'snap',
      `0 ${sizeSectors} snapshot ${origin} ${cow} P ${cs}`,
      '--read-only',
      'origin',
      '--read-only',
      'snap',
    ]);
  }

  when(nbdinfo)('nbdinfo --map=dmtool:exceptions lists exactly the ranges snapshot-delta prints', async () => {
    const expected = expectedMap(deltaBytes(), sizeSectors * 512, 1, 0);
    const socket = await serveBoth();
    expect(map(nbdUri(socket, 'snap'), 'dmtool:exceptions')).toEqual(expected);
    // Listed for the snapshot only; the origin has base:allocation alone.
    expect(contextsOf(nbdUri(socket, 'snap'), 'snap')).toEqual(['base:allocation', 'dmtool:exceptions']);
    expect(contextsOf(nbdUri(socket, 'snap'), 'origin')).toEqual(['base:allocation']);
  });

  when(nbdsh)('nbdsh: both contexts in one block status reply, namespace queries, REQ_ONE', async () => {
    const socket = await serveBoth();
    const ranges = deltaBytes();
    // The first changed range, and from one chunk before it to one chunk after it.
    const chunkBytes = cs * 512;
    const first = ranges[0];
    const from = first.byteOffset - chunkBytes;
    const length = first.bytes + 2 * chunkBytes;
    const script = `
import nbd
h.set_strict_mode(nbd.STRICT_COMMANDS | nbd.STRICT_FLAGS | nbd.STRICT_BOUNDS | nbd.STRICT_ZERO_SIZE)
h.set_opt_mode(True)
h.connect_uri("${nbdUri(socket, 'snap')}")
h.add_meta_context("dmtool:")
found = []
h.opt_list_meta_context(lambda name: found.append(name))
print("dmtool: lists", found)
found = []
h.set_export_name("origin")
h.opt_list_meta_context(lambda name: found.append(name))
print("dmtool: on origin lists", found)
h.set_export_name("snap")
h.clear_meta_contexts()
h.add_meta_context("base:allocation")
h.add_meta_context("dmtool:exceptions")
h.opt_go()
assert h.can_meta_context("base:allocation") and h.can_meta_context("dmtool:exceptions")
def show(ctx, offset, entries, err):
    print(ctx, offset, list(entries))
    return 0
h.block_status(${length}, ${from}, show)
h.block_status(${length}, ${from}, show, nbd.CMD_FLAG_REQ_ONE)
h.shutdown()
`;
    const r = peer('nbdsh', ['-c', script]);
    expect(r.stderr).toBe('');
    expect(r.stdout.split('\n')).toEqual([
      "dmtool: lists ['dmtool:exceptions']",
      'dmtool: on origin lists []',
      `base:allocation ${from} [${length}, 0]`,
      `dmtool:exceptions ${from} [${chunkBytes}, 0, ${first.bytes}, 1, ${chunkBytes}, 0]`,
      `base:allocation ${from} [${length}, 0]`,
      `dmtool:exceptions ${from} [${chunkBytes}, 0]`,
      '',
    ]);
  });
});

describe('base:allocation reports holes', () => {
  const IMAGE_BYTES = 8 * MiB;
  let image: string;

  /** A sparse image: data at 1 MiB (64 KiB), at 4 MiB (128 KiB) and in the last 4 KiB; holes elsewhere. */
  beforeEach(() => {
    image = path.join(dir, 'sparse.img');
    const fd = fs.openSync(image, 'w');
    try {
      fs.ftruncateSync(fd, IMAGE_BYTES);
      fs.writeSync(fd, Buffer.alloc(64 * KiB, 0xaa), 0, 64 * KiB, 1 * MiB);
      fs.writeSync(fd, Buffer.alloc(128 * KiB, 0x5b), 0, 128 * KiB, 4 * MiB);
      fs.writeSync(fd, Buffer.alloc(4 * KiB, 0x01), 0, 4 * KiB, IMAGE_BYTES - 4 * KiB);
    } finally {
      fs.closeSync(fd);
    }
  });

  const HOLE = 3; // NBD_STATE_HOLE | NBD_STATE_ZERO

  when(nbdinfo && nbdcopy)('a linear export of a sparse image: exact map; nbdcopy still byte-exact', async () => {
    // From 1 MiB on, 6 MiB long: the first and second data extents, then a hole to the end.
    const socket = await serve(['--dev', 'disk', `0 ${(6 * MiB) / 512} linear ${image} ${MiB / 512}`, '--read-only', 'disk']);
    const uri = nbdUri(socket, 'disk');
    expect(map(uri)).toEqual([
      [0, 64 * KiB, 0],
      [64 * KiB, 3 * MiB - 64 * KiB, HOLE],
      [3 * MiB, 128 * KiB, 0],
      [3 * MiB + 128 * KiB, 3 * MiB - 128 * KiB, HOLE],
    ]);
    const r = peer('nbdinfo', ['--map', uri]);
    expect(r.stdout.split('\n')[1].trim().split(/\s+/).slice(3).join(' ')).toBe('hole,zero');
    const out = path.join(dir, 'copy.img');
    const c = peer('nbdcopy', [uri, out]);
    expect(c.stderr).toBe('');
    expect(c.status).toBe(0);
    expect(sha256(out)).toBe(sha256(image, MiB, 6 * MiB));
  });

  when(nbdinfo && nbdsh)('snapshot-origin and snapshot exports: the origin map, and chunks the snapshot holds', async () => {
    const cow = path.join(dir, 'cow.img');
    fs.writeFileSync(cow, Buffer.alloc(0));
    fs.truncateSync(cow, 4 * MiB);
    expect(dmtool(['snapshot-create', image, cow, '--chunk-size', '128']).status).toBe(0);
    const sectors = IMAGE_BYTES / 512;
    const socket = await serve([
      '--dev',
      'origin',
      `0 ${sectors} snapshot-origin ${image}`,
      '--dev',
      'snap',
      `0 ${sectors} snapshot ${image} ${cow} P 128`,
    ]);
    const originMap = [
      [0, MiB, HOLE],
      [MiB, 64 * KiB, 0],
      [MiB + 64 * KiB, 3 * MiB - 64 * KiB, HOLE],
      [4 * MiB, 128 * KiB, 0],
      [4 * MiB + 128 * KiB, 4 * MiB - 132 * KiB, HOLE],
      [IMAGE_BYTES - 4 * KiB, 4 * KiB, 0],
    ];
    expect(map(nbdUri(socket, 'origin'))).toEqual(originMap);
    expect(map(nbdUri(socket, 'snap'))).toEqual(originMap);
    // A write to the snapshot inside a hole of the origin (chunk 32, 64 KiB chunks) makes that chunk data there only.
    const w = peer('nbdsh', ['-u', nbdUri(socket, 'snap'), '-c', `h.pwrite(b"\\x77" * 4096, ${2 * MiB + 4 * KiB})`]);
    expect(w.stderr).toBe('');
    expect(map(nbdUri(socket, 'origin'))).toEqual(originMap);
    expect(map(nbdUri(socket, 'snap'))).toEqual([
      [0, MiB, HOLE],
      [MiB, 64 * KiB, 0],
      [MiB + 64 * KiB, MiB - 64 * KiB, HOLE],
      [2 * MiB, 64 * KiB, 0],
      [2 * MiB + 64 * KiB, 2 * MiB - 64 * KiB, HOLE],
      [4 * MiB, 128 * KiB, 0],
      [4 * MiB + 128 * KiB, 4 * MiB - 132 * KiB, HOLE],
      [IMAGE_BYTES - 4 * KiB, 4 * KiB, 0],
    ]);
    expect(map(nbdUri(socket, 'snap'), 'dmtool:exceptions')).toEqual([
      [0, 2 * MiB, 0],
      [2 * MiB, 64 * KiB, 1],
      [2 * MiB + 64 * KiB, IMAGE_BYTES - 2 * MiB - 64 * KiB, 0],
    ]);
  });
});
