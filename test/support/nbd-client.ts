/**
 * A raw NBD client for tests: it sends exactly the bytes a test builds
 * (well-formed or not) and reads replies with a deadline, so every
 * malformed-input case can check the exact reply or a closed connection.
 */
import * as net from 'net';
import {
  decodeChunkHeader,
  decodeErrorPayload,
  decodeExportNameReply,
  decodeGreeting,
  decodeInfo,
  decodeOptionReplyHeader,
  decodeSimpleReply,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  encodeRequestHeader,
  Info,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_INFO,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_OFFSET_DATA,
  RequestHeader,
  replyKind,
} from '@dmtool/nbd';

export class Closed extends Error {}

export interface Reply {
  cookie: bigint;
  error: number;
  /** Read data (simple replies: when asked for; structured: the OFFSET_DATA chunks). */
  data?: Buffer;
  message?: string;
  blockStatus?: Buffer;
  kind: 'simple' | 'structured';
}

export interface OptionReply {
  option: number;
  replyType: number;
  data: Buffer;
}

export class RawClient {
  private chunks: Buffer[] = [];
  private bufferedBytes = 0;
  private ended = false;
  private wake: (() => void) | undefined;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.bufferedBytes += d.length;
      this.wake?.();
    });
    socket.on('error', () => undefined);
    this.closed = new Promise((resolve) =>
      socket.on('close', () => {
        this.ended = true;
        this.wake?.();
        resolve();
      }),
    );
    socket.on('end', () => {
      this.ended = true;
      this.wake?.();
    });
  }

  /** A raw client on a socket already connected, such as the TLS socket of a connection upgraded with NBD_OPT_STARTTLS. */
  static over(socket: net.Socket): RawClient {
    return new RawClient(socket);
  }

  static connect(socketPath: string, timeoutMs = 5000): Promise<RawClient> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ path: socketPath });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`connect to ${socketPath} timed out`));
      }, timeoutMs);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(new RawClient(s));
      });
      s.once('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
  }

  send(bytes: Buffer): void {
    this.socket.write(bytes);
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** Exactly `bytes` bytes; throws Closed if the server closed first, Error on timeout. */
  async read(bytes: number, timeoutMs = 5000): Promise<Buffer> {
    const until = Date.now() + timeoutMs;
    while (this.bufferedBytes < bytes) {
      if (this.ended) throw new Closed(`server closed the connection (${this.bufferedBytes} of ${bytes} bytes read)`);
      const left = until - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for ${bytes} bytes (have ${this.bufferedBytes})`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.wake = undefined;
    }
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks);
    const rest = all.subarray(bytes);
    this.chunks = rest.length > 0 ? [rest] : [];
    this.bufferedBytes = rest.length;
    return Buffer.from(all.subarray(0, bytes));
  }

  /** True when the server closes the connection within `timeoutMs` with no further bytes. */
  async closesWithin(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const open = new Promise<'open'>((resolve) => (timer = setTimeout(() => resolve('open'), timeoutMs)));
    const r = await Promise.race([this.closed.then(() => 'closed' as const), open]);
    clearTimeout(timer);
    return r === 'closed' && this.bufferedBytes === 0;
  }

  async greeting(clientFlags = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES): Promise<number> {
    const { handshakeFlags } = decodeGreeting(await this.read(18));
    this.send(encodeClientFlags(clientFlags));
    return handshakeFlags;
  }

  async optionReply(): Promise<OptionReply> {
    const h = decodeOptionReplyHeader(await this.read(20));
    return { option: h.option, replyType: h.replyType, data: await this.read(h.dataBytes) };
  }

  /** Replies to one option up to and including the final one (ACK or an error). */
  async optionReplies(): Promise<OptionReply[]> {
    const all: OptionReply[] = [];
    for (;;) {
      const r = await this.optionReply();
      all.push(r);
      if (r.replyType !== NBD_REP_INFO && r.replyType !== 2 && r.replyType !== 4) return all;
    }
  }

  /** The whole handshake up to transmission; returns the export info. */
  async go(
    name: string,
    opts: { structured?: boolean; allocation?: boolean; exportName?: boolean; greeted?: boolean } = {},
  ): Promise<{ sizeBytes: number; transmissionFlags: number; infos: Info[] }> {
    if (!opts.greeted) await this.greeting();
    if (opts.structured || opts.allocation) {
      this.send(encodeOption(NBD_OPT_STRUCTURED_REPLY));
      expectAck(await this.optionReplies());
    }
    if (opts.allocation) {
      this.send(encodeOption(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName: name, queries: ['base:allocation'] })));
      expectAck(await this.optionReplies());
    }
    if (opts.exportName) {
      this.send(encodeOption(NBD_OPT_EXPORT_NAME, Buffer.from(name)));
      const r = decodeExportNameReply(await this.read(10));
      return { ...r, infos: [] };
    }
    this.send(encodeOption(NBD_OPT_GO, encodeInfoRequest({ name, infoTypes: [3] })));
    const replies = await this.optionReplies();
    expectAck(replies);
    const infos = replies.filter((r) => r.replyType === NBD_REP_INFO).map((r) => decodeInfo(r.data));
    const exp = infos.find((i) => 'sizeBytes' in i) as { sizeBytes: number; transmissionFlags: number };
    return { sizeBytes: exp.sizeBytes, transmissionFlags: exp.transmissionFlags, infos };
  }

  request(h: Partial<RequestHeader> & { type: number }, payload?: Buffer): void {
    const header = encodeRequestHeader({ flags: 0, cookie: 1n, offsetBytes: 0, lengthBytes: payload?.length ?? 0, ...h });
    this.send(payload ? Buffer.concat([header, payload]) : header);
  }

  /**
   * One complete reply. For a simple reply to a successful read, pass the
   * read length (the protocol carries no length). Structured chunks are
   * gathered until the chunk flagged DONE.
   */
  async reply(readBytes = 0, timeoutMs = 5000): Promise<Reply> {
    const magic = await this.read(4, timeoutMs);
    if (replyKind(magic) === 'simple') {
      const r = decodeSimpleReply(Buffer.concat([magic, await this.read(12, timeoutMs)]));
      const data = r.error === 0 && readBytes > 0 ? await this.read(readBytes, timeoutMs) : undefined;
      return { kind: 'simple', cookie: r.cookie, error: r.error, data };
    }
    const out: Reply = { kind: 'structured', cookie: 0n, error: 0 };
    let first = magic;
    for (;;) {
      const h = decodeChunkHeader(Buffer.concat([first, await this.read(16, timeoutMs)]));
      const payload = await this.read(h.lengthBytes, timeoutMs);
      out.cookie = h.cookie;
      if (h.type === NBD_REPLY_TYPE_OFFSET_DATA) out.data = Buffer.concat([out.data ?? Buffer.alloc(0), payload.subarray(8)]);
      else if (h.type === NBD_REPLY_TYPE_BLOCK_STATUS) out.blockStatus = payload;
      else if (h.type === NBD_REPLY_TYPE_ERROR || h.type === NBD_REPLY_TYPE_ERROR_OFFSET) {
        const e = decodeErrorPayload(h.type, payload);
        out.error = e.error;
        out.message = e.message;
      }
      if (h.flags & NBD_REPLY_FLAG_DONE) return out;
      first = await this.read(4, timeoutMs);
    }
  }
}

function expectAck(replies: OptionReply[]): void {
  const last = replies[replies.length - 1];
  if (last.replyType !== NBD_REP_ACK) {
    throw new Error(`option ${last.option} refused: reply 0x${last.replyType.toString(16)} ${last.data.toString()}`);
  }
}
