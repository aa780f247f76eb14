import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { BlockDevice, MemoryDevice, WriteOptions } from '@dmtool/devices';
import {
  ExportTable,
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_REQ_ONE,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_EINVAL,
  NBD_ENOSPC,
  NBD_EOVERFLOW,
  NBD_EPERM,
  NBD_ESHUTDOWN,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NbdServer,
  ServerOptions,
} from '@dmtool/nbd';
import { RawClient } from '../../../test/support/nbd-client';

jest.setTimeout(20000);

/** A memory device that logs operations and can hold writes until released. */
class GatedDevice extends MemoryDevice {
  readonly log: string[] = [];
  writesStarted = 0;
  private gate: Promise<void> | undefined;
  private openGate: (() => void) | undefined;

  hold(): void {
    this.gate = new Promise((resolve) => (this.openGate = resolve));
  }

  release(): void {
    this.openGate?.();
    this.gate = undefined;
  }

  override async write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, opts?: WriteOptions): Promise<void> {
    this.writesStarted++;
    if (this.gate) await this.gate;
    await super.write(buf, bufOffset, bytes, byteOffset, opts);
    this.log.push(`write ${byteOffset}+${bytes}${opts?.fua ? ' fua' : ''}`);
  }

  override async zeroRange(byteOffset: number, bytes: number, opts?: WriteOptions): Promise<void> {
    await super.zeroRange(byteOffset, bytes, opts);
    this.log.push(`zero ${byteOffset}+${bytes}${opts?.fua ? ' fua' : ''}`);
  }

  override async read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    if (this.gate && byteOffset === 0) await this.gate;
    await super.read(buf, bufOffset, bytes, byteOffset);
  }

  override async flush(): Promise<void> {
    await super.flush();
    this.log.push('flush');
  }
}

let dir: string;
const servers: NbdServer[] = [];
const clients: RawClient[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-nbd-'));
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await Promise.all(servers.splice(0).map((s) => s.close()));
  fs.rmSync(dir, { recursive: true, force: true });
});

async function serve(devices: Record<string, BlockDevice>, opts: ServerOptions = {}, readOnly: string[] = []): Promise<string> {
  const table = new ExportTable();
  for (const [name, d] of Object.entries(devices)) table.add(name, d, { readOnly: readOnly.includes(name) });
  const server = new NbdServer(table, opts);
  const socketPath = path.join(dir, 'nbd.sock');
  await server.listen({ socketPath });
  servers.push(server);
  return socketPath;
}

async function connect(socketPath: string): Promise<RawClient> {
  const c = await RawClient.connect(socketPath);
  clients.push(c);
  return c;
}

const pattern = (bytes: number, seed: number) => Buffer.from(Array.from({ length: bytes }, (_, i) => (i * 7 + seed) & 0xff));

test('the socket is created mode 0600 and removed on close', async () => {
  const socketPath = await serve({ disk: new MemoryDevice(1 << 20) });
  expect(fs.statSync(socketPath).mode & 0o777).toBe(0o600);
  await servers.pop()!.close();
  expect(fs.existsSync(socketPath)).toBe(false);
});

test('a stale socket file is replaced; a live socket and other files are refused', async () => {
  const socketPath = path.join(dir, 'nbd.sock');
  const holder = net.createServer().listen(socketPath);
  await new Promise((r) => holder.once('listening', r));
  const live = new NbdServer(new ExportTable());
  await expect(live.listen({ socketPath })).rejects.toMatchObject({ code: 'EADDRINUSE' });
  await new Promise((r) => holder.close(r));
  // What a killed server leaves behind: a socket file nobody listens on.
  execFileSync('python3', ['-c', 'import socket,sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])', socketPath]);
  expect(fs.lstatSync(socketPath).isSocket()).toBe(true);
  await live.listen({ socketPath });
  servers.push(live);
  const other = path.join(dir, 'plain');
  fs.writeFileSync(other, 'x');
  await expect(new NbdServer(new ExportTable()).listen({ socketPath: other })).rejects.toMatchObject({ code: 'EEXIST' });
});

test('GO reports size, flags and block sizes; the empty name is the first export', async () => {
  const socketPath = await serve({ disk: new MemoryDevice(1 << 20), ro: new MemoryDevice(4096) }, {}, ['ro']);
  const rw = await (await connect(socketPath)).go('');
  expect(rw.sizeBytes).toBe(1 << 20);
  expect(rw.transmissionFlags & NBD_FLAG_READ_ONLY).toBe(0);
  expect(rw.transmissionFlags & (NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_CAN_MULTI_CONN)).toBe(
    NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_CAN_MULTI_CONN,
  );
  expect(rw.infos).toContainEqual({ type: 3, minimumBytes: 512, preferredBytes: 4096, maximumBytes: 32 << 20 });
  const ro = await (await connect(socketPath)).go('ro');
  expect(ro.transmissionFlags & NBD_FLAG_READ_ONLY).toBe(NBD_FLAG_READ_ONLY);
  expect(ro.transmissionFlags & NBD_FLAG_SEND_TRIM).toBe(0);
});

test.each([
  ['simple replies', false],
  ['structured replies', true],
])('write then read back (%s)', async (_, structured) => {
  const dev = new MemoryDevice(1 << 20);
  const c = await connect(await serve({ disk: dev }));
  await c.go('disk', { structured });
  c.request({ type: NBD_CMD_WRITE, cookie: 11n, offsetBytes: 4096 }, pattern(8192, 1));
  expect(await c.reply()).toMatchObject({ cookie: 11n, error: 0 });
  c.request({ type: NBD_CMD_READ, cookie: 12n, offsetBytes: 4096, lengthBytes: 8192 });
  const r = await c.reply(8192);
  expect(r).toMatchObject({ cookie: 12n, error: 0, kind: structured ? 'structured' : 'simple' });
  expect(r.data!.equals(pattern(8192, 1))).toBe(true);
});

test("a write is acknowledged only after the device completed it; FUA is the device write's, not a flush", async () => {
  const dev = new GatedDevice(1 << 20);
  const c = await connect(await serve({ disk: dev }));
  await c.go('disk');
  dev.hold();
  c.request({ type: NBD_CMD_WRITE, cookie: 1n, flags: NBD_CMD_FLAG_FUA }, pattern(4096, 3));
  await expect(c.reply(0, 300)).rejects.toThrow(/timed out/);
  dev.release();
  expect(await c.reply()).toMatchObject({ cookie: 1n, error: 0 });
  expect(dev.log).toEqual(['write 0+4096 fua']);
  c.request({ type: NBD_CMD_WRITE, cookie: 2n, offsetBytes: 4096 }, pattern(512, 4));
  expect(await c.reply()).toMatchObject({ cookie: 2n, error: 0 });
  c.request({ type: NBD_CMD_WRITE_ZEROES, cookie: 3n, offsetBytes: 8192, lengthBytes: 4096, flags: NBD_CMD_FLAG_FUA });
  expect(await c.reply()).toMatchObject({ cookie: 3n, error: 0 });
  c.request({ type: NBD_CMD_FLUSH, cookie: 4n });
  expect(await c.reply()).toMatchObject({ cookie: 4n, error: 0 });
  expect(dev.log).toEqual(['write 0+4096 fua', 'write 4096+512', 'zero 8192+4096 fua', 'flush']);
});

test('requests on one connection run concurrently and replies come back as they finish', async () => {
  const dev = new GatedDevice(1 << 20);
  const c = await connect(await serve({ disk: dev }));
  await c.go('disk', { structured: true });
  dev.hold();
  c.request({ type: NBD_CMD_READ, cookie: 1n, offsetBytes: 0, lengthBytes: 512 });
  c.request({ type: NBD_CMD_READ, cookie: 2n, offsetBytes: 512, lengthBytes: 512 });
  expect((await c.reply()).cookie).toBe(2n);
  dev.release();
  expect((await c.reply()).cookie).toBe(1n);
});

test('read-only exports refuse writes, trims and zeroing with EPERM; the data stays', async () => {
  const dev = new MemoryDevice(1 << 20);
  await dev.write(pattern(4096, 5), 0, 4096, 0);
  const c = await connect(await serve({ ro: dev }, {}, ['ro']));
  await c.go('ro');
  c.request({ type: NBD_CMD_WRITE, cookie: 1n }, Buffer.alloc(4096));
  expect(await c.reply()).toMatchObject({ cookie: 1n, error: NBD_EPERM });
  c.request({ type: NBD_CMD_TRIM, cookie: 2n, lengthBytes: 4096 });
  expect(await c.reply()).toMatchObject({ cookie: 2n, error: NBD_EPERM });
  c.request({ type: NBD_CMD_WRITE_ZEROES, cookie: 3n, lengthBytes: 4096 });
  expect(await c.reply()).toMatchObject({ cookie: 3n, error: NBD_EPERM });
  c.request({ type: NBD_CMD_READ, cookie: 4n, lengthBytes: 4096 });
  expect((await c.reply(4096)).data!.equals(pattern(4096, 5))).toBe(true);
});

test('beyond the end: reads and trims get EINVAL, writes and zeroing ENOSPC, and the stream stays in step', async () => {
  const c = await connect(await serve({ disk: new MemoryDevice(1 << 20) }));
  await c.go('disk');
  c.request({ type: NBD_CMD_READ, cookie: 1n, offsetBytes: (1 << 20) - 512, lengthBytes: 1024 });
  expect(await c.reply()).toMatchObject({ cookie: 1n, error: NBD_EINVAL });
  c.request({ type: NBD_CMD_WRITE, cookie: 2n, offsetBytes: 1 << 20 }, pattern(4096, 1));
  expect(await c.reply()).toMatchObject({ cookie: 2n, error: NBD_ENOSPC });
  c.request({ type: NBD_CMD_WRITE_ZEROES, cookie: 3n, offsetBytes: 1 << 20, lengthBytes: 512 });
  expect(await c.reply()).toMatchObject({ cookie: 3n, error: NBD_ENOSPC });
  c.request({ type: NBD_CMD_TRIM, cookie: 4n, offsetBytes: 2 ** 60, lengthBytes: 512 });
  expect(await c.reply()).toMatchObject({ cookie: 4n, error: NBD_EINVAL });
  c.request({ type: NBD_CMD_READ, cookie: 5n, lengthBytes: 512 });
  expect(await c.reply(512)).toMatchObject({ cookie: 5n, error: 0 });
});

test('a read over 32 MiB inside the export: NBD_EINVAL with simple replies, NBD_EOVERFLOW with structured ones', async () => {
  const socketPath = await serve({ disk: new MemoryDevice(128 << 20) });
  const simple = await connect(socketPath);
  await simple.go('disk');
  simple.request({ type: NBD_CMD_READ, cookie: 1n, lengthBytes: 64 << 20 });
  expect(await simple.reply()).toMatchObject({ cookie: 1n, error: NBD_EINVAL });
  const structured = await connect(socketPath);
  await structured.go('disk', { structured: true });
  structured.request({ type: NBD_CMD_READ, cookie: 2n, lengthBytes: 64 << 20 });
  expect(await structured.reply()).toMatchObject({ cookie: 2n, error: NBD_EOVERFLOW });
  structured.request({ type: NBD_CMD_READ, cookie: 3n, lengthBytes: 32 << 20 });
  expect(await structured.reply()).toMatchObject({ cookie: 3n, error: 0 });
});

test('block status needs a selected context; then reports the range as allocated data', async () => {
  const socketPath = await serve({ disk: new MemoryDevice(1 << 20) });
  const plain = await connect(socketPath);
  await plain.go('disk', { structured: true });
  plain.request({ type: NBD_CMD_BLOCK_STATUS, cookie: 1n, lengthBytes: 4096 });
  expect(await plain.reply()).toMatchObject({ cookie: 1n, error: NBD_EINVAL });
  const c = await connect(socketPath);
  await c.go('disk', { allocation: true });
  c.request({ type: NBD_CMD_BLOCK_STATUS, cookie: 2n, offsetBytes: 8192, lengthBytes: 65536, flags: NBD_CMD_FLAG_REQ_ONE });
  const r = await c.reply();
  expect(r.error).toBe(0);
  expect(r.blockStatus!.toString('hex')).toBe('00000001' + '00010000' + '00000000');
});

test('a client cannot hold more than its byte budget: writes beyond it wait unread', async () => {
  const dev = new GatedDevice(256 << 20);
  const c = await connect(await serve({ disk: dev }, { maxConnections: 1, connectionBudgetBytes: 64 << 20, serverBudgetBytes: 64 << 20 }));
  await c.go('disk');
  dev.hold();
  const big = Buffer.alloc(32 << 20, 1);
  for (let i = 0; i < 4; i++) c.request({ type: NBD_CMD_WRITE, cookie: BigInt(i), offsetBytes: i * big.length }, big);
  expect(await waitFor(() => dev.writesStarted === 2, 10000)).toBe(true);
  await sleep(300);
  expect(dev.writesStarted).toBe(2);
  dev.release();
  const cookies = new Set<bigint>();
  for (let i = 0; i < 4; i++) {
    const r = await c.reply(0, 10000);
    expect(r.error).toBe(0);
    cookies.add(r.cookie);
  }
  expect(cookies.size).toBe(4);
});

test('connections beyond the limit are closed; those within are served', async () => {
  const socketPath = await serve({ disk: new MemoryDevice(1 << 20) }, { maxConnections: 2 });
  const a = await connect(socketPath);
  const b = await connect(socketPath);
  await a.greeting();
  await b.greeting();
  const third = await connect(socketPath);
  expect(await third.closesWithin(2000)).toBe(true);
  b.destroy();
  await new Promise((r) => setTimeout(r, 100));
  const fourth = await connect(socketPath);
  await fourth.go('disk');
});

test('a handshake that never finishes is closed after the deadline; others are served', async () => {
  const socketPath = await serve({ disk: new MemoryDevice(1 << 20) }, { handshakeTimeoutMs: 300 });
  const idle = await connect(socketPath);
  const t0 = Date.now();
  await idle.read(18);
  expect(await idle.closesWithin(3000)).toBe(true);
  const other = await connect(socketPath);
  await other.go('disk');
  expect(Date.now() - t0).toBeLessThan(5000);
});

test('a client that stops mid-payload is cut after the payload deadline and its bytes are freed', async () => {
  const dev = new MemoryDevice(64 << 20);
  const socketPath = await serve(
    { disk: dev },
    { maxConnections: 1, payloadTimeoutMs: 2000, connectionBudgetBytes: 32 << 20, serverBudgetBytes: 32 << 20 },
  );
  const server = servers[servers.length - 1];
  const stuck = await connect(socketPath);
  await stuck.go('disk');
  stuck.request({ type: NBD_CMD_WRITE, cookie: 1n, lengthBytes: 32 << 20 });
  stuck.send(Buffer.alloc(1 << 20));
  await stuck.closed;
  expect(await waitFor(() => server.connectionCount === 0, 5000)).toBe(true);
  const next = await connect(socketPath);
  await next.go('disk');
  next.request({ type: NBD_CMD_WRITE, cookie: 2n }, Buffer.alloc(32 << 20, 2));
  expect(await next.reply(0, 10000)).toMatchObject({ cookie: 2n, error: 0 });
});

test('close: requests in flight are answered, later ones get ESHUTDOWN, then the connection ends', async () => {
  const dev = new GatedDevice(1 << 20);
  const socketPath = await serve({ disk: dev });
  const c = await connect(socketPath);
  await c.go('disk');
  dev.hold();
  c.request({ type: NBD_CMD_WRITE, cookie: 1n }, pattern(4096, 9));
  await new Promise((r) => setTimeout(r, 100));
  const server = servers.pop()!;
  const closing = server.close();
  c.request({ type: NBD_CMD_READ, cookie: 2n, lengthBytes: 512 });
  await new Promise((r) => setTimeout(r, 100));
  dev.release();
  const replies = [await c.reply(), await c.reply()];
  expect(replies).toContainEqual(expect.objectContaining({ cookie: 1n, error: 0 }));
  expect(replies).toContainEqual(expect.objectContaining({ cookie: 2n, error: NBD_ESHUTDOWN }));
  await c.closed;
  await closing;
  const back = Buffer.alloc(4096);
  await dev.read(back, 0, 4096, 0);
  expect(back.equals(pattern(4096, 9))).toBe(true);
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** `p`'s value, or undefined once `ms` have passed. */
async function within<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The device bytes at 0..data.length after `c`'s write of `data` (cookie 1) met a server close: answered and applied, or not applied. */
async function expectAnsweredOrUntouched(c: RawClient, closing: Promise<void>, dev: BlockDevice, data: Buffer): Promise<void> {
  const replies = [];
  for (;;) {
    const r = await c.reply(0, 3000).catch(() => undefined);
    if (!r) break;
    replies.push(r);
  }
  c.socket.end();
  expect(
    await within(
      c.closed.then(() => true),
      5000,
    ),
  ).toBe(true);
  await closing;
  const back = Buffer.alloc(data.length);
  await dev.read(back, 0, data.length, 0);
  const reply = replies.find((r) => r.cookie === 1n);
  if (reply) {
    expect(reply.error).toBe(0);
    expect(back.equals(data)).toBe(true);
  } else {
    expect(back.equals(Buffer.alloc(data.length))).toBe(true);
  }
}

test('close while a write payload is still arriving: the write is answered and applied, or not applied at all', async () => {
  const dev = new MemoryDevice(1 << 20);
  const c = await connect(await serve({ disk: dev }, { shutdownGraceMs: 2000 }));
  await c.go('disk');
  // Keeps sending after the server's FIN, as a client in the middle of a payload may.
  (c.socket as { allowHalfOpen: boolean }).allowHalfOpen = true;
  const data = pattern(65536, 4);
  c.request({ type: NBD_CMD_WRITE, cookie: 1n, lengthBytes: data.length });
  c.send(data.subarray(0, 1024));
  await sleep(100);
  const closing = servers.pop()!.close();
  await sleep(100);
  c.send(data.subarray(1024));
  await expectAnsweredOrUntouched(c, closing, dev, data);
});

test('close while a write waits for a request slot: the write is answered and applied, or not applied at all', async () => {
  const dev = new GatedDevice(1 << 20);
  const c = await connect(await serve({ disk: dev }, { shutdownGraceMs: 2000, maxRequestsInFlight: 1 }));
  await c.go('disk', { structured: true });
  dev.hold();
  c.request({ type: NBD_CMD_READ, cookie: 2n, offsetBytes: 0, lengthBytes: 512 });
  const data = pattern(65536, 6);
  c.request({ type: NBD_CMD_WRITE, cookie: 1n, offsetBytes: 0 }, data);
  await sleep(100);
  const closing = servers.pop()!.close();
  await sleep(100);
  dev.release();
  await expectAnsweredOrUntouched(c, closing, dev, data);
});

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > until) return false;
    await sleep(20);
  }
  return true;
}

test('a client that pipelines requests and never reads the replies: what is queued for it stays bounded, others are served', async () => {
  const backlogBytes = 64 << 10;
  const dev = new MemoryDevice(1 << 20);
  const socketPath = await serve({ disk: dev }, { replyBacklogBytes: backlogBytes, replyDrainTimeoutMs: 2000 });
  const server = servers[servers.length - 1];
  const greedy = await connect(socketPath);
  await greedy.go('disk', { allocation: true });
  greedy.socket.pause();
  for (let i = 0; i < 60000; i++) {
    const kind = i % 3;
    if (kind === 0) greedy.request({ type: NBD_CMD_BLOCK_STATUS, cookie: BigInt(i), lengthBytes: 4096 });
    else if (kind === 1) greedy.request({ type: NBD_CMD_CACHE, cookie: BigInt(i), lengthBytes: 4096 });
    else greedy.request({ type: NBD_CMD_READ, cookie: BigInt(i), offsetBytes: 1 << 20, lengthBytes: 4096 });
  }
  let maxQueuedBytes = 0;
  const sampling = setInterval(() => (maxQueuedBytes = Math.max(maxQueuedBytes, server.queuedReplyBytes)), 5);
  try {
    await sleep(1000);
    const other = await connect(socketPath);
    await other.go('disk');
    other.request({ type: NBD_CMD_WRITE, cookie: 1n }, pattern(4096, 2));
    expect(await other.reply(0, 3000)).toMatchObject({ cookie: 1n, error: 0 });
    other.request({ type: NBD_CMD_READ, cookie: 2n, lengthBytes: 4096 });
    expect((await other.reply(4096, 3000)).data!.equals(pattern(4096, 2))).toBe(true);
    // Past the drain deadline the greedy connection is closed; only the other one is left.
    expect(await waitFor(() => server.connectionCount === 1, 5000)).toBe(true);
  } finally {
    clearInterval(sampling);
  }
  // The backlog, plus the replies of the requests that were running when it was reached.
  expect(maxQueuedBytes).toBeGreaterThan(0);
  expect(maxQueuedBytes).toBeLessThan(backlogBytes + 64 * 256);
});

test('clients that stop reading their read replies cannot starve a fresh client while the server budget holds one more connection budget', async () => {
  const dev = new MemoryDevice(64 << 20);
  const socketPath = await serve(
    { disk: dev },
    { maxConnections: 3, connectionBudgetBytes: 32 << 20, serverBudgetBytes: 96 << 20, replyDrainTimeoutMs: 15000 },
  );
  for (let n = 0; n < 2; n++) {
    const stalled = await connect(socketPath);
    await stalled.go('disk');
    stalled.socket.pause();
    for (let i = 0; i < 3; i++) stalled.request({ type: NBD_CMD_READ, cookie: BigInt(i), offsetBytes: 0, lengthBytes: 32 << 20 });
  }
  await sleep(500);
  const fresh = await connect(socketPath);
  await fresh.go('disk');
  fresh.request({ type: NBD_CMD_WRITE, cookie: 1n, offsetBytes: 4096 }, pattern(4096, 8));
  expect(await fresh.reply(0, 3000)).toMatchObject({ cookie: 1n, error: 0 });
  fresh.request({ type: NBD_CMD_READ, cookie: 2n, offsetBytes: 4096, lengthBytes: 4096 });
  expect((await fresh.reply(4096, 3000)).data!.equals(pattern(4096, 8))).toBe(true);
});

test('a read reply the client does not read within the deadline closes the connection and frees its bytes', async () => {
  const dev = new MemoryDevice(64 << 20);
  const socketPath = await serve(
    { disk: dev },
    { maxConnections: 1, connectionBudgetBytes: 32 << 20, serverBudgetBytes: 32 << 20, replyDrainTimeoutMs: 500 },
  );
  const server = servers[servers.length - 1];
  const stalled = await connect(socketPath);
  await stalled.go('disk');
  stalled.socket.pause();
  stalled.request({ type: NBD_CMD_READ, cookie: 1n, lengthBytes: 32 << 20 });
  expect(await waitFor(() => server.connectionCount === 0, 5000)).toBe(true);
  const next = await connect(socketPath);
  await next.go('disk');
  next.request({ type: NBD_CMD_READ, cookie: 2n, lengthBytes: 32 << 20 });
  expect(await next.reply(32 << 20, 10000)).toMatchObject({ cookie: 2n, error: 0 });
});

test('all connections together hold at most the server budget: a read waits while another connection holds it all', async () => {
  const dev = new MemoryDevice(64 << 20);
  const socketPath = await serve(
    { disk: dev },
    { maxConnections: 2, connectionBudgetBytes: 32 << 20, serverBudgetBytes: 32 << 20, replyDrainTimeoutMs: 1500 },
  );
  const server = servers[servers.length - 1];
  const stalled = await connect(socketPath);
  await stalled.go('disk');
  stalled.socket.pause();
  stalled.request({ type: NBD_CMD_READ, cookie: 1n, lengthBytes: 32 << 20 });
  await sleep(300);
  const other = await connect(socketPath);
  await other.go('disk');
  other.request({ type: NBD_CMD_READ, cookie: 2n, offsetBytes: 4096, lengthBytes: 4096 });
  // Its 4 KiB wait for the stalled connection's 32 MiB, which are freed when that one is cut at the drain deadline.
  let answered = false;
  const reply = other.reply(4096, 5000).finally(() => (answered = true));
  await sleep(500);
  expect([answered, server.connectionCount]).toEqual([false, 2]);
  expect(await reply).toMatchObject({ cookie: 2n, error: 0 });
  expect(server.connectionCount).toBe(1);
});

test('the budgets must hold the largest request, the server budget a connection budget; the connection limit does not scale them', () => {
  expect(() => new NbdServer(new ExportTable(), { connectionBudgetBytes: 16 << 20 })).toThrow(RangeError);
  expect(() => new NbdServer(new ExportTable(), { serverBudgetBytes: 16 << 20 })).toThrow(RangeError);
  expect(() => new NbdServer(new ExportTable(), { connectionBudgetBytes: 64 << 20, serverBudgetBytes: 32 << 20 })).toThrow(RangeError);
  expect(() => new NbdServer(new ExportTable(), { maxConnections: 1024, serverBudgetBytes: 32 << 20 })).not.toThrow();
});

test('binding the socket leaves the process umask alone: a file created meanwhile keeps its mode', async () => {
  const reference = path.join(dir, 'reference');
  fs.writeFileSync(reference, 'x');
  const normalMode = fs.statSync(reference).mode & 0o777;
  const server = new NbdServer(new ExportTable());
  servers.push(server);
  const socketPath = path.join(dir, 'nbd.sock');
  let listening = false;
  const bound = server.listen({ socketPath }).then(() => (listening = true));
  const modes = new Set<number>();
  for (let i = 0; !listening && i < 200; i++) {
    const f = path.join(dir, `meanwhile-${i}`);
    fs.writeFileSync(f, 'x');
    modes.add(fs.statSync(f).mode & 0o777);
    await (i % 2 === 0 ? Promise.resolve() : new Promise((r) => process.nextTick(r)));
  }
  await bound;
  expect(fs.statSync(socketPath).mode & 0o777).toBe(0o600);
  expect([...modes]).toEqual([normalMode]);
  expect(fs.readdirSync(dir).filter((n) => !n.startsWith('meanwhile-'))).toEqual(['nbd.sock', 'reference'].sort());
});
