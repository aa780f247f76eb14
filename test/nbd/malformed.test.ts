/**
 * Malformed and hostile NBD input against `dmtool serve`, from a raw socket
 * client. Every case gets the protocol's exact reply or a closed
 * connection; after each, a second client is still served, and at the end
 * the image differs from the original only by the one legitimate write.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tls from 'tls';
import {
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeRequestHeader,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_WRITE,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EPERM,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
} from '@dmtool/nbd';
import { RawClient } from '../support/nbd-client';
import { makeCerts } from '../support/tls-certs';
import { randomFile, ServeProcess, sha256, startServe } from './serve-process';

jest.setTimeout(30000);

const MiB = 1 << 20;
const IMAGE_BYTES = 8 * MiB;
const RO_BYTES = MiB;

let dir: string;
let image: string;
let expected: Buffer;
let server: ServeProcess | undefined;
let caFile: string;
const open: RawClient[] = [];

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-nbd-bad-'));
  image = path.join(dir, 'image.img');
  randomFile(image, IMAGE_BYTES, 7);
  expected = fs.readFileSync(image);
  const certs = makeCerts(path.join(dir, 'pki'));
  caFile = path.join(certs.caOnly, 'ca-cert.pem');
  server = await startServe(
    [
      '--dev',
      'disk',
      `0 ${IMAGE_BYTES / 512} linear ${image} 0`,
      '--dev',
      'ro',
      `0 ${RO_BYTES / 512} linear ${image} 0`,
      '--read-only',
      'ro',
      '--handshake-timeout',
      '1',
      // TLS offered, not required: every plaintext case below runs as before, and the STARTTLS cases can upgrade.
      '--tls',
      'on',
      '--tls-certificates',
      certs.server,
    ],
    path.join(dir, 'nbd.sock'),
  );
});

afterEach(() => {
  for (const c of open.splice(0)) c.destroy();
});

afterAll(async () => {
  try {
    const r = await server?.stop();
    expect(r).toEqual({ status: 0, signal: null });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

async function client(): Promise<RawClient> {
  const c = await RawClient.connect(server!.socketPath);
  open.push(c);
  return c;
}

/** A well-behaved second client reads 64 KiB and sees what the image should hold. */
async function stillServes(): Promise<void> {
  const c = await client();
  await c.go('disk', { structured: true });
  c.request({ type: NBD_CMD_READ, cookie: 77n, offsetBytes: MiB, lengthBytes: 65536 });
  const r = await c.reply();
  expect(r.error).toBe(0);
  expect(r.data!.equals(expected.subarray(MiB, MiB + 65536))).toBe(true);
  c.request({ type: NBD_CMD_DISC });
  expect(await c.closesWithin(3000)).toBe(true);
}

async function expectOptionReply(c: RawClient, option: number, replyType: number): Promise<void> {
  const r = await c.optionReply();
  expect({ option: r.option, replyType: r.replyType >>> 0 }).toEqual({ option, replyType });
}

/** After an error reply the stream is still in step: a good read on the same connection works. */
async function inStep(c: RawClient, structured = false): Promise<void> {
  c.request({ type: NBD_CMD_READ, cookie: 99n, offsetBytes: 0, lengthBytes: 4096 });
  const r = await c.reply(4096);
  expect({ cookie: r.cookie, error: r.error }).toEqual({ cookie: 99n, error: 0 });
  expect(r.data!.equals(expected.subarray(0, 4096))).toBe(true);
  expect(r.kind).toBe(structured ? 'structured' : 'simple');
}

/** NBD_OPT_STARTTLS acknowledged, then the client's TLS handshake: a raw client over the TLS socket. */
async function startTls(c: RawClient): Promise<RawClient> {
  await c.greeting();
  c.send(encodeOption(NBD_OPT_STARTTLS));
  await expectOptionReply(c, NBD_OPT_STARTTLS, NBD_REP_ACK);
  const t = tls.connect({ socket: c.socket, ca: fs.readFileSync(caFile), checkServerIdentity: () => undefined });
  await new Promise<void>((resolve, reject) => {
    t.once('secureConnect', resolve);
    t.once('error', reject);
  });
  const secure = RawClient.over(t);
  open.push(secure);
  return secure;
}

const handshakeCases: [string, (c: RawClient) => Promise<void>][] = [
  [
    'client flags with an unknown bit: closed',
    async (c) => {
      await c.read(18);
      c.send(encodeClientFlags(NBD_FLAG_C_FIXED_NEWSTYLE | 0x100));
      expect(await c.closesWithin(3000)).toBe(true);
    },
  ],
  [
    'an option without IHAVEOPT: closed',
    async (c) => {
      await c.greeting();
      c.send(Buffer.from('NOTANOPT' + '\0\0\0\x07\0\0\0\0', 'latin1'));
      expect(await c.closesWithin(3000)).toBe(true);
    },
  ],
  [
    'an unknown option: NBD_REP_ERR_UNSUP, and negotiation goes on',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(99, Buffer.from('whatever')));
      await expectOptionReply(c, 99, NBD_REP_ERR_UNSUP);
      await c.go('disk', { greeted: true });
      await inStep(c);
    },
  ],
  [
    'NBD_OPT_STARTTLS with data: NBD_REP_ERR_INVALID, and negotiation goes on in plaintext',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_STARTTLS, Buffer.from('data')));
      await expectOptionReply(c, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID);
      await c.go('disk', { greeted: true });
      await inStep(c);
    },
  ],
  [
    'NBD_OPT_STARTTLS twice: the second, over TLS, gets NBD_REP_ERR_INVALID, and the session goes on over TLS',
    async (c) => {
      const secure = await startTls(c);
      secure.send(encodeOption(NBD_OPT_STARTTLS));
      await expectOptionReply(secure, NBD_OPT_STARTTLS, NBD_REP_ERR_INVALID);
      await secure.go('disk', { greeted: true });
      await inStep(secure);
    },
  ],
  [
    'garbage instead of a TLS ClientHello: closed',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_STARTTLS));
      await expectOptionReply(c, NBD_OPT_STARTTLS, NBD_REP_ACK);
      c.send(Buffer.from('GET / HTTP/1.1\r\nHost: nbd\r\n\r\n'));
      expect(await c.closesWithin(3000)).toBe(true);
    },
  ],
  [
    'an option sent after NBD_OPT_STARTTLS before its ACK: closed',
    async (c) => {
      await c.greeting();
      c.send(Buffer.concat([encodeOption(NBD_OPT_STARTTLS), encodeOption(NBD_OPT_LIST)]));
      await expectOptionReply(c, NBD_OPT_STARTTLS, NBD_REP_ACK);
      expect(await c.closesWithin(3000)).toBe(true);
    },
  ],
  [
    'NBD_OPT_STARTTLS, then no handshake: closed at the handshake deadline',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_STARTTLS));
      await expectOptionReply(c, NBD_OPT_STARTTLS, NBD_REP_ACK);
      expect(await c.closesWithin(3000)).toBe(true);
    },
  ],
  [
    'NBD_OPT_LIST with data: NBD_REP_ERR_INVALID',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_LIST, Buffer.from('x')));
      await expectOptionReply(c, NBD_OPT_LIST, NBD_REP_ERR_INVALID);
    },
  ],
  [
    'NBD_OPT_GO whose name length overruns the option: NBD_REP_ERR_INVALID',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_GO, Buffer.from('0000ffff' + '6469736b' + '0000', 'hex')));
      await expectOptionReply(c, NBD_OPT_GO, NBD_REP_ERR_INVALID);
      await c.go('disk', { greeted: true });
      await inStep(c);
    },
  ],
  [
    'NBD_OPT_GO with 3 bytes of data: NBD_REP_ERR_INVALID',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_GO, Buffer.from([0, 0, 0])));
      await expectOptionReply(c, NBD_OPT_GO, NBD_REP_ERR_INVALID);
    },
  ],
  [
    'NBD_OPT_GO for an unknown export: NBD_REP_ERR_UNKNOWN',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_GO, encodeInfoRequest({ name: 'nope', infoTypes: [] })));
      await expectOptionReply(c, NBD_OPT_GO, NBD_REP_ERR_UNKNOWN);
    },
  ],
  [
    'NBD_OPT_INFO with a 5000-byte export name: NBD_REP_ERR_TOO_BIG',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_INFO, encodeInfoRequest({ name: 'n'.repeat(5000), infoTypes: [] })));
      await expectOptionReply(c, NBD_OPT_INFO, NBD_REP_ERR_TOO_BIG);
    },
  ],
  [
    'option data of 1 MiB: skipped, NBD_REP_ERR_TOO_BIG, then NBD_OPT_ABORT is acknowledged',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_INFO, Buffer.alloc(MiB, 0xff)));
      await expectOptionReply(c, NBD_OPT_INFO, NBD_REP_ERR_TOO_BIG);
      c.send(encodeOption(NBD_OPT_ABORT));
      await expectOptionReply(c, NBD_OPT_ABORT, NBD_REP_ACK);
      expect(await c.closesWithin(3000)).toBe(true);
    },
  ],
  [
    'NBD_OPT_SET_META_CONTEXT before structured replies: NBD_REP_ERR_INVALID',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: 'disk', queries: ['base:allocation'] })));
      await expectOptionReply(c, NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_INVALID);
    },
  ],
  [
    'NBD_OPT_STRUCTURED_REPLY with data: NBD_REP_ERR_INVALID',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_STRUCTURED_REPLY, Buffer.from('x')));
      await expectOptionReply(c, NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_INVALID);
    },
  ],
  [
    'NBD_OPT_EXPORT_NAME for an unknown export: closed (no error reply exists)',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_EXPORT_NAME, Buffer.from('nope')));
      expect(await c.closesWithin(3000)).toBe(true);
    },
  ],
  [
    'a handshake that never finishes: closed after --handshake-timeout',
    async (c) => {
      await c.greeting();
      const t0 = Date.now();
      await c.closed;
      expect(Date.now() - t0).toBeGreaterThanOrEqual(800);
      expect(Date.now() - t0).toBeLessThan(5000);
    },
  ],
  [
    'a client that vanishes in the middle of an option',
    async (c) => {
      await c.greeting();
      c.send(encodeOption(NBD_OPT_GO, Buffer.alloc(100)).subarray(0, 30));
      c.destroy();
    },
  ],
];

const transmissionCases: [string, (c: RawClient) => Promise<void>][] = [
  [
    'a request without NBD_REQUEST_MAGIC: closed',
    async (c) => {
      await c.go('disk');
      const h = encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookie: 1n, offsetBytes: 0, lengthBytes: 512 });
      h.writeUInt32BE(0x12560953, 0);
      c.send(Buffer.concat([h, Buffer.alloc(512, 0xee)]));
      expect(await c.closesWithin(3000)).toBe(true);
    },
  ],
  [
    'an unknown command: NBD_EINVAL, and the stream stays in step',
    async (c) => {
      await c.go('disk');
      c.request({ type: 42, cookie: 5n, lengthBytes: 512 });
      expect(await c.reply()).toMatchObject({ cookie: 5n, error: NBD_EINVAL });
      await inStep(c);
    },
  ],
  [
    'an unknown command flag: NBD_EINVAL',
    async (c) => {
      await c.go('disk');
      c.request({ type: NBD_CMD_READ, cookie: 6n, flags: 0x8000, lengthBytes: 512 });
      expect(await c.reply()).toMatchObject({ cookie: 6n, error: NBD_EINVAL });
      await inStep(c);
    },
  ],
  [
    'NBD_CMD_FLAG_DF without structured replies: NBD_EINVAL',
    async (c) => {
      await c.go('disk');
      c.request({ type: NBD_CMD_READ, cookie: 7n, flags: NBD_CMD_FLAG_DF, lengthBytes: 512 });
      expect(await c.reply()).toMatchObject({ cookie: 7n, error: NBD_EINVAL });
    },
  ],
  [
    'a read of length 0: NBD_EINVAL',
    async (c) => {
      await c.go('disk');
      c.request({ type: NBD_CMD_READ, cookie: 8n, lengthBytes: 0 });
      expect(await c.reply()).toMatchObject({ cookie: 8n, error: NBD_EINVAL });
    },
  ],
  [
    'a read beyond the end, and one at offset 2^64-512: NBD_EINVAL (structured error chunks)',
    async (c) => {
      await c.go('disk', { structured: true });
      c.request({ type: NBD_CMD_READ, cookie: 9n, offsetBytes: IMAGE_BYTES - 512, lengthBytes: 1024 });
      const r = await c.reply();
      expect(r).toMatchObject({ kind: 'structured', cookie: 9n, error: NBD_EINVAL });
      expect(r.message).toMatch(/beyond the export end/);
      const h = encodeRequestHeader({ flags: 0, type: NBD_CMD_READ, cookie: 10n, offsetBytes: 0, lengthBytes: 512 });
      h.writeBigUInt64BE(0xfffffffffffffe00n, 16);
      c.send(h);
      expect(await c.reply()).toMatchObject({ cookie: 10n, error: NBD_EINVAL });
      await inStep(c, true);
    },
  ],
  [
    'a read of 64 MiB: NBD_EINVAL',
    async (c) => {
      await c.go('disk');
      c.request({ type: NBD_CMD_READ, cookie: 11n, lengthBytes: 64 * MiB });
      expect(await c.reply()).toMatchObject({ cookie: 11n, error: NBD_EINVAL });
      await inStep(c);
    },
  ],
  [
    'a write beyond the end: NBD_ENOSPC, its payload consumed',
    async (c) => {
      await c.go('disk');
      c.request({ type: NBD_CMD_WRITE, cookie: 13n, offsetBytes: IMAGE_BYTES - 4096 }, Buffer.alloc(8192, 0xee));
      expect(await c.reply()).toMatchObject({ cookie: 13n, error: NBD_ENOSPC });
      await inStep(c);
    },
  ],
  [
    'a write of 64 MiB: closed before any of it is written',
    async (c) => {
      await c.go('disk');
      c.send(encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookie: 14n, offsetBytes: 0, lengthBytes: 64 * MiB }));
      c.send(Buffer.alloc(MiB, 0xee));
      expect(await c.closesWithin(3000)).toBe(true);
    },
  ],
  [
    'a write to the read-only export: NBD_EPERM',
    async (c) => {
      await c.go('ro');
      c.request({ type: NBD_CMD_WRITE, cookie: 15n }, Buffer.alloc(4096, 0xee));
      expect(await c.reply()).toMatchObject({ cookie: 15n, error: NBD_EPERM });
      await inStep(c);
    },
  ],
  [
    'a flush with an offset and length: NBD_EINVAL',
    async (c) => {
      await c.go('disk');
      c.request({ type: NBD_CMD_FLUSH, cookie: 16n, offsetBytes: 4096, lengthBytes: 4096 });
      expect(await c.reply()).toMatchObject({ cookie: 16n, error: NBD_EINVAL });
    },
  ],
  [
    'block status without a metadata context: NBD_EINVAL',
    async (c) => {
      await c.go('disk', { structured: true });
      c.request({ type: NBD_CMD_BLOCK_STATUS, cookie: 17n, lengthBytes: 4096 });
      expect(await c.reply()).toMatchObject({ cookie: 17n, error: NBD_EINVAL });
    },
  ],
  [
    'a client that vanishes in the middle of a write payload: none of it is written',
    async (c) => {
      await c.go('disk');
      c.send(encodeRequestHeader({ flags: 0, type: NBD_CMD_WRITE, cookie: 18n, offsetBytes: 0, lengthBytes: MiB }));
      c.send(Buffer.alloc(65536, 0xee));
      await new Promise((r) => setTimeout(r, 100));
      c.destroy();
    },
  ],
  [
    'NBD_CMD_DISC with requests in flight: they are answered, then the connection closes',
    async (c) => {
      await c.go('disk');
      for (let i = 0; i < 8; i++) c.request({ type: NBD_CMD_READ, cookie: BigInt(100 + i), offsetBytes: i * 4096, lengthBytes: 4096 });
      c.request({ type: NBD_CMD_DISC });
      const cookies: bigint[] = [];
      for (let i = 0; i < 8; i++) cookies.push((await c.reply(4096)).cookie);
      expect(cookies.sort()).toEqual(Array.from({ length: 8 }, (_, i) => BigInt(100 + i)));
      expect(await c.closesWithin(3000)).toBe(true);
    },
  ],
  [
    'the one legitimate write (FUA) lands',
    async (c) => {
      await c.go('disk');
      const data = Buffer.alloc(8192, 0x3c);
      c.request({ type: NBD_CMD_WRITE, cookie: 19n, flags: NBD_CMD_FLAG_FUA, offsetBytes: 2 * MiB }, data);
      expect(await c.reply()).toMatchObject({ cookie: 19n, error: 0 });
      data.copy(expected, 2 * MiB);
    },
  ],
];

test.each([...handshakeCases, ...transmissionCases])('%s; the server still serves others', async (_, run) => {
  await run(await client());
  await stillServes();
});

test('the image holds exactly the legitimate write', () => {
  expect(sha256(image)).toBe(sha256Of(expected));
  expect(server!.stderr()).not.toMatch(/TypeError|RangeError|at .*\.js/);
});

function sha256Of(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}
