/**
 * TLS both ways with real peers and certificates made per run (openssl):
 * `dmtool serve --tls require` read and written by nbdcopy, nbdinfo and
 * qemu-img; dmtool's client against nbdkit and qemu-nbd requiring TLS;
 * refusals (plaintext client, wrong CA on either side, missing client
 * certificate, wrong host name) with their exact lines; TCP on 127.0.0.1;
 * a reconnection that redoes TLS. Data is checked by sha256.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MemoryDevice } from '@dmtool/devices';
import {
  certificatesDirFiles,
  encodeOption,
  encodeInfoRequest,
  ExportTable,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_LIST,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ERR_TLS_REQD,
  NbdDevice,
  NbdServer,
} from '@dmtool/nbd';
import { dmtool } from '../support/cli';
import { RawClient } from '../support/nbd-client';
import { freePort, startNbdkit, startQemuNbd } from '../support/nbd-servers';
import { CertDirs, makeCerts } from '../support/tls-certs';
import { havePeer, peer, randomFile, ServeProcess, sha256, startServe } from './serve-process';

jest.setTimeout(90000);

const MiB = 1 << 20;
const nbdkit = havePeer('nbdkit');
const qemuNbd = havePeer('qemu-nbd');
const nbdcopy = havePeer('nbdcopy');
const qemuImg = havePeer('qemu-img');
const when = (ok: boolean) => (ok ? test : test.skip);

let root: string;
let certs: CertDirs;
let otherCa: CertDirs;
let dir: string;

beforeAll(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-tls-'));
  certs = makeCerts(path.join(root, 'pki'));
  otherCa = makeCerts(path.join(root, 'other-pki'), 'another CA');
});
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(root, 'case-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** A sparse destination file of `bytes` in the case's folder. */
function blank(name: string, bytes = 4 * MiB): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, Buffer.alloc(0));
  fs.truncateSync(file, bytes);
  return file;
}

const tlsUri = (sock: string, name: string, certDir: string, extra = '') =>
  `nbds+unix:///${name}?socket=${sock}&tls-certificates=${certDir}${extra}`;

/** A 16 MiB image served by `dmtool serve` with `tlsArgs`; the backing file and the server. */
async function serveImage(tlsArgs: string[], bytes = 16 * MiB): Promise<{ image: string; sock: string; server: ServeProcess }> {
  const image = path.join(dir, 'served.img');
  fs.writeFileSync(image, Buffer.alloc(0));
  fs.truncateSync(image, bytes);
  const sock = path.join(dir, 'nbd.sock');
  const server = await startServe(['--dev', 'disk', `0 ${bytes / 512} linear ${image} 0`, ...tlsArgs], sock);
  return { image, sock, server };
}

const REQUIRE_WITH_CLIENT_CERTS = () => ['--tls', 'require', '--tls-certificates', certs.server, '--tls-verify-client'];

describe('dmtool serve --tls require', () => {
  when(nbdcopy)('nbdcopy writes and reads the export over TLS with a client certificate: sha256 exact', async () => {
    const { image, sock, server } = await serveImage(REQUIRE_WITH_CLIENT_CERTS());
    const src = path.join(dir, 'src.img');
    const back = path.join(dir, 'back.img');
    randomFile(src, 16 * MiB, 11);
    try {
      expect(server.stdout()).toContain(`export disk: ${16 * MiB} bytes, read-write: nbds+unix:///disk?socket=${sock}\n`);
      expect(server.stdout()).toContain('tls require: client certificates checked\n');
      const w = peer('nbdcopy', [src, tlsUri(sock, 'disk', certs.client)]);
      expect([w.status, w.stderr]).toEqual([0, '']);
      const r = peer('nbdcopy', [tlsUri(sock, 'disk', certs.client), back]);
      expect([r.status, r.stderr]).toEqual([0, '']);
      const info = peer('nbdinfo', ['--size', tlsUri(sock, 'disk', certs.client)]);
      expect([info.status, info.stdout]).toEqual([0, `${16 * MiB}\n`]);
    } finally {
      expect(await server.stop()).toEqual({ status: 0, signal: null });
    }
    expect(sha256(back)).toBe(sha256(src));
    expect(sha256(image)).toBe(sha256(src));
  });

  test('a plaintext client gets NBD_REP_ERR_TLS_REQD for every option, byte for byte, and EXPORT_NAME is closed', async () => {
    const { server, sock } = await serveImage(REQUIRE_WITH_CLIENT_CERTS());
    const c = await RawClient.connect(sock);
    try {
      await c.greeting();
      const message = Buffer.from('TLS is required: send NBD_OPT_STARTTLS first');
      const header = (option: number) => {
        const h = Buffer.alloc(20);
        h.writeBigUInt64BE(0x3e889045565a9n, 0);
        h.writeUInt32BE(option, 8);
        h.writeUInt32BE(NBD_REP_ERR_TLS_REQD >>> 0, 12);
        h.writeUInt32BE(message.length, 16);
        return Buffer.concat([h, message]);
      };
      for (const [option, data] of [
        [NBD_OPT_STRUCTURED_REPLY, undefined],
        [NBD_OPT_LIST, undefined],
        [NBD_OPT_GO, encodeInfoRequest({ name: 'disk', infoTypes: [] })],
      ] as const) {
        c.send(encodeOption(option, data));
        expect((await c.read(20 + message.length)).equals(header(option))).toBe(true);
      }
      c.send(encodeOption(NBD_OPT_EXPORT_NAME, Buffer.from('disk')));
      expect(await c.closesWithin(3000)).toBe(true);
    } finally {
      c.destroy();
      expect(await server.stop()).toEqual({ status: 0, signal: null });
    }
    expect(server.stderr()).toBe(
      'dmtool serve: connection 1: NBD_OPT_EXPORT_NAME before TLS, which is required; closed\n' +
        'dmtool serve: SIGTERM: finishing requests in flight\n',
    );
  });

  test("dmtool's plaintext URI against it: one line naming the URI and NBD_REP_ERR_TLS_REQD, exit 3", async () => {
    const { server, sock } = await serveImage(REQUIRE_WITH_CLIENT_CERTS());
    try {
      const r = dmtool(['copy', '--length', '8', `nbd+unix:///disk?socket=${sock}`, blank('out.img'), '--dry-run']);
      expect([r.status, r.stderr]).toEqual([
        3,
        `dmtool: EACCES: open failed on nbd+unix:///disk?socket=${sock}: the server requires TLS (NBD_REP_ERR_TLS_REQD): use nbds:// or nbds+unix:// with tls-certificates=DIR\n`,
      ]);
    } finally {
      await server.stop();
    }
  });

  when(nbdcopy)('clients without a certificate, or with one from another CA, are refused by the server', async () => {
    const { server, sock } = await serveImage(REQUIRE_WITH_CLIENT_CERTS());
    // Trusts the server, but holds a client certificate another CA signed.
    const foreign = path.join(dir, 'foreign');
    fs.mkdirSync(foreign);
    fs.copyFileSync(path.join(certs.caOnly, 'ca-cert.pem'), path.join(foreign, 'ca-cert.pem'));
    for (const f of ['client-cert.pem', 'client-key.pem']) fs.copyFileSync(path.join(otherCa.client, f), path.join(foreign, f));
    try {
      const none = peer('nbdinfo', ['--size', tlsUri(sock, 'disk', certs.caOnly)]);
      expect([none.status, none.stdout]).toEqual([1, '']);
      const own = dmtool(['copy', '--length', '8', tlsUri(sock, 'disk', certs.caOnly), blank('o.img'), '--dry-run']);
      expect([own.status, own.stderr]).toEqual([
        3,
        `dmtool: EACCES: open failed on nbds+unix:///disk?socket=${sock}: the server ended the session after the TLS handshake (peer closed the connection); it may require a client certificate (client-cert.pem and client-key.pem in tls-certificates=DIR)\n`,
      ]);
      const other = dmtool(['copy', '--length', '8', tlsUri(sock, 'disk', foreign), blank('o.img'), '--dry-run']);
      expect([other.status, other.stderr]).toEqual([
        3,
        `dmtool: EACCES: open failed on nbds+unix:///disk?socket=${sock}: the server ended the session after the TLS handshake (peer closed the connection)\n`,
      ]);
    } finally {
      await server.stop();
    }
    expect(server.stderr().split('\n')).toEqual([
      'dmtool serve: connection 1: the client sent no certificate; closed',
      'dmtool serve: connection 2: the client sent no certificate; closed',
      "dmtool serve: connection 3: the client's certificate is refused (UNABLE_TO_VERIFY_LEAF_SIGNATURE); closed",
      'dmtool serve: SIGTERM: finishing requests in flight',
      '',
    ]);
  });

  test("dmtool's client refuses a server whose certificate another CA signed, and a name the certificate does not hold", async () => {
    const { server, sock } = await serveImage(['--tls-certificates', certs.server]);
    try {
      const out = blank('o.img');
      const wrongCa = dmtool(['copy', '--length', '8', tlsUri(sock, 'disk', otherCa.caOnly), out, '--dry-run']);
      expect([wrongCa.status, wrongCa.stderr]).toEqual([
        3,
        `dmtool: EACCES: open failed on nbds+unix:///disk?socket=${sock}: TLS handshake failed: self-signed certificate in certificate chain\n`,
      ]);
      const wrongName = dmtool([
        'copy',
        '--length',
        '8',
        tlsUri(sock, 'disk', certs.caOnly, '&tls-hostname=other.example'),
        out,
        '--dry-run',
      ]);
      expect([wrongName.status, wrongName.stderr]).toEqual([
        3,
        `dmtool: EACCES: open failed on nbds+unix:///disk?socket=${sock}: TLS handshake failed: Hostname/IP does not match certificate's altnames: Host: other.example. is not in the cert's altnames: DNS:localhost, IP Address:127.0.0.1\n`,
      ]);
      const unchecked = dmtool(['copy', '--length', '8', tlsUri(sock, 'disk', otherCa.caOnly, '&tls-verify-peer=0'), out, '--dry-run']);
      expect([unchecked.status, unchecked.stderr]).toEqual([0, '']);
      const named = dmtool(['copy', '--length', '8', tlsUri(sock, 'disk', certs.caOnly, '&tls-hostname=localhost'), out, '--dry-run']);
      expect([named.status, named.stderr]).toEqual([0, '']);
    } finally {
      await server.stop();
    }
  });

  when(qemuImg)('qemu-img reads and writes it with tls-creds-x509 (endpoint=client)', async () => {
    const { image, sock, server } = await serveImage(REQUIRE_WITH_CLIENT_CERTS());
    const src = path.join(dir, 'src.img');
    const back = path.join(dir, 'back.img');
    randomFile(src, 16 * MiB, 12);
    const creds = `tls-creds-x509,id=tls0,dir=${certs.client},endpoint=client`;
    const target = `driver=nbd,server.type=unix,server.path=${sock},export=disk,tls-creds=tls0,tls-hostname=localhost`;
    try {
      const w = peer('qemu-img', ['convert', '-n', '--object', creds, '-f', 'raw', src, '--target-image-opts', target]);
      expect([w.status, w.stderr]).toEqual([0, '']);
      const r = peer('qemu-img', ['convert', '--object', creds, '--image-opts', target, '-O', 'raw', back]);
      expect([r.status, r.stderr]).toEqual([0, '']);
    } finally {
      expect(await server.stop()).toEqual({ status: 0, signal: null });
    }
    expect(sha256(back)).toBe(sha256(src));
    expect(sha256(image)).toBe(sha256(src));
  });
});

describe('dmtool serve --tls on', () => {
  test('plaintext and TLS clients are both served', async () => {
    const { image, sock, server } = await serveImage(['--tls', 'on', '--tls-certificates', certs.server]);
    const src = path.join(dir, 'src.img');
    randomFile(src, 4 * MiB, 13);
    try {
      const plain = dmtool(['copy', '--quiet', src, `nbd+unix:///disk?socket=${sock}`]);
      expect([plain.status, plain.stderr]).toEqual([0, '']);
      const out = path.join(dir, 'out.img');
      fs.writeFileSync(out, Buffer.alloc(0));
      fs.truncateSync(out, 4 * MiB);
      const secure = dmtool(['copy', '--quiet', '--length', '4M', tlsUri(sock, 'disk', certs.caOnly), out]);
      expect([secure.status, secure.stderr]).toEqual([0, '']);
      expect(sha256(out)).toBe(sha256(src));
    } finally {
      await server.stop();
    }
    expect(sha256(image, 0, 4 * MiB)).toBe(sha256(src));
  });
});

describe("dmtool's client against other servers requiring TLS", () => {
  when(nbdkit)(
    'nbdkit --tls=require --tls-verify-peer memory: copy in and out, sha256 exact; without a client certificate refused',
    async () => {
      const sock = path.join(dir, 'nbdkit.sock');
      const server = await startNbdkit(['--tls=require', `--tls-certificates=${certs.server}`, '--tls-verify-peer', 'memory', '64M'], sock);
      const src = path.join(dir, 'src.img');
      const back = path.join(dir, 'back.img');
      randomFile(src, 16 * MiB, 14);
      fs.writeFileSync(back, Buffer.alloc(0));
      fs.truncateSync(back, 16 * MiB);
      try {
        const w = dmtool(['copy', '--quiet', src, tlsUri(sock, '', certs.client)]);
        expect([w.status, w.stderr]).toEqual([0, '']);
        const r = dmtool(['copy', '--quiet', '--length', '16M', tlsUri(sock, '', certs.client), back]);
        expect([r.status, r.stderr]).toEqual([0, '']);
        const refused = dmtool(['copy', '--length', '8', tlsUri(sock, '', certs.caOnly), blank('x.img'), '--dry-run']);
        expect(refused.status).toBe(3);
        expect(refused.stderr).toMatch(
          new RegExp(
            `^dmtool: EACCES: open failed on nbds\\+unix:///\\?socket=${sock}: the server ended the session after the TLS handshake \\(.*\\); it may require a client certificate \\(client-cert\\.pem and client-key\\.pem in tls-certificates=DIR\\)\\n$`,
          ),
        );
        const plain = dmtool(['copy', '--length', '8', `nbd+unix:///?socket=${sock}`, blank('x.img'), '--dry-run']);
        expect([plain.status, plain.stderr]).toEqual([
          3,
          `dmtool: EACCES: open failed on nbd+unix:///?socket=${sock}: the server requires TLS (NBD_REP_ERR_TLS_REQD): use nbds:// or nbds+unix:// with tls-certificates=DIR\n`,
        ]);
      } finally {
        await server.stop();
      }
      expect(sha256(back)).toBe(sha256(src));
    },
  );

  when(qemuNbd)('qemu-nbd --tls-creds (tls-creds-x509, endpoint=server): copy out of it, sha256 exact', async () => {
    const sock = path.join(dir, 'qemu.sock');
    const src = path.join(dir, 'src.img');
    const out = path.join(dir, 'out.img');
    randomFile(src, 8 * MiB, 15);
    fs.writeFileSync(out, Buffer.alloc(0));
    fs.truncateSync(out, 8 * MiB);
    const server = await startQemuNbd(
      [
        '--object',
        `tls-creds-x509,id=tls0,dir=${certs.server},endpoint=server`,
        '--tls-creds',
        'tls0',
        '-f',
        'raw',
        '-r',
        '-x',
        'disk',
        src,
      ],
      sock,
    );
    try {
      const r = dmtool(['copy', '--quiet', '--length', '8M', tlsUri(sock, 'disk', certs.client), out]);
      expect([r.status, r.stderr]).toEqual([0, '']);
    } finally {
      await server.stop();
    }
    expect(sha256(out)).toBe(sha256(src));
  });
});

when(nbdcopy)(
  'TCP on 127.0.0.1: nbds://127.0.0.1:PORT and nbds://localhost:PORT are checked against the certificate, by dmtool and libnbd',
  async () => {
    const port = await freePort();
    const image = path.join(dir, 'served.img');
    randomFile(image, 4 * MiB, 16);
    const server = await startServe(
      ['--dev', 'disk', `0 8192 linear ${image} 0`, '--tcp', `127.0.0.1:${port}`, '--tls-certificates', certs.server],
      path.join(dir, 'unused.sock'),
    );
    try {
      expect(server.stdout()).toContain(`export disk: ${4 * MiB} bytes, read-write: nbds://127.0.0.1:${port}/disk\n`);
      for (const host of ['127.0.0.1', 'localhost']) {
        const out = path.join(dir, `${host}.img`);
        fs.writeFileSync(out, Buffer.alloc(0));
        fs.truncateSync(out, 4 * MiB);
        const r = dmtool(['copy', '--quiet', '--length', '4M', `nbds://${host}:${port}/disk?tls-certificates=${certs.caOnly}`, out]);
        expect([host, r.status, r.stderr]).toEqual([host, 0, '']);
        expect(sha256(out)).toBe(sha256(image));
      }
      // libnbd checks the server over TCP: our CA passes, another CA does not.
      const ours = peer('nbdinfo', ['--size', `nbds://localhost:${port}/disk?tls-certificates=${certs.caOnly}`]);
      expect([ours.status, ours.stdout]).toEqual([0, `${4 * MiB}\n`]);
      const theirs = peer('nbdinfo', ['--size', `nbds://localhost:${port}/disk?tls-certificates=${otherCa.caOnly}`]);
      expect([theirs.status, theirs.stdout]).toEqual([1, '']);
      expect(theirs.stderr).toMatch(/certificate|verif/i);
    } finally {
      await server.stop();
    }
  },
);

test('a reconnection redoes TLS: the server restarted under a device that stays open, bytes exact', async () => {
  const sock = path.join(dir, 'inproc.sock');
  const memory = new MemoryDevice(MiB);
  const data = Buffer.alloc(MiB);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  await memory.write(data, 0, MiB, 0);
  const tls = { mode: 'require' as const, verifyClient: true, files: certificatesDirFiles(certs.server, 'server') };
  const serve = async () => {
    const table = new ExportTable();
    table.add('disk', memory);
    const s = new NbdServer(table, { tls, shutdownGraceMs: 100 });
    await s.listen({ socketPath: sock });
    return s;
  };
  let server = await serve();
  const device = await NbdDevice.open(tlsUri(sock, 'disk', certs.client), { write: true, reconnectDelayMs: 50 });
  try {
    const first = Buffer.alloc(4096);
    await device.read(first, 0, 4096, 0);
    expect(first.equals(data.subarray(0, 4096))).toBe(true);
    await server.close();
    server = await serve();
    const all = Buffer.alloc(MiB);
    await device.read(all, 0, MiB, 0);
    expect(all.equals(data)).toBe(true);
    expect(device.reconnections).toBe(1);
  } finally {
    device.close();
    await server.close();
  }
});
