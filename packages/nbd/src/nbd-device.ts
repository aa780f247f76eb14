/**
 * A BlockDevice on an NBD export. Requests are split to the export's
 * maximum block size and at most `maxInFlight` are on the wire at once. A
 * dropped connection is re-made with bounded backoff and every request that
 * had no reply is sent again (reads, writes with the data still held,
 * flushes, zeroes and trims are all idempotent); once the attempts are used
 * up the device is failed and every request fails with EIO. A request
 * resolves only on the server's reply, so nothing is reported done that the
 * server did not acknowledge; and a flush fails (once) when a dropped
 * connection's server had acknowledged writes no flush covered, since they
 * may have been lost with it. See docs/nbd.md#client.
 */
import * as net from 'net';
import { constants } from 'os';
import {
  BlockDevice,
  ByteExtent,
  checkIo,
  checkRange,
  DeviceError,
  DeviceOp,
  errnoOf,
  SECTOR_BYTES,
  SparseFile,
  UnflushedWritesLost,
  WriteOptions,
} from '@dmtool/devices';
import { dataExtents } from './block-status';
import { UnflushedWrites } from './unflushed-writes';
import { ClientConnection, ClientRequest } from './client-connection';
import { ClientExport, ClientNegotiationIo, ExportRefused, negotiateClient } from './client-negotiation';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLUSH,
  NBD_CMD_READ,
  NBD_CMD_TRIM,
  NBD_CMD_WRITE,
  NBD_CMD_WRITE_ZEROES,
  NBD_FLAG_CAN_MULTI_CONN,
  NBD_FLAG_READ_ONLY,
  NBD_FLAG_SEND_FLUSH,
  NBD_FLAG_SEND_FUA,
  NBD_FLAG_SEND_TRIM,
  NBD_FLAG_SEND_WRITE_ZEROES,
} from './constants';
import { Extent, ProtocolError } from './codec';
import { ConnectionClosed, SocketReader } from './socket-reader';
import { ClientTlsCredentials, TlsError, tlsReason } from './tls';
import { NbdAddress, NbdUri, NbdUriError, parseNbdUri } from './uri';

export interface NbdDeviceOptions {
  write: boolean;
  /** Milliseconds a request may wait for its reply before the connection is treated as dropped (default 30000). */
  requestTimeoutMs?: number;
  /** Milliseconds to connect and finish the handshake (default 10000). */
  connectTimeoutMs?: number;
  /** Reconnections tried after a drop before the device is failed (default 5). */
  reconnectAttempts?: number;
  /** Wait before the first reconnection; doubled for each next one, at most 8 s (default 250). */
  reconnectDelayMs?: number;
  /** Requests on the wire at once, over all connections (default 16). */
  maxInFlight?: number;
  /**
   * Connections to open when the server advertises NBD_FLAG_CAN_MULTI_CONN
   * (default 1); one otherwise. Requests go to the least busy one.
   */
  connections?: number;
  /** Resolves a relative `socket=` path (default the process's working directory). */
  cwd?: string;
}

/** The protocol's default maximum payload when the server states none. */
const DEFAULT_MAXIMUM_BYTES = 32 << 20;
/** Requests without a payload (zero, trim) are split at this size. */
const MAX_NO_PAYLOAD_BYTES = 1 << 30;
const MAX_RECONNECT_DELAY_MS = 8000;

/** NBD error values are Linux errno numbers; the few the protocol allows map to their names. */
const NBD_ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM',
  5: 'EIO',
  12: 'ENOMEM',
  22: 'EINVAL',
  28: 'ENOSPC',
  75: 'EOVERFLOW',
  95: 'EOPNOTSUPP',
};

function errnoFromNbd(error: number): number {
  return errnoOf(NBD_ERRNO_NAMES[error] ?? 'EIO');
}

function connectSocket(address: NbdAddress, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket =
      address.transport === 'unix' ? net.connect({ path: address.socketPath }) : net.connect({ host: address.host, port: address.port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error(`no connection within ${timeoutMs} ms`), { code: 'ETIMEDOUT' }));
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeListener('error', reject);
      if (address.transport === 'tcp') socket.setNoDelay(true);
      resolve(socket);
    });
    socket.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** Connect and negotiate (TLS first when `tls` is given); the connection is in transmission when this resolves. */
async function dial(
  uri: NbdUri,
  tls: ClientTlsCredentials | undefined,
  timeoutMs: number,
  requestTimeoutMs: number,
): Promise<{ conn: ClientConnection; info: ClientExport }> {
  const plain = await connectSocket(uri.address, timeoutMs);
  plain.on('error', () => undefined);
  let socket: net.Socket = plain;
  const io: ClientNegotiationIo = { reader: new SocketReader(plain), send: (b) => socket.write(b), timeoutMs };
  let secured = false;
  if (tls) {
    io.startTls = async () => {
      if (io.reader.detach() > 0) throw new ProtocolError('invalid', 'the server sent data after acknowledging NBD_OPT_STARTTLS');
      socket = await tls.upgrade(plain);
      socket.on('error', () => undefined);
      io.reader = new SocketReader(socket);
      secured = true;
    };
  }
  // The deadline covers the TLS handshake too: destroying the plain socket ends it.
  const deadline = setTimeout(() => socket.destroy(), timeoutMs);
  try {
    const info = await negotiateClient(io, uri.exportName);
    return { conn: new ClientConnection(socket, io.reader, info.structuredReplies, requestTimeoutMs), info };
  } catch (e) {
    socket.destroy();
    // With TLS 1.3 a server checks the client's certificate after the client's handshake is done: its refusal is a closed connection.
    if (secured && e instanceof ConnectionClosed) {
      const hint = tls!.hasClientCertificate
        ? ''
        : '; it may require a client certificate (client-cert.pem and client-key.pem in tls-certificates=DIR)';
      throw new TlsError(`the server ended the session after the TLS handshake (${tlsReason(e)})${hint}`);
    }
    throw e;
  } finally {
    clearTimeout(deadline);
  }
}

/** A bounded count of requests on the wire; the rest wait in order. */
class Slots {
  private used = 0;
  private readonly waiting: (() => void)[] = [];
  constructor(private readonly limit: number) {}
  async take(): Promise<void> {
    if (this.used < this.limit) {
      this.used++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }
  give(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.used--;
  }
}

/** One connection of the device and its reconnection, if one is under way. */
interface Link {
  conn: ClientConnection | undefined;
  reconnecting?: Promise<ClientConnection>;
}

/** An error's message; errors from Node's own modules may come from another realm, so no instanceof. */
const why = (e: unknown) =>
  typeof e === 'object' && e !== null && typeof (e as Error).message === 'string' ? (e as Error).message : String(e);

export class NbdDevice implements BlockDevice {
  readonly path: string;
  readonly identity: string;
  readonly sizeBytes: number;
  readonly sizeSectors: number;
  readonly logicalBlockSize: number;
  readonly physicalBlockSize: number;
  readonly writable: boolean;
  readonly ioAlignmentBytes = 1;
  /** Smallest unit the export accepts; requests not aligned to it are refused. */
  readonly minimumBlockBytes: number;
  /** Largest payload of one request; longer reads and writes are split. */
  readonly maximumRequestBytes: number;
  private readonly transmissionFlags: number;
  /** Whether the server selected `base:allocation`, so BLOCK_STATUS can list holes. */
  readonly listsHoles: boolean;
  private readonly links: Link[];
  /** Writes and zeroes not yet answered: a flush waits for them on every connection. */
  private readonly pendingWrites = new Set<Promise<unknown>>();
  private failure: string | undefined;
  private closed = false;
  private readonly slots: Slots;
  private readonly opts: Required<Omit<NbdDeviceOptions, 'cwd'>>;
  private readonly wakeClose: (() => void)[] = [];
  /** Acknowledged writes no flush covers yet, per connection; a dropped connection's are reported by the next flush. */
  private readonly unflushed = new UnflushedWrites();
  /** Connections made after a drop, for tests and status. */
  reconnections = 0;

  private constructor(
    private readonly uri: NbdUri,
    private readonly tls: ClientTlsCredentials | undefined,
    conns: ClientConnection[],
    info: ClientExport,
    opts: Required<Omit<NbdDeviceOptions, 'cwd'>>,
  ) {
    this.path = uri.display;
    this.identity = nbdIdentity(uri);
    this.links = conns.map((conn) => ({ conn }));
    this.opts = opts;
    this.sizeBytes = info.sizeBytes;
    this.sizeSectors = Math.floor(info.sizeBytes / SECTOR_BYTES);
    this.transmissionFlags = info.transmissionFlags;
    this.listsHoles = info.allocationContextId !== undefined;
    this.minimumBlockBytes = info.blockSizes?.minimumBytes ?? 1;
    const max = Math.min(info.blockSizes?.maximumBytes ?? DEFAULT_MAXIMUM_BYTES, DEFAULT_MAXIMUM_BYTES);
    this.maximumRequestBytes = max - (max % this.minimumBlockBytes);
    this.logicalBlockSize = Math.max(SECTOR_BYTES, this.minimumBlockBytes);
    this.physicalBlockSize = Math.max(this.logicalBlockSize, Math.min(info.blockSizes?.preferredBytes ?? 0, 1 << 20));
    this.writable = opts.write;
    this.slots = new Slots(opts.maxInFlight);
  }

  /** Connect to the export a URI names. A refused export or connection is a DeviceError of `open` naming the URI. */
  static async open(name: string, options: NbdDeviceOptions): Promise<NbdDevice> {
    const uri = parseNbdUri(name, options.cwd ?? process.cwd());
    const opts = {
      write: options.write,
      requestTimeoutMs: options.requestTimeoutMs ?? 30000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10000,
      reconnectAttempts: options.reconnectAttempts ?? 5,
      reconnectDelayMs: options.reconnectDelayMs ?? 250,
      maxInFlight: options.maxInFlight ?? 16,
      connections: options.connections ?? 1,
    };
    if (!Number.isSafeInteger(opts.connections) || opts.connections < 1 || opts.connections > MAX_CONNECTIONS) {
      throw new NbdUriError('bad-uri', uri.display, `connections must be 1 to ${MAX_CONNECTIONS} (got ${opts.connections})`);
    }
    let tls: ClientTlsCredentials | undefined;
    try {
      tls = uri.tls && new ClientTlsCredentials(uri.tls);
    } catch (e) {
      if (e instanceof TlsError) throw new NbdUriError('bad-uri', uri.display, e.message);
      throw e;
    }
    let dialed: { conn: ClientConnection; info: ClientExport };
    try {
      dialed = await dial(uri, tls, opts.connectTimeoutMs, opts.requestTimeoutMs);
    } catch (e) {
      throw openError(uri, e);
    }
    if (opts.write && dialed.info.transmissionFlags & NBD_FLAG_READ_ONLY) {
      dialed.conn.disconnect();
      throw new DeviceError(errnoOf('EROFS'), 'open', uri.display, 0, 0, 'the export is read-only');
    }
    const conns = [dialed.conn];
    if (opts.connections > 1 && dialed.info.transmissionFlags & NBD_FLAG_CAN_MULTI_CONN) {
      conns.push(...(await moreConnections(uri, tls, opts, dialed.info, opts.connections - 1)));
    }
    return new NbdDevice(uri, tls, conns, dialed.info, opts);
  }

  /** Connections open now (the rest are being re-made after a drop). */
  get connectionCount(): number {
    return this.links.filter((l) => l.conn?.alive).length;
  }

  get isOpen(): boolean {
    return !this.closed;
  }

  /** Whether the server takes NBD_CMD_WRITE_ZEROES (else zeroRange writes zeroes). */
  get sendsWriteZeroes(): boolean {
    return (this.transmissionFlags & NBD_FLAG_SEND_WRITE_ZEROES) !== 0;
  }

  async read(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number): Promise<void> {
    this.checkAligned('read', byteOffset, bytes);
    checkIo(this, 'read', buf, bufOffset, bytes, byteOffset);
    await this.pieces('read', byteOffset, bytes, this.maximumRequestBytes, (at, n) => ({
      type: NBD_CMD_READ,
      flags: 0,
      offsetBytes: at,
      lengthBytes: n,
      data: buf.subarray(bufOffset + at - byteOffset, bufOffset + at - byteOffset + n),
    }));
  }

  /** Whether the server takes NBD_CMD_FLAG_FUA (else a FUA write is a write, then a flush). */
  get sendsFua(): boolean {
    return (this.transmissionFlags & NBD_FLAG_SEND_FUA) !== 0;
  }

  async write(buf: Buffer, bufOffset: number, bytes: number, byteOffset: number, opts?: WriteOptions): Promise<void> {
    this.checkAligned('write', byteOffset, bytes);
    checkIo(this, 'write', buf, bufOffset, bytes, byteOffset);
    const flags = this.fuaFlag(opts);
    await this.pieces('write', byteOffset, bytes, this.maximumRequestBytes, (at, n) => ({
      type: NBD_CMD_WRITE,
      flags,
      offsetBytes: at,
      lengthBytes: n,
      data: buf.subarray(bufOffset + at - byteOffset, bufOffset + at - byteOffset + n),
    }));
    await this.flushUnlessFua(opts, flags);
  }

  /** NBD_CMD_FLAG_FUA on each request of a FUA write when the server takes it. */
  private fuaFlag(opts: WriteOptions | undefined): number {
    return opts?.fua && this.sendsFua ? NBD_CMD_FLAG_FUA : 0;
  }

  /** A FUA write to a server without NBD_FLAG_SEND_FUA: a flush once its requests are answered. */
  private async flushUnlessFua(opts: WriteOptions | undefined, flags: number): Promise<void> {
    if (opts?.fua && !(flags & NBD_CMD_FLAG_FUA)) await this.flush();
  }

  async flush(): Promise<void> {
    if (this.closed) throw new DeviceError(errnoOf('EBADF'), 'flush', this.path, 0, 0, 'device is closed');
    if (!this.writable || !(this.transmissionFlags & NBD_FLAG_SEND_FLUSH)) return;
    // A flush covers the writes answered before it was sent, on every connection when the server offers multi-conn:
    // the writes asked for before this flush are waited for first (their failures are their callers').
    if (this.pendingWrites.size > 0) await Promise.allSettled([...this.pendingWrites]);
    await this.request('flush', { type: NBD_CMD_FLUSH, flags: 0, offsetBytes: 0, lengthBytes: 0 });
    // Writes a dropped connection's server acknowledged and no flush covered may be gone with that server:
    // this flush cannot vouch for them. Reported once, as the kernel's errseq reports a writeback error to fsync.
    const lost = this.unflushed.takeLost();
    if (lost > 0) {
      throw new UnflushedWritesLost(
        this.path,
        `connection lost after ${plural(lost, 'write')} ${lost === 1 ? 'was' : 'were'} acknowledged but before ${lost === 1 ? 'it was' : 'they were'} flushed; ${lost === 1 ? 'it' : 'they'} may not be durable`,
      );
    }
  }

  async zeroRange(byteOffset: number, bytes: number, opts?: WriteOptions): Promise<void> {
    this.checkAligned('zero', byteOffset, bytes);
    checkRange(this, 'zero', byteOffset, bytes);
    const flags = this.fuaFlag(opts);
    if (this.sendsWriteZeroes) {
      const step = MAX_NO_PAYLOAD_BYTES - (MAX_NO_PAYLOAD_BYTES % this.minimumBlockBytes);
      await this.pieces('zero', byteOffset, bytes, step, (at, n) => ({
        type: NBD_CMD_WRITE_ZEROES,
        flags,
        offsetBytes: at,
        lengthBytes: n,
      }));
    } else {
      const zeroes = Buffer.alloc(Math.min(this.maximumRequestBytes, 1 << 20, bytes));
      await this.pieces('zero', byteOffset, bytes, zeroes.length, (at, n) => ({
        type: NBD_CMD_WRITE,
        flags,
        offsetBytes: at,
        lengthBytes: n,
        data: zeroes.subarray(0, n),
      }));
    }
    await this.flushUnlessFua(opts, flags);
  }

  async discard(byteOffset: number, bytes: number): Promise<void> {
    this.checkAligned('discard', byteOffset, bytes);
    checkRange(this, 'discard', byteOffset, bytes);
    // Without trim the range keeps its data, which a discard allows.
    if (!(this.transmissionFlags & NBD_FLAG_SEND_TRIM)) return;
    const step = MAX_NO_PAYLOAD_BYTES - (MAX_NO_PAYLOAD_BYTES % this.minimumBlockBytes);
    await this.pieces('discard', byteOffset, bytes, step, (at, n) => ({ type: NBD_CMD_TRIM, flags: 0, offsetBytes: at, lengthBytes: n }));
  }

  /**
   * The export's holes: its data extents from BLOCK_STATUS (all data when
   * the server offers no `base:allocation`), and a hole made with
   * WRITE_ZEROES, which lets the server give the blocks back.
   */
  sparseFile(): SparseFile {
    return {
      dataExtents: (byteOffset, bytes) => this.dataExtents(byteOffset, bytes),
      punchHole: (byteOffset, bytes) => this.zeroRange(byteOffset, bytes),
    };
  }

  private async dataExtents(byteOffset: number, bytes: number): Promise<ByteExtent[]> {
    checkRange(this, 'read', byteOffset, bytes);
    if (!this.listsHoles) return bytes > 0 ? [{ byteOffset, bytes }] : [];
    return dataExtents((at, n) => this.blockStatus(at, n), byteOffset, bytes, this.minimumBlockBytes, this.sizeBytes);
  }

  private async blockStatus(offsetBytes: number, lengthBytes: number): Promise<Extent[]> {
    // Only base:allocation was asked for, so every status chunk is its; a re-sent request's answer replaces the last.
    let extents: Extent[] = [];
    await this.request('read', {
      type: NBD_CMD_BLOCK_STATUS,
      flags: 0,
      offsetBytes,
      lengthBytes,
      onStatus: (_contextId, e) => (extents = e),
    });
    return extents;
  }

  /** NBD_CMD_DISC and close; requests still waiting fail with EBADF. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const link of this.links) {
      link.conn?.disconnect();
      link.conn = undefined;
    }
    for (const wake of this.wakeClose.splice(0)) wake();
  }

  private checkAligned(op: DeviceOp, byteOffset: number, bytes: number): void {
    const min = this.minimumBlockBytes;
    if (min > 1 && (byteOffset % min !== 0 || bytes % min !== 0)) {
      throw new DeviceError(
        errnoOf('EINVAL'),
        op,
        this.path,
        byteOffset,
        bytes,
        `the export needs ${min}-byte aligned offsets and lengths`,
      );
    }
  }

  private async pieces(
    op: DeviceOp,
    byteOffset: number,
    bytes: number,
    step: number,
    make: (at: number, n: number) => ClientRequest,
  ): Promise<void> {
    // A few workers take the pieces in order, so a long range holds a bounded
    // number of requests, and nothing more is sent after the first failure.
    const end = byteOffset + bytes;
    let next = byteOffset;
    let failed: { error: unknown } | undefined;
    const worker = async () => {
      while (next < end && !failed) {
        const at = next;
        next += step;
        try {
          await this.request(op, make(at, Math.min(step, end - at)));
        } catch (error) {
          failed ??= { error };
        }
      }
    };
    const workers = Math.min(this.opts.maxInFlight, Math.ceil(bytes / step));
    await Promise.all(Array.from({ length: workers }, worker));
    if (failed) throw failed.error;
  }

  /** One request: sent again on a new connection after each drop, at most `reconnectAttempts` times. */
  private request(op: DeviceOp, req: ClientRequest): Promise<void> {
    const done = this.send(op, req);
    if (op !== 'write' && op !== 'zero' && op !== 'discard') return done;
    this.pendingWrites.add(done);
    const forget = () => this.pendingWrites.delete(done);
    done.then(forget, forget);
    return done;
  }

  private async send(op: DeviceOp, req: ClientRequest): Promise<void> {
    await this.slots.take();
    try {
      for (let sends = 0; ; sends++) {
        const conn = await this.connection(op, req);
        try {
          const flushing = req.type === NBD_CMD_FLUSH ? this.unflushed.flushSent() : undefined;
          const outcome = await conn.send(req);
          if (outcome.error === 0) {
            if (flushing !== undefined) this.unflushed.flushed(flushing);
            else if (changesData(req) && this.transmissionFlags & NBD_FLAG_SEND_FLUSH) this.unflushed.acknowledged(conn);
            return;
          }
          const detail = outcome.message ? `the server said: ${outcome.message}` : undefined;
          throw new DeviceError(errnoFromNbd(outcome.error), op, this.path, req.offsetBytes, req.lengthBytes, detail);
        } catch (e) {
          if (!(e instanceof ConnectionClosed)) throw e;
          if (this.closed) throw this.closedError(op, req);
          if (sends >= this.opts.reconnectAttempts) {
            this.fail(`the request was sent ${sends + 1} times and the connection dropped each time: ${e.message}`);
          }
        }
      }
    } finally {
      this.slots.give();
    }
  }

  private closedError(op: DeviceOp, req: ClientRequest): DeviceError {
    return new DeviceError(errnoOf('EBADF'), op, this.path, req.offsetBytes, req.lengthBytes, 'device is closed');
  }

  private fail(reason: string): void {
    this.failure ??= reason;
    for (const link of this.links) {
      link.conn?.end(new ConnectionClosed(reason));
      link.conn = undefined;
    }
  }

  /**
   * The least busy live connection; dropped ones are re-made meanwhile.
   * With none alive, a new one after the drop, or the device's failure.
   */
  private async connection(op: DeviceOp, req: ClientRequest): Promise<ClientConnection> {
    if (this.closed) throw this.closedError(op, req);
    if (this.failure === undefined) {
      let best: ClientConnection | undefined;
      for (const link of this.links) {
        const c = link.conn;
        if (!c?.alive) this.relink(link).catch(() => undefined);
        else if (!best || c.requestsInFlight < best.requestsInFlight) best = c;
      }
      if (best) return best;
      try {
        return await Promise.any(this.links.map((l) => this.relink(l)));
      } catch {
        // the failure is recorded; reported below
      }
    }
    if (this.closed) throw this.closedError(op, req);
    throw new DeviceError(errnoOf('EIO'), op, this.path, req.offsetBytes, req.lengthBytes, `device failed: ${this.failure}`);
  }

  /** The link's reconnection: the one under way, or a new one. */
  private relink(link: Link): Promise<ClientConnection> {
    link.reconnecting ??= this.reconnect(link).finally(() => (link.reconnecting = undefined));
    return link.reconnecting;
  }

  private async reconnect(link: Link): Promise<ClientConnection> {
    let last = 'connection lost';
    for (let attempt = 1; attempt <= this.opts.reconnectAttempts; attempt++) {
      const delayMs = Math.min(this.opts.reconnectDelayMs * 2 ** (attempt - 1), MAX_RECONNECT_DELAY_MS);
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(t);
          resolve();
        };
        const t = setTimeout(() => {
          this.wakeClose.splice(this.wakeClose.indexOf(wake), 1);
          resolve();
        }, delayMs);
        this.wakeClose.push(wake);
      });
      if (this.closed) throw new Error('closed');
      try {
        // A new connection does the whole handshake again, TLS included, with the credentials read at open.
        const { conn, info } = await dial(this.uri, this.tls, this.opts.connectTimeoutMs, this.opts.requestTimeoutMs);
        if (info.sizeBytes !== this.sizeBytes || (this.writable && info.transmissionFlags & NBD_FLAG_READ_ONLY)) {
          conn.disconnect();
          this.fail(`the export changed on reconnection (now ${info.sizeBytes} bytes, flags 0x${info.transmissionFlags.toString(16)})`);
          throw new Error(this.failure);
        }
        if (this.closed) {
          conn.disconnect();
          throw new Error('closed');
        }
        this.reconnections++;
        link.conn = conn;
        return conn;
      } catch (e) {
        if (this.failure !== undefined || this.closed) throw e;
        last = why(e);
      }
    }
    this.fail(`connection lost; ${this.opts.reconnectAttempts} reconnection attempts failed (last: ${last})`);
    throw new Error(this.failure);
  }
}

/** A write, zero or trim the server may hold in a volatile cache until a flush (FUA ones are durable when answered). */
function changesData(req: ClientRequest): boolean {
  const changes = req.type === NBD_CMD_WRITE || req.type === NBD_CMD_WRITE_ZEROES || req.type === NBD_CMD_TRIM;
  return changes && !(req.flags & NBD_CMD_FLAG_FUA);
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** The most connections one device opens. */
const MAX_CONNECTIONS = 16;

/**
 * The further connections of a multi-conn export, dialled together; a
 * server that refuses some (a connection limit) leaves fewer, and one
 * that shows a different export on them is not used beyond the first.
 */
async function moreConnections(
  uri: NbdUri,
  tls: ClientTlsCredentials | undefined,
  opts: Required<Omit<NbdDeviceOptions, 'cwd'>>,
  first: ClientExport,
  count: number,
): Promise<ClientConnection[]> {
  const tries = await Promise.allSettled(Array.from({ length: count }, () => dial(uri, tls, opts.connectTimeoutMs, opts.requestTimeoutMs)));
  const conns: ClientConnection[] = [];
  for (const t of tries) {
    if (t.status !== 'fulfilled') continue;
    if (t.value.info.sizeBytes === first.sizeBytes && t.value.info.transmissionFlags === first.transmissionFlags) conns.push(t.value.conn);
    else t.value.conn.disconnect();
  }
  return conns;
}

/** The identity of an export: the same for every spelling of its URI, with or without TLS, without connecting. */
export function nbdIdentity(uri: NbdUri): string {
  return `nbd:${uri.display.replace(/^nbds/, 'nbd')}`;
}

function openError(uri: NbdUri, e: unknown): DeviceError {
  if (e instanceof ExportRefused) return new DeviceError(errnoOf(e.code), 'open', uri.display, 0, 0, e.message);
  // A failed handshake or an untrusted server: refused, as a server refusing the export is.
  if (e instanceof TlsError) return new DeviceError(errnoOf('EACCES'), 'open', uri.display, 0, 0, e.message);
  if (e instanceof ProtocolError || e instanceof ConnectionClosed) {
    return new DeviceError(errnoOf('EPROTO'), 'open', uri.display, 0, 0, `the NBD handshake failed: ${e.message}`);
  }
  const code = (e as { code?: unknown }).code;
  const known = typeof code === 'string' && code in constants.errno;
  return new DeviceError(errnoOf(known ? (code as string) : 'EIO'), 'open', uri.display, 0, 0, `cannot connect: ${why(e)}`);
}
