/**
 * The client's handshake against scripted servers on a real unix socket:
 * each script sends exactly the bytes a test builds with the codec, so the
 * fallbacks and refusals that nbdkit and qemu-nbd never produce are covered.
 */
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import {
  decodeClientFlags,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfo,
  encodeMetaContextReplyData,
  encodeOptionReply,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_HAS_FLAGS,
  NBD_FLAG_NO_ZEROES,
  NBD_FLAG_SEND_FLUSH,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  OPTION_HEADER_BYTES,
  ExportRefused,
  negotiateClient,
  SocketReader,
} from '@dmtool/nbd';

type Script = (reader: SocketReader, send: (b: Buffer) => void) => Promise<void>;

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-nbd-neg-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Run `script` as the server for one connection and the client's handshake against it. */
async function handshake(script: Script, exportName = 'disk', startTls?: () => Promise<void>) {
  const sock = path.join(dir, 's.sock');
  const seen: string[] = [];
  const server = net.createServer((c) => {
    c.on('error', () => undefined);
    const r = new SocketReader(c);
    script(r, (b) => c.write(b))
      .catch((e) => seen.push(`server: ${e.message}`))
      .finally(() => c.end());
  });
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  const client = net.connect({ path: sock });
  client.on('error', () => undefined);
  try {
    await new Promise((resolve) => client.once('connect', resolve));
    const reader = new SocketReader(client);
    return await negotiateClient({ reader, send: (b) => client.write(b), timeoutMs: 5000, startTls }, exportName);
  } finally {
    client.destroy();
    await new Promise((resolve) => server.close(resolve));
    expect(seen).toEqual([]);
  }
}

async function option(r: SocketReader): Promise<{ option: number; data: Buffer }> {
  const h = decodeOptionHeader(await r.read(OPTION_HEADER_BYTES, 5000));
  return { option: h.option, data: h.dataBytes ? await r.read(h.dataBytes, 5000) : Buffer.alloc(0) };
}

const FLAGS = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH;

/** The client asks for base:allocation once structured replies are agreed; this server does not know the option. */
async function refuseMetaContext(r: SocketReader, send: (b: Buffer) => void): Promise<void> {
  expect((await option(r)).option).toBe(NBD_OPT_SET_META_CONTEXT);
  send(encodeOptionReply(NBD_OPT_SET_META_CONTEXT, NBD_REP_ERR_UNSUP));
}

test('GO with block sizes, after structured replies are agreed', async () => {
  const got = await handshake(async (r, send) => {
    send(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
    expect(decodeClientFlags(await r.read(4, 5000))).toBe(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
    expect((await option(r)).option).toBe(NBD_OPT_STRUCTURED_REPLY);
    send(encodeOptionReply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK));
    const meta = await option(r);
    expect(meta.option).toBe(NBD_OPT_SET_META_CONTEXT);
    expect(decodeMetaContextRequest(meta.data, 8)).toEqual({ exportName: 'disk', queries: ['base:allocation'] });
    send(encodeOptionReply(NBD_OPT_SET_META_CONTEXT, NBD_REP_META_CONTEXT, encodeMetaContextReplyData(7, 'base:allocation')));
    send(encodeOptionReply(NBD_OPT_SET_META_CONTEXT, NBD_REP_ACK));
    const go = await option(r);
    expect(go.option).toBe(NBD_OPT_GO);
    expect(decodeInfoRequest(go.data)).toEqual({ name: 'disk', infoTypes: [NBD_INFO_BLOCK_SIZE] });
    send(encodeOptionReply(NBD_OPT_GO, NBD_REP_INFO, encodeInfo({ type: NBD_INFO_EXPORT, sizeBytes: 1 << 20, transmissionFlags: FLAGS })));
    send(
      encodeOptionReply(
        NBD_OPT_GO,
        NBD_REP_INFO,
        encodeInfo({ type: NBD_INFO_BLOCK_SIZE, minimumBytes: 512, preferredBytes: 4096, maximumBytes: 1 << 20 }),
      ),
    );
    send(encodeOptionReply(NBD_OPT_GO, NBD_REP_ACK));
  });
  expect(got).toEqual({
    sizeBytes: 1 << 20,
    transmissionFlags: FLAGS,
    structuredReplies: true,
    blockSizes: { type: NBD_INFO_BLOCK_SIZE, minimumBytes: 512, preferredBytes: 4096, maximumBytes: 1 << 20 },
    allocationContextId: 7,
  });
});

test('a server without GO or structured replies: EXPORT_NAME, simple replies, with the 124 zero bytes', async () => {
  const got = await handshake(async (r, send) => {
    send(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE));
    expect(decodeClientFlags(await r.read(4, 5000))).toBe(NBD_FLAG_C_FIXED_NEWSTYLE);
    expect((await option(r)).option).toBe(NBD_OPT_STRUCTURED_REPLY);
    send(encodeOptionReply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_UNSUP));
    expect((await option(r)).option).toBe(NBD_OPT_GO);
    send(encodeOptionReply(NBD_OPT_GO, NBD_REP_ERR_UNSUP));
    const en = await option(r);
    expect([en.option, en.data.toString()]).toEqual([NBD_OPT_EXPORT_NAME, 'disk']);
    send(encodeExportNameReply(3 << 20, FLAGS, false));
  });
  expect(got).toEqual({ sizeBytes: 3 << 20, transmissionFlags: FLAGS, structuredReplies: false });
});

test('block sizes that break the protocol are ignored', async () => {
  const got = await handshake(async (r, send) => {
    send(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
    await r.read(4, 5000);
    await option(r);
    send(encodeOptionReply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK));
    await refuseMetaContext(r, send);
    await option(r);
    send(encodeOptionReply(NBD_OPT_GO, NBD_REP_INFO, encodeInfo({ type: NBD_INFO_EXPORT, sizeBytes: 4096, transmissionFlags: FLAGS })));
    send(
      encodeOptionReply(
        NBD_OPT_GO,
        NBD_REP_INFO,
        encodeInfo({ type: NBD_INFO_BLOCK_SIZE, minimumBytes: 3, preferredBytes: 4096, maximumBytes: 4096 }),
      ),
    );
    send(encodeOptionReply(NBD_OPT_GO, NBD_REP_ACK));
  });
  expect([got.blockSizes, got.allocationContextId]).toEqual([undefined, undefined]);
});

async function refusedWith(script: Script, startTls?: () => Promise<void>): Promise<ExportRefused> {
  try {
    await handshake(script, 'x', startTls);
  } catch (e) {
    expect(e).toBeInstanceOf(ExportRefused);
    return e as ExportRefused;
  }
  throw new Error('expected a refusal');
}

function goRefusal(replyType: number, message: string): Script {
  return async (r, send) => {
    send(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
    await r.read(4, 5000);
    await option(r);
    send(encodeOptionReply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK));
    await refuseMetaContext(r, send);
    await option(r);
    send(encodeOptionReply(NBD_OPT_GO, replyType, Buffer.from(message)));
  };
}

test('an unknown export is ENOENT with the server message; TLS required is EACCES', async () => {
  const unknown = await refusedWith(goRefusal(NBD_REP_ERR_UNKNOWN, 'no such export'));
  expect([unknown.code, unknown.message]).toEqual(['ENOENT', 'the server has no export named "x": no such export']);
  const tls = await refusedWith(goRefusal(NBD_REP_ERR_TLS_REQD, 'TLS first'));
  expect([tls.code, tls.message]).toEqual([
    'EACCES',
    'the server requires TLS (NBD_REP_ERR_TLS_REQD): use nbds:// or nbds+unix:// with tls-certificates=DIR',
  ]);
});

test('TLS wanted: NBD_OPT_STARTTLS is the first option, and a server that refuses it is EACCES without another option', async () => {
  for (const [reply, name] of [
    [NBD_REP_ERR_UNSUP, 'NBD_REP_ERR_UNSUP'],
    [NBD_REP_ERR_POLICY, 'NBD_REP_ERR_POLICY'],
  ] as const) {
    const options: number[] = [];
    const e = await refusedWith(
      async (r, send) => {
        send(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
        await r.read(4, 5000);
        const o = await option(r);
        options.push(o.option, o.data.length);
        send(encodeOptionReply(NBD_OPT_STARTTLS, reply));
        await r.read(1, 5000).catch(() => undefined);
      },
      () => Promise.reject(new Error('upgraded without an ACK')),
    );
    expect([e.code, e.message, options]).toEqual([
      'EACCES',
      `the server does not offer TLS (${name} to NBD_OPT_STARTTLS)`,
      [NBD_OPT_STARTTLS, 0],
    ]);
  }
});

test('TLS required and not wanted: refused at the first option, NBD_OPT_GO is never sent', async () => {
  const options: number[] = [];
  const e = await refusedWith(async (r, send) => {
    send(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
    await r.read(4, 5000);
    options.push((await option(r)).option);
    send(encodeOptionReply(NBD_OPT_STRUCTURED_REPLY, NBD_REP_ERR_TLS_REQD));
    await r.read(1, 5000).catch(() => undefined);
  });
  expect([e.message, options]).toEqual([
    'the server requires TLS (NBD_REP_ERR_TLS_REQD): use nbds:// or nbds+unix:// with tls-certificates=DIR',
    [NBD_OPT_STRUCTURED_REPLY],
  ]);
});

test('a server that is not fixed newstyle is refused', async () => {
  const e = await refusedWith(async (r, send) => {
    send(encodeGreeting(0));
    await r.read(4, 5000).catch(() => undefined);
  });
  expect([e.code, e.message]).toEqual(['EPROTO', 'the server does not speak fixed newstyle NBD']);
});
