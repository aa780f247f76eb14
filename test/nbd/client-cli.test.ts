/**
 * NBD URIs on the command line, against real servers over unix sockets:
 * nbdkit (file plugin; error filter), qemu-nbd and `dmtool serve`. Sizes are
 * checked by sha256 of the servers' backing files.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { dmtool, startDmtool } from '../support/cli';
import { readRange } from '../support/images';
import { ServerProcess, startNbdkit, startNbdkitTcp, startQemuNbd } from '../support/nbd-servers';
import { havePeer, nbdUri, peer, randomFile, sha256, startServe } from './serve-process';

jest.setTimeout(90000);

const MiB = 1 << 20;
const nbdkit = havePeer('nbdkit');
const qemuNbd = havePeer('qemu-nbd');
const when = (ok: boolean) => (ok ? test : test.skip);

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-nbd-cli-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Wait (bounded) until the copy has written its first sector through the server: it is connected and copying. */
async function copyStarted(src: string, dst: string): Promise<void> {
  const want = readRange(src, 0, 512);
  for (let i = 0; i < 300 && !readRange(dst, 0, 512).equals(want); i++) await new Promise((r) => setTimeout(r, 50));
  expect(readRange(dst, 0, 512).equals(want)).toBe(true);
}

function files(bytes: number): { src: string; dst: string } {
  const src = path.join(dir, 'src.img');
  const dst = path.join(dir, 'dst.img');
  randomFile(src, bytes, 42);
  fs.writeFileSync(dst, Buffer.alloc(0));
  fs.truncateSync(dst, bytes);
  return { src, dst };
}

when(nbdkit)('copy local.img to an nbdkit file export: the backing file equals the source', async () => {
  const { src, dst } = files(16 * MiB);
  const sock = path.join(dir, 'nbd.sock');
  const server = await startNbdkit(['file', dst], sock);
  try {
    const r = dmtool(['copy', src, nbdUri(sock, '')]);
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toMatch(new RegExp(`^copied 32768 sectors from ${src} to 1 destination: 16\\.0 MiB in `));
  } finally {
    await server.stop();
  }
  expect(sha256(dst)).toBe(sha256(src));
});

when(qemuNbd)('copy from a qemu-nbd export into a local file', async () => {
  const { src, dst } = files(8 * MiB);
  const sock = path.join(dir, 'qemu.sock');
  const server = await startQemuNbd(['-f', 'raw', '-r', '-x', 'disk', src], sock);
  try {
    const r = dmtool(['copy', nbdUri(sock, 'disk'), dst]);
    expect([r.status, r.stderr]).toEqual([0, '']);
  } finally {
    await server.stop();
  }
  expect(sha256(dst)).toBe(sha256(src));
});

test('dmtool zero on a `dmtool serve` export zeroes exactly the range', async () => {
  const { src } = files(4 * MiB);
  const before = fs.readFileSync(src);
  const sock = path.join(dir, 'serve.sock');
  const server = await startServe(['--dev', 'disk', `0 ${(4 * MiB) / 512} linear ${src} 0`], sock);
  try {
    const r = dmtool(['zero', nbdUri(sock, 'disk'), '--offset', '8', '--length', '24']);
    expect([r.status, r.stderr]).toEqual([0, '']);
  } finally {
    await server.stop();
  }
  before.fill(0, 4096, 16384);
  expect(fs.readFileSync(src).equals(before)).toBe(true);
});

when(nbdkit)('a mirror with a local leg and an NBD leg: created, resynced, legs identical', async () => {
  const { src: leg0, dst: leg1 } = files(16 * MiB);
  const log = path.join(dir, 'log.img');
  fs.writeFileSync(log, Buffer.alloc(MiB));
  const sock = path.join(dir, 'leg.sock');
  const server = await startNbdkit(['file', leg1], sock);
  const remote = nbdUri(sock, '');
  try {
    const c = dmtool(['mirror-create', '--log', log, leg0, remote]);
    expect([c.status, c.stderr]).toEqual([0, '']);
    const r = dmtool(['mirror-resync', '--log', log, leg0, remote]);
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toMatch(/^resynced 32 of 32 out-of-sync regions \(16\.0 MiB in /);
    const k = dmtool(['mirror-check', leg0, remote]);
    expect([k.status, k.stderr]).toEqual([0, '']);
    const s = dmtool(['mirror-status', '--log', log, leg0, remote]);
    expect(s.stdout.split('\n')[0]).toBe(`0 32768 mirror 2 ${leg0} ${remote} 32/32 1 AA 3 disk ${log} A`);
  } finally {
    await server.stop();
  }
  expect(sha256(leg1)).toBe(sha256(leg0));
});

when(nbdkit)(
  'writes failing on the server (nbdkit error filter): writeErr bit of that destination, exit 1, one line naming the URI',
  async () => {
    const { src, dst } = files(4 * MiB);
    const remoteFile = path.join(dir, 'remote.img');
    fs.writeFileSync(remoteFile, Buffer.alloc(4 * MiB));
    const trigger = path.join(dir, 'trigger');
    const sock = path.join(dir, 'err.sock');
    const uri = nbdUri(sock, '');
    const server = await startNbdkit(
      ['--filter=error', 'file', remoteFile, 'error=EIO', 'error-pwrite-rate=100%', `error-pwrite-file=${trigger}`],
      sock,
    );
    try {
      fs.writeFileSync(trigger, '');
      const r = dmtool(['copy', src, dst, uri, '--length', '512k']);
      expect([r.status, r.stdout]).toEqual([1, '']);
      expect(r.stderr).toBe(
        `dmtool: EIO: write failed on ${uri} at sector 0 (+1024 sectors): I/O error\ndmtool: finished with errors: readErr=0 writeErr=0x2\n`,
      );
      const j = dmtool(['copy', src, dst, uri, '--length', '512k', '--json']);
      expect(j.status).toBe(1);
      expect(JSON.parse(j.stdout)).toMatchObject({ readErr: false, writeErr: 2 });
      fs.rmSync(trigger);
      const ok = dmtool(['copy', src, dst, uri, '--length', '512k']);
      expect([ok.status, ok.stderr]).toEqual([0, '']);
    } finally {
      await server.stop();
    }
    expect(sha256(dst, 0, 512 * 1024)).toBe(sha256(src, 0, 512 * 1024));
    expect(sha256(remoteFile, 0, 512 * 1024)).toBe(sha256(src, 0, 512 * 1024));
  },
);

when(nbdkit)('the server killed mid-copy and restarted within the retry window: the copy completes byte-exact', async () => {
  const { src, dst } = files(32 * MiB);
  const sock = path.join(dir, 'nbd.sock');
  let server: ServerProcess = await startNbdkit(['file', dst], sock);
  const copy = startDmtool(['copy', src, nbdUri(sock, ''), '--rate', '16M'], {
    env: { DMTOOL_NBD_RECONNECT_ATTEMPTS: '5', DMTOOL_NBD_RECONNECT_DELAY_MS: '200' },
    timeoutMs: 60000,
  });
  try {
    await copyStarted(src, dst);
    await server.stop('SIGKILL');
    // Back at once: within the backoff window (200 ms, 400 ms, ... five attempts).
    server = await startNbdkit(['file', dst], sock);
    const r = await copy.done;
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toMatch(/^copied 65536 sectors from /);
  } finally {
    copy.signal('SIGKILL');
    await copy.done;
    await server.stop();
  }
  expect(sha256(dst)).toBe(sha256(src));
});

when(nbdkit)('the server killed for good: the device fails after the bounded retries, with one error line', async () => {
  const { src, dst } = files(32 * MiB);
  const sock = path.join(dir, 'nbd.sock');
  const uri = nbdUri(sock, '');
  const server = await startNbdkit(['file', dst], sock);
  const copy = startDmtool(['copy', src, uri, '--rate', '16M'], {
    env: { DMTOOL_NBD_RECONNECT_ATTEMPTS: '2', DMTOOL_NBD_RECONNECT_DELAY_MS: '100' },
    timeoutMs: 60000,
  });
  try {
    await copyStarted(src, dst);
    await server.stop('SIGKILL');
    const r = await copy.done;
    expect([r.status, r.stdout]).toEqual([1, '']);
    // A reconnection can reach the killed server's listening socket before the kernel has closed it: the
    // handshake then fails on the write (EPIPE) or the read (ECONNRESET) instead of the connect.
    const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    expect(r.stderr).toMatch(
      new RegExp(
        `^dmtool: EIO: write failed on ${esc(uri)} at sector \\d+ \\(\\+\\d+ sectors\\): device failed: connection lost; 2 reconnection attempts failed \\(last: (?:connect ECONNREFUSED ${esc(sock)}|write EPIPE|read ECONNRESET)\\)( \\(and \\d+ more requests alike\\))?\\n` +
          `dmtool: finished with errors: readErr=0 writeErr=0x1\\n$`,
      ),
    );
  } finally {
    copy.signal('SIGKILL');
    await copy.done;
    await server.stop();
  }
});

describe('names refused before anything is opened', () => {
  test('the same export twice is refused without connecting (no server runs)', () => {
    const { src } = files(MiB);
    const uri = nbdUri(path.join(dir, 'none.sock'), 'disk');
    const r = dmtool(['copy', src, uri, `nbd+unix:///disk?socket=${path.join(dir, 'x', '..', 'none.sock')}`]);
    expect([r.status, r.stdout, r.stderr]).toEqual([
      2,
      '',
      `dmtool: destination 1 nbd+unix:///disk?socket=${path.join(dir, 'x', '..', 'none.sock')} is the same device as destination 0 ${uri}\n`,
    ]);
  });

  test('a TLS URI with a pre-shared key is refused (exit 2) without a password or the key file in the message', () => {
    const { src } = files(MiB);
    const r = dmtool(['copy', src, 'nbds://alice:pw@127.0.0.1/disk?tls-psk-file=keys.psk']);
    expect([r.status, r.stdout, r.stderr]).toEqual([
      2,
      '',
      'dmtool: nbds://127.0.0.1/disk?tls-psk-file=keys.psk: ' +
        'TLS with a pre-shared key (tls-psk-file) is not supported; use X.509 (tls-certificates=DIR)\n',
    ]);
  });

  test('nbds:// to a server without TLS: one line naming the URI (exit 3)', async () => {
    const { src, dst } = files(MiB);
    const sock = path.join(dir, 'plain.sock');
    const server = await startServe(['--dev', 'disk', `0 2048 linear ${src} 0`, '--read-only', 'disk'], sock);
    try {
      const r = dmtool(['copy', `nbds+unix:///disk?socket=${sock}`, dst, '--length', '8', '--dry-run']);
      expect([r.status, r.stdout, r.stderr]).toEqual([
        3,
        '',
        `dmtool: EACCES: open failed on nbds+unix:///disk?socket=${sock}: the server does not offer TLS (NBD_REP_ERR_UNSUP to NBD_OPT_STARTTLS)\n`,
      ]);
    } finally {
      await server.stop();
    }
  });

  test('no server on the socket: device refused (exit 3)', () => {
    const { src } = files(MiB);
    const sock = path.join(dir, 'none.sock');
    const r = dmtool(['copy', src, nbdUri(sock, '')]);
    expect([r.status, r.stdout, r.stderr]).toEqual([
      3,
      '',
      `dmtool: ENOENT: open failed on ${nbdUri(sock, '')}: cannot connect: connect ENOENT ${sock}\n`,
    ]);
  });

  test('a bad DMTOOL_NBD_* setting is refused (exit 2)', () => {
    const r = dmtool(['copy', '/nonexistent', '/nonexistent2'], { env: { DMTOOL_NBD_RECONNECT_ATTEMPTS: 'many' } });
    expect([r.status, r.stderr]).toEqual([2, 'dmtool: DMTOOL_NBD_RECONNECT_ATTEMPTS must be a whole number (got "many")\n']);
    const none = dmtool(['copy', '/nonexistent', '/nonexistent2'], { env: { DMTOOL_NBD_CONNECTIONS: '0' } });
    expect([none.status, none.stderr]).toEqual([2, 'dmtool: DMTOOL_NBD_CONNECTIONS must be a whole number above 0 (got "0")\n']);
    const many = dmtool(['copy', '/nonexistent', '/nonexistent2'], { env: { DMTOOL_NBD_CONNECTIONS: '17' } });
    expect([many.status, many.stderr]).toEqual([2, 'dmtool: DMTOOL_NBD_CONNECTIONS must be at most 16 (got 17)\n']);
  });
});

test('copy --help mentions NBD URIs', () => {
  const r = dmtool(['copy', '--help']);
  expect(r.stdout).toContain('source file, block device or NBD URI');
  expect(r.stdout).toContain('nbd+unix:///EXPORT?socket=PATH');
});

when(nbdkit)('TCP on 127.0.0.1: copy to an nbd:// export', async () => {
  const { src, dst } = files(4 * MiB);
  const server = await startNbdkitTcp(['file', dst]);
  try {
    const r = dmtool(['copy', src, `nbd://127.0.0.1:${server.port}/`]);
    expect([r.status, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toMatch(new RegExp(`^copied 8192 sectors from ${src} to 1 destination: `));
  } finally {
    await server.stop();
  }
  expect(sha256(dst)).toBe(sha256(src));
});

when(nbdkit)(
  'an NBD leg whose writes fail: marked failed (S), its regions left out of sync; resynced once the server is well',
  async () => {
    const { src: leg0, dst: leg1 } = files(16 * MiB);
    const log = path.join(dir, 'log.img');
    fs.writeFileSync(log, Buffer.alloc(MiB));
    const trigger = path.join(dir, 'trigger');
    const sock = path.join(dir, 'leg.sock');
    const remote = nbdUri(sock, '');
    const server = await startNbdkit(
      ['--filter=error', 'file', leg1, 'error=EIO', 'error-pwrite-rate=100%', `error-pwrite-file=${trigger}`],
      sock,
    );
    try {
      expect(dmtool(['mirror-create', '--log', log, leg0, remote]).status).toBe(0);
      fs.writeFileSync(trigger, '');
      const failed = dmtool(['mirror-resync', '--log', log, leg0, remote]);
      expect(failed.status).toBe(1);
      const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
      expect(failed.stderr).toMatch(
        new RegExp(
          `^dmtool: leg 1 ${esc(remote)} failed \\(S\\): EIO: write failed on ${esc(remote)} at sector \\d+ \\(\\+1024 sectors\\): I/O error\\n` +
            `dmtool: 32 regions left out of sync: 0-31\\n$`,
        ),
      );
      expect(failed.stdout.split('\n')[1]).toBe(`0 32768 mirror 2 ${leg0} ${remote} 0/32 1 AS 3 disk ${log} A`);
      fs.rmSync(trigger);
      const ok = dmtool(['mirror-resync', '--log', log, leg0, remote]);
      expect([ok.status, ok.stderr]).toEqual([0, '']);
      expect(ok.stdout).toMatch(/^resynced 32 of 32 out-of-sync regions /);
    } finally {
      await server.stop();
    }
    expect(sha256(leg1)).toBe(sha256(leg0));
  },
);

when(nbdkit)('a snapshot whose COW is an NBD export: copy-on-write keeps the old origin data readable', async () => {
  const { src: origin, dst: cowFile } = files(8 * MiB);
  const before = fs.readFileSync(origin).subarray(0, 64 * 1024);
  const sock = path.join(dir, 'cow.sock');
  const cow = nbdUri(sock, '');
  const zeroes = path.join(dir, 'zeroes');
  fs.writeFileSync(zeroes, Buffer.alloc(64 * 1024));
  const view = path.join(dir, 'view');
  const server = await startNbdkit(['file', cowFile], sock);
  try {
    const c = dmtool(['snapshot-create', origin, cow, '--chunk-size', '8']);
    expect([c.status, c.stderr]).toEqual([0, '']);
    const w = dmtool(['snapshot-write', origin, cow, '--target', 'origin', '--offset', '0', '-i', zeroes]);
    expect([w.status, w.stderr, w.stdout]).toEqual([0, '', 'wrote 128 sectors to the origin at sector 0; status 144/16384 16\n']);
    const r = dmtool(['snapshot-read', origin, cow, '--length', '128', '-o', view]);
    expect([r.status, r.stderr]).toEqual([0, '']);
  } finally {
    await server.stop();
  }
  expect(fs.readFileSync(view).equals(before)).toBe(true);
  expect(
    fs
      .readFileSync(origin)
      .subarray(0, 64 * 1024)
      .equals(Buffer.alloc(64 * 1024)),
  ).toBe(true);
});

when(nbdkit)(
  'NBD URIs in table lines: a mirror table with an NBD leg, and `dmtool serve` re-exporting a range of an NBD export',
  async () => {
    const { src: leg0, dst: leg1 } = files(8 * MiB);
    const log = path.join(dir, 'log.img');
    fs.writeFileSync(log, Buffer.alloc(MiB));
    const sock = path.join(dir, 'leg.sock');
    const remote = nbdUri(sock, '');
    const server = await startNbdkit(['file', leg1], sock);
    const out = path.join(dir, 'range.out');
    try {
      const table = `0 16384 mirror disk 2 ${log} 1024 2 ${leg0} 0 ${remote} 0`;
      expect(dmtool(['mirror-create', '--table', table]).status).toBe(0);
      const r = dmtool(['mirror-resync', '--table', table]);
      expect([r.status, r.stderr]).toEqual([0, '']);
      const proxySock = path.join(dir, 'proxy.sock');
      const proxy = await startServe(['--dev', 'px', `0 2048 linear ${remote} 8`], proxySock);
      try {
        const c = peer('nbdcopy', [nbdUri(proxySock, 'px'), out]);
        expect([c.status, c.stderr]).toEqual([0, '']);
      } finally {
        await proxy.stop();
      }
    } finally {
      await server.stop();
    }
    expect(sha256(leg1)).toBe(sha256(leg0));
    expect(sha256(out)).toBe(sha256(leg0, 4096, MiB));
  },
);
