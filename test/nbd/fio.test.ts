/**
 * fio's nbd engine against `dmtool serve`: 4 KiB random writes with
 * crc32c verification on a linear export (16 MiB of an image from byte
 * 1 MiB on), then, with a new server, fio's verify-only pass over what
 * reached the image, and that pass failing on a block changed behind it.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { havePeer, nbdUri, randomFile, ServeProcess, sha256, startServe } from './serve-process';

jest.setTimeout(120000);

const MiB = 1 << 20;
const START_BYTES = MiB;
const DISK_BYTES = 16 * MiB;
const IMAGE_BYTES = 18 * MiB;
const BLOCKS = DISK_BYTES / 4096;

/** fio built with the nbd engine (Debian's is); without it the test is skipped, or fails under CI. */
function fioHasNbd(): boolean {
  if (!havePeer('fio')) return false;
  const r = spawnSync('fio', ['--enghelp=nbd'], { encoding: 'utf8', timeout: 10000 });
  if (r.status === 0 && r.stdout.includes('uri')) return true;
  if (process.env.CI === 'true') {
    test('fio has the nbd engine', () => {
      throw new Error('fio lacks the nbd engine (Debian builds it with libnbd)');
    });
  } else console.warn('skipping the fio test: fio has no nbd engine');
  return false;
}
const when = fioHasNbd() ? test : test.skip;

let dir: string;
let servers: ServeProcess[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-nbd-fio-'));
});

afterEach(async () => {
  try {
    for (const s of servers) await s.stop();
  } finally {
    servers = [];
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

interface FioJob {
  error: number;
  read: { io_bytes: number; total_ios: number };
  write: { io_bytes: number; total_ios: number };
}

/** fio's nbd engine on the export, 4 KiB random writes verified with crc32c; the same seed for the verify-only pass. */
function fio(uri: string, extra: string[]): { status: number | null; job?: FioJob; stderr: string } {
  const r = spawnSync(
    'fio',
    [
      '--name=dmtool',
      '--ioengine=nbd',
      `--uri=${uri}`,
      '--rw=randwrite',
      '--bs=4k',
      `--size=${DISK_BYTES}`,
      '--iodepth=16',
      '--verify=crc32c',
      '--randseed=20261125',
      '--output-format=json',
      ...extra,
    ],
    // In the test's folder: fio saves a verify state file in its working directory when verification fails.
    { encoding: 'utf8', timeout: 90000, maxBuffer: 16 << 20, cwd: dir },
  );
  // The engine prints "fio: connected to NBD server" before the JSON.
  const at = r.stdout.indexOf('{');
  const job = at >= 0 ? (JSON.parse(r.stdout.slice(at)) as { jobs: FioJob[] }).jobs[0] : undefined;
  return { status: r.status, job, stderr: r.stderr };
}

async function serve(readOnly: boolean): Promise<string> {
  const socketPath = path.join(dir, 'nbd.sock');
  const args = ['--dev', 'disk', `0 ${DISK_BYTES / 512} linear ${path.join(dir, 'image.img')} ${START_BYTES / 512}`];
  servers.push(await startServe(readOnly ? [...args, '--read-only', 'disk'] : args, socketPath));
  return nbdUri(socketPath, 'disk');
}

async function stopAll(): Promise<void> {
  for (const s of servers.splice(0)) expect(await s.stop()).toEqual({ status: 0, signal: null });
}

when('4 KiB random writes verified with crc32c; a new server reads back what fio wrote, and a changed block fails it', async () => {
  const image = path.join(dir, 'image.img');
  randomFile(image, IMAGE_BYTES, 3);
  const head = sha256(image, 0, START_BYTES);
  const tail = sha256(image, START_BYTES + DISK_BYTES);

  const written = fio(await serve(false), []);
  expect(written.stderr).toBe('');
  expect(written.status).toBe(0);
  // Every block written once (fio's random map), then read back and verified.
  expect(written.job).toMatchObject({
    error: 0,
    write: { io_bytes: DISK_BYTES, total_ios: BLOCKS },
    read: { io_bytes: DISK_BYTES, total_ios: BLOCKS },
  });
  await stopAll();
  expect(sha256(image, 0, START_BYTES)).toBe(head);
  expect(sha256(image, START_BYTES + DISK_BYTES)).toBe(tail);

  // What fio verified came from the image, not from a cache in the server.
  const again = fio(await serve(true), ['--verify_only=1']);
  expect(again.status).toBe(0);
  expect(again.job).toMatchObject({ error: 0, read: { io_bytes: DISK_BYTES, total_ios: BLOCKS } });
  await stopAll();

  const fd = fs.openSync(image, 'r+');
  try {
    fs.writeSync(fd, Buffer.alloc(512, 0xee), 0, 512, START_BYTES + 1000 * 4096 + 1024);
  } finally {
    fs.closeSync(fd);
  }
  const broken = fio(await serve(true), ['--verify_only=1']);
  expect(broken.status).not.toBe(0);
  expect(broken.stderr).toMatch(/verify: bad header|crc32c: verify failed|bad magic/);
});
