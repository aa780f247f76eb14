/**
 * `dmtool serve` against real NBD clients: libnbd's nbdinfo, nbdcopy and
 * nbdsh, and qemu-img. The export "disk" is 32 MiB of an image file from
 * byte 4 MiB on (a linear target with an offset), so every check also
 * proves the mapping; "ro" is the whole image, read-only.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { havePeer, nbdUri, peer, randomFile, ServeProcess, sha256, startServe } from './serve-process';

jest.setTimeout(60000);

const MiB = 1 << 20;
const IMAGE_BYTES = 48 * MiB;
const START_BYTES = 4 * MiB;
const DISK_BYTES = 32 * MiB;

const nbdinfo = havePeer('nbdinfo');
const nbdcopy = havePeer('nbdcopy');
const nbdsh = havePeer('nbdsh');
const qemuImg = havePeer('qemu-img');

let dir: string;
let image: string;
let server: ServeProcess | undefined;
let disk: string;
let ro: string;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-nbd-peers-'));
  image = path.join(dir, 'image.img');
  randomFile(image, IMAGE_BYTES, 1);
  const socketPath = path.join(dir, 'nbd.sock');
  server = await startServe(
    [
      '--dev',
      'disk',
      `0 ${DISK_BYTES / 512} linear ${image} ${START_BYTES / 512}`,
      '--dev',
      'ro',
      `0 ${IMAGE_BYTES / 512} linear ${image} 0`,
      '--read-only',
      'ro',
    ],
    socketPath,
  );
  disk = nbdUri(socketPath, 'disk');
  ro = nbdUri(socketPath, 'ro');
});

afterAll(async () => {
  try {
    await server?.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

const when = (ok: boolean) => (ok ? test : test.skip);

when(nbdinfo)('nbdinfo --list shows both exports; --size and --json agree', () => {
  const list = peer('nbdinfo', ['--list', disk]);
  expect(list.status).toBe(0);
  expect(list.stdout).toMatch(/export="disk":[\s\S]*export-size: 33554432/);
  expect(list.stdout).toMatch(/export="ro":[\s\S]*is_read_only: true/);
  expect(peer('nbdinfo', ['--size', disk]).stdout.trim()).toBe(String(DISK_BYTES));
  const info = JSON.parse(peer('nbdinfo', ['--json', disk]).stdout);
  expect(info.protocol).toBe('newstyle-fixed');
  expect(info.structured).toBe(true);
  expect(info.exports[0]).toMatchObject({
    'export-name': 'disk',
    'export-size': DISK_BYTES,
    is_read_only: false,
    can_flush: true,
    can_fua: true,
    can_trim: true,
    can_zero: true,
    can_multi_conn: true,
    block_size_minimum: 512,
    block_size_preferred: 4096,
    block_size_maximum: 32 * MiB,
  });
  expect(info.exports[0].contexts).toContain('base:allocation');
  const map = peer('nbdinfo', ['--map', disk]);
  expect(map.stdout.trim()).toMatch(/^0\s+33554432\s+0\s+data$/);
});

when(nbdcopy)('nbdcopy from the export gives the image range byte for byte', () => {
  const out = path.join(dir, 'copy-out.img');
  const r = peer('nbdcopy', [disk, out]);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(sha256(out)).toBe(sha256(image, START_BYTES, DISK_BYTES));
  fs.rmSync(out);
});

when(nbdcopy)('nbdcopy to the export writes exactly the range; the rest of the image is untouched', () => {
  const before = { head: sha256(image, 0, START_BYTES), tail: sha256(image, START_BYTES + DISK_BYTES) };
  const input = path.join(dir, 'copy-in.img');
  randomFile(input, DISK_BYTES, 2);
  const r = peer('nbdcopy', [input, disk]);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(sha256(image, START_BYTES, DISK_BYTES)).toBe(sha256(input));
  expect({ head: sha256(image, 0, START_BYTES), tail: sha256(image, START_BYTES + DISK_BYTES) }).toEqual(before);
  fs.rmSync(input);
});

when(nbdcopy)('nbdcopy to the read-only export is refused and writes nothing', () => {
  const all = sha256(image);
  const input = path.join(dir, 'ro-in.img');
  randomFile(input, IMAGE_BYTES, 3);
  const r = peer('nbdcopy', [input, ro]);
  expect(r.status).not.toBe(0);
  expect(sha256(image)).toBe(all);
  fs.rmSync(input);
});

when(qemuImg)('qemu-img info, compare and convert over nbd+unix', () => {
  const info = JSON.parse(peer('qemu-img', ['info', '--output=json', disk]).stdout);
  expect(info['virtual-size']).toBe(DISK_BYTES);
  const slice = path.join(dir, 'slice.img');
  fs.writeFileSync(slice, fs.readFileSync(image).subarray(START_BYTES, START_BYTES + DISK_BYTES));
  const cmp = peer('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', slice, disk]);
  expect(cmp.stdout).toMatch(/Images are identical/);
  expect(cmp.status).toBe(0);
  const qcow = path.join(dir, 'converted.qcow2');
  expect(peer('qemu-img', ['convert', '-O', 'qcow2', disk, qcow]).status).toBe(0);
  expect(peer('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', qcow, slice]).status).toBe(0);
  // And back: the qcow2's content written into the export (qemu-img uses write zeroes and flush).
  randomFile(slice, DISK_BYTES, 4);
  expect(peer('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', slice, disk]).status).toBe(0);
  expect(sha256(image, START_BYTES, DISK_BYTES)).toBe(sha256(slice));
  for (const f of [slice, qcow]) fs.rmSync(f);
});

when(nbdsh)('nbdsh: FUA write, flush, trim and write zeroes reach the image', () => {
  const script = `
import nbd
assert h.can_fua() and h.can_flush() and h.can_trim() and h.can_zero()
h.pwrite(b"\\x5a" * 4096, 8192, nbd.CMD_FLAG_FUA)
h.flush()
h.zero(65536, 1048576)
h.zero(4096, 2097152, nbd.CMD_FLAG_NO_HOLE | nbd.CMD_FLAG_FUA)
h.trim(4096, 3145728)
assert h.pread(4096, 8192) == b"\\x5a" * 4096
assert h.pread(65536, 1048576) == bytes(65536)
# Without strict mode libnbd sends what it would refuse itself, so the server answers.
h.set_strict_mode(0)
try:
    h.pread(1024, ${DISK_BYTES - 512})
    raise SystemExit("read beyond the end succeeded")
except nbd.Error as e:
    assert e.errnum == 22, e
print("ok")
`;
  const r = peer('nbdsh', ['-u', disk, '-c', script]);
  expect(r.stderr).toBe('');
  expect(r.stdout.trim()).toBe('ok');
  const fd = fs.openSync(image, 'r');
  try {
    const b = Buffer.alloc(65536);
    fs.readSync(fd, b, 0, 4096, START_BYTES + 8192);
    expect(b.subarray(0, 4096).every((x) => x === 0x5a)).toBe(true);
    fs.readSync(fd, b, 0, 65536, START_BYTES + MiB);
    expect(b.every((x) => x === 0)).toBe(true);
    fs.readSync(fd, b, 0, 4096, START_BYTES + 2 * MiB);
    expect(b.subarray(0, 4096).every((x) => x === 0)).toBe(true);
  } finally {
    fs.closeSync(fd);
  }
});

when(nbdsh)('nbdsh: the read-only export refuses writes with EPERM', () => {
  const script = `
import nbd
assert h.is_read_only()
h.set_strict_mode(0)
try:
    h.pwrite(bytes(512), 0)
    raise SystemExit("write succeeded")
except nbd.Error as e:
    assert e.errnum == 1, e
print("ok")
`;
  const r = peer('nbdsh', ['-u', ro, '-c', script]);
  expect(r.stdout.trim()).toBe('ok');
});

test('SIGTERM: dmtool serve finishes, flushes, removes its socket and exits 0', async () => {
  const s = server!;
  server = undefined;
  const r = await s.stop();
  expect(r).toEqual({ status: 0, signal: null });
  expect(s.stdout()).toMatch(/stopped; every device flushed/);
  expect(fs.existsSync(s.socketPath)).toBe(false);
});
