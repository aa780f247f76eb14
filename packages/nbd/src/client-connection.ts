/**
 * One client connection in transmission: requests go out with a cookie
 * each, replies (simple or structured) come back in any order and are
 * matched by cookie. A lost connection, a protocol error or a request
 * without a reply in time ends the connection and rejects every request
 * still in flight with ConnectionClosed; the device above decides what to
 * re-send.
 */
import type { Socket } from 'net';
import {
  NBD_CMD_DISC,
  NBD_CMD_READ,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  SIMPLE_REPLY_BYTES,
  STRUCTURED_REPLY_HEADER_BYTES,
} from './constants';
import {
  decodeBlockStatusPayload,
  decodeChunkHeader,
  decodeErrorPayload,
  decodeSimpleReply,
  encodeRequestHeader,
  Extent,
  ProtocolError,
  replyKind,
} from './codec';
import { ConnectionClosed, SocketReader } from './socket-reader';

export interface ClientRequest {
  type: number;
  flags: number;
  offsetBytes: number;
  lengthBytes: number;
  /** A write's payload, or the buffer a read fills (`lengthBytes` long). */
  data?: Buffer;
  /** A block-status request's sink for each NBD_REPLY_TYPE_BLOCK_STATUS chunk. */
  onStatus?(contextId: number, extents: Extent[]): void;
}

/** The server's answer: `error` 0 is success, otherwise an NBD error value with the server's message if it sent one. */
export interface ReplyOutcome {
  error: number;
  message?: string;
}

interface InFlight {
  req: ClientRequest;
  resolve(o: ReplyOutcome): void;
  reject(e: Error): void;
  timer: NodeJS.Timeout;
  outcome: ReplyOutcome;
}

/** How long a closed connection may take to send its last bytes before it is cut. */
const DISCONNECT_LINGER_MS = 1000;

/** Largest structured chunk payload accepted beyond the data a read asked for. */
const MAX_CHUNK_EXTRA_BYTES = 64 << 10;
/** Largest block-status chunk accepted: 128 Ki extents, far more than any server sends for one request. */
const MAX_STATUS_CHUNK_BYTES = 1 << 20;

export class ClientConnection {
  private readonly inFlight = new Map<bigint, InFlight>();
  private nextCookie = 1n;
  private ended: Error | undefined;

  constructor(
    private readonly socket: Socket,
    private readonly reader: SocketReader,
    private readonly structuredReplies: boolean,
    private readonly requestTimeoutMs: number,
  ) {
    socket.on('close', () => this.end(new ConnectionClosed('connection closed')));
    socket.on('error', (e) => this.end(new ConnectionClosed(`connection failed: ${e.message}`)));
    void this.replyLoop();
  }

  get alive(): boolean {
    return this.ended === undefined;
  }

  get requestsInFlight(): number {
    return this.inFlight.size;
  }

  /** Send one request; resolves with the server's outcome, rejects with ConnectionClosed if the connection ends first. */
  send(req: ClientRequest): Promise<ReplyOutcome> {
    if (this.ended) return Promise.reject(this.ended);
    const cookie = this.nextCookie++;
    return new Promise<ReplyOutcome>((resolve, reject) => {
      const timer = setTimeout(() => this.end(new ConnectionClosed(`no reply within ${this.requestTimeoutMs} ms`)), this.requestTimeoutMs);
      this.inFlight.set(cookie, { req, resolve, reject, timer, outcome: { error: 0 } });
      const header = encodeRequestHeader({
        flags: req.flags,
        type: req.type,
        cookie,
        offsetBytes: req.offsetBytes,
        lengthBytes: req.lengthBytes,
      });
      if (req.type !== NBD_CMD_READ && req.data) {
        this.socket.cork();
        this.socket.write(header);
        this.socket.write(req.data);
        this.socket.uncork();
      } else {
        this.socket.write(header);
      }
    });
  }

  /**
   * NBD_CMD_DISC, then close our side; requests still in flight are
   * rejected. The socket is left to finish sending (a TLS close_notify
   * included) and destroyed when the server closes, or after a second.
   */
  disconnect(): void {
    let graceful = false;
    if (!this.ended && !this.socket.destroyed) {
      this.socket.write(encodeRequestHeader({ flags: 0, type: NBD_CMD_DISC, cookie: 0n, offsetBytes: 0, lengthBytes: 0 }));
      this.socket.end();
      const timer = setTimeout(() => this.socket.destroy(), DISCONNECT_LINGER_MS).unref();
      this.socket.once('close', () => clearTimeout(timer));
      graceful = true;
    }
    this.end(new ConnectionClosed('disconnected'), !graceful);
  }

  /** End the connection now (a broken peer): every request in flight is rejected with `why`. */
  end(why: Error, destroy = true): void {
    if (this.ended) return;
    this.ended = why;
    if (destroy) this.socket.destroy();
    for (const f of this.inFlight.values()) {
      clearTimeout(f.timer);
      f.reject(why);
    }
    this.inFlight.clear();
  }

  private async replyLoop(): Promise<void> {
    try {
      while (!this.ended) {
        const magic = await this.reader.read(4);
        if (replyKind(magic) === 'simple') await this.simpleReply(magic);
        else await this.structuredChunk(magic);
      }
    } catch (e) {
      this.end(e instanceof ConnectionClosed ? e : new ConnectionClosed(`protocol error: ${e instanceof Error ? e.message : String(e)}`));
    }
  }

  private take(cookie: bigint): InFlight {
    const f = this.inFlight.get(cookie);
    if (!f) throw new ProtocolError('invalid', `reply for unknown cookie ${cookie}`);
    return f;
  }

  private finish(cookie: bigint, f: InFlight): void {
    this.inFlight.delete(cookie);
    clearTimeout(f.timer);
    f.resolve(f.outcome);
  }

  private async simpleReply(magic: Buffer): Promise<void> {
    const rest = await this.reader.read(SIMPLE_REPLY_BYTES - 4);
    const { error, cookie } = decodeSimpleReply(Buffer.concat([magic, rest]));
    const f = this.take(cookie);
    if (this.structuredReplies && f.req.type === NBD_CMD_READ)
      throw new ProtocolError('invalid', 'simple reply to a read after structured replies were agreed');
    if (error === 0 && f.req.type === NBD_CMD_READ && f.req.data) {
      await this.reader.readInto(f.req.data, 0, f.req.lengthBytes);
    }
    f.outcome = { error };
    this.finish(cookie, f);
  }

  private async structuredChunk(magic: Buffer): Promise<void> {
    const rest = await this.reader.read(STRUCTURED_REPLY_HEADER_BYTES - 4);
    const h = decodeChunkHeader(Buffer.concat([magic, rest]));
    const f = this.take(h.cookie);
    const isRead = f.req.type === NBD_CMD_READ && f.req.data !== undefined;
    const limit = isRead ? f.req.lengthBytes + 8 + MAX_CHUNK_EXTRA_BYTES : f.req.onStatus ? MAX_STATUS_CHUNK_BYTES : MAX_CHUNK_EXTRA_BYTES;
    if (h.lengthBytes > limit) {
      throw new ProtocolError('too-big', `structured chunk of ${h.lengthBytes} bytes`);
    }
    if (h.type === NBD_REPLY_TYPE_OFFSET_DATA && isRead) {
      if (h.lengthBytes < 8) throw new ProtocolError('invalid', 'data chunk without an offset');
      const at = this.inside(f.req, Number((await this.reader.read(8)).readBigUInt64BE(0)), h.lengthBytes - 8);
      await this.reader.readInto(f.req.data!, at, h.lengthBytes - 8);
    } else if (h.type === NBD_REPLY_TYPE_OFFSET_HOLE && isRead) {
      if (h.lengthBytes !== 12) throw new ProtocolError('invalid', 'hole chunk is not 12 bytes');
      const p = await this.reader.read(12);
      const holeBytes = p.readUInt32BE(8);
      const at = this.inside(f.req, Number(p.readBigUInt64BE(0)), holeBytes);
      f.req.data!.fill(0, at, at + holeBytes);
    } else if (h.type === NBD_REPLY_TYPE_BLOCK_STATUS && f.req.onStatus) {
      const status = decodeBlockStatusPayload(await this.reader.read(h.lengthBytes));
      f.req.onStatus(status.contextId, status.extents);
    } else if (h.type === NBD_REPLY_TYPE_ERROR || h.type === NBD_REPLY_TYPE_ERROR_OFFSET) {
      const e = decodeErrorPayload(h.type, await this.reader.read(h.lengthBytes));
      if (f.outcome.error === 0) f.outcome = { error: e.error || 5, message: e.message || undefined };
    } else if (h.type === NBD_REPLY_TYPE_NONE) {
      if (h.lengthBytes !== 0 || !(h.flags & NBD_REPLY_FLAG_DONE))
        throw new ProtocolError('invalid', 'NBD_REPLY_TYPE_NONE with a payload or without DONE');
    } else {
      // Chunks this client did not ask for (unknown types) are read and dropped.
      if (h.lengthBytes) await this.reader.read(h.lengthBytes);
    }
    if (h.flags & NBD_REPLY_FLAG_DONE) this.finish(h.cookie, f);
  }

  /** Where a chunk's bytes go in the read's buffer; a chunk outside the request is a broken server. */
  private inside(req: ClientRequest, offsetBytes: number, bytes: number): number {
    const at = offsetBytes - req.offsetBytes;
    if (at < 0 || at + bytes > req.lengthBytes) throw new ProtocolError('invalid', `chunk [${offsetBytes}, +${bytes}) outside the request`);
    return at;
  }
}
