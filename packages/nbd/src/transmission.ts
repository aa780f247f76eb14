/**
 * The transmission phase of one connection: read requests, run them on the
 * export's device (several at once), and send each reply as soon as its
 * request is done. A reply is sent only once the device has accepted the
 * write, zeroing or flush it answers.
 */
import type { Socket } from 'net';
import {
  NBD_CMD_BLOCK_STATUS,
  NBD_CMD_CACHE,
  NBD_CMD_DISC,
  NBD_CMD_FLAG_DF,
  NBD_CMD_FLAG_FUA,
  NBD_CMD_FLAG_NO_HOLE,
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
  REQUEST_HEADER_BYTES,
} from './constants';
import {
  decodeRequestHeader,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeOffsetDataHeader,
  encodeSimpleReply,
  ProtocolError,
  RequestHeader,
} from './codec';
import { ByteBudget } from './byte-budget';
import { isUnsupported, nbdErrorOf } from './errno';
import { MAXIMUM_PAYLOAD_BYTES } from './export-table';
import type { Negotiated } from './negotiation';
import type { ReplyWriter } from './reply-writer';
import type { SocketReader } from './socket-reader';

export interface TransmissionLimits {
  /** Bytes this connection's unfinished requests may hold (its share of the server's budget). */
  connectionBudget: ByteBudget;
  /** Requests of this connection running at once; further requests wait unread. */
  maxRequestsInFlight: number;
  /** A write payload must arrive within this time once its header has. */
  payloadTimeoutMs: number;
}

const COMMAND_NAMES: Record<number, string> = {
  [NBD_CMD_READ]: 'NBD_CMD_READ',
  [NBD_CMD_WRITE]: 'NBD_CMD_WRITE',
  [NBD_CMD_FLUSH]: 'NBD_CMD_FLUSH',
  [NBD_CMD_TRIM]: 'NBD_CMD_TRIM',
  [NBD_CMD_CACHE]: 'NBD_CMD_CACHE',
  [NBD_CMD_WRITE_ZEROES]: 'NBD_CMD_WRITE_ZEROES',
  [NBD_CMD_BLOCK_STATUS]: 'NBD_CMD_BLOCK_STATUS',
};

/** A refusal decided before any I/O. */
interface Refusal {
  error: number;
  message: string;
}

/** Bytes held against the connection's budget until released (once). */
interface Hold {
  bytes: number;
  released: boolean;
}

export class Transmission {
  /** Requests from header decode until their reply was queued. */
  private admitted = 0;
  /** Requests holding one of the maxRequestsInFlight slots. */
  private running = 0;
  private slotWaiters: (() => void)[] = [];
  private idleWaiters: (() => void)[] = [];
  private stopping = false;
  private readonly holds = new Set<Hold>();
  private readonly device;
  private readonly sizeBytes: number;

  constructor(
    private readonly socket: Socket,
    private readonly reader: SocketReader,
    private readonly replies: ReplyWriter,
    private readonly negotiated: Negotiated,
    private readonly limits: TransmissionLimits,
  ) {
    this.device = negotiated.export.device;
    this.sizeBytes = this.device.sizeBytes;
  }

  /**
   * Serve requests until the client disconnects (NBD_CMD_DISC or a closed
   * socket), breaks the framing, or shutdown() was called; resolves once
   * every request that was started has finished.
   */
  async run(): Promise<void> {
    try {
      await this.receive();
    } finally {
      await this.idle();
      for (const h of this.holds) this.release(h);
    }
  }

  /** Answer further requests with NBD_ESHUTDOWN and close once those in flight are done. */
  shutdown(): void {
    this.stopping = true;
    if (this.admitted === 0) this.socket.end();
  }

  private async receive(): Promise<void> {
    for (;;) {
      await this.replies.drained();
      const h = decodeRequestHeader(await this.reader.read(REQUEST_HEADER_BYTES));
      if (h.type === NBD_CMD_DISC) {
        await this.idle();
        this.socket.end();
        return;
      }
      // Counted from here, so that shutdown cannot close the socket under a request still waiting for its payload.
      this.admitted++;
      let started = false;
      try {
        started = await this.admit(h);
      } finally {
        if (!started) this.finished();
      }
    }
  }

  /** Refuse `h` or start it; true once it was started (then its completion calls finished()). */
  private async admit(h: RequestHeader): Promise<boolean> {
    if (h.type === NBD_CMD_WRITE && h.lengthBytes > MAXIMUM_PAYLOAD_BYTES) {
      // Its payload cannot be held, and without reading it the stream cannot be followed.
      throw new ProtocolError('too-big', `NBD_CMD_WRITE of ${h.lengthBytes} bytes (at most ${MAXIMUM_PAYLOAD_BYTES})`);
    }
    const refusal = this.stopping ? { error: NBD_ESHUTDOWN, message: 'server is shutting down' } : this.check(h);
    if (refusal) {
      if (h.type === NBD_CMD_WRITE) await this.reader.skip(h.lengthBytes, this.limits.payloadTimeoutMs);
      this.sendError(h, refusal.error, refusal.message);
      return false;
    }
    await this.slot();
    if (h.type !== NBD_CMD_WRITE) {
      this.start(() => this.execute(h));
      return true;
    }
    const hold = await this.hold(h.lengthBytes);
    let payload: Buffer;
    try {
      payload = await this.reader.read(h.lengthBytes, this.limits.payloadTimeoutMs);
    } catch (e) {
      this.release(hold);
      throw e;
    }
    this.start(() => this.write(h, payload).finally(() => this.release(hold)));
    return true;
  }

  /** The protocol's checks, in its order of precedence: command and flags, read-only, bounds. */
  private check(h: RequestHeader): Refusal | undefined {
    const name = COMMAND_NAMES[h.type];
    if (name === undefined) return { error: NBD_EINVAL, message: `unknown command ${h.type}` };
    let allowedFlags = NBD_CMD_FLAG_FUA;
    if (h.type === NBD_CMD_READ && this.negotiated.structuredReplies) allowedFlags |= NBD_CMD_FLAG_DF;
    if (h.type === NBD_CMD_WRITE_ZEROES) allowedFlags |= NBD_CMD_FLAG_NO_HOLE;
    if (h.type === NBD_CMD_BLOCK_STATUS) allowedFlags |= NBD_CMD_FLAG_REQ_ONE;
    if ((h.flags & ~allowedFlags) !== 0) return { error: NBD_EINVAL, message: `${name}: flags 0x${h.flags.toString(16)} not allowed` };
    if (h.type === NBD_CMD_FLUSH) {
      return h.offsetBytes !== 0 || h.lengthBytes !== 0
        ? { error: NBD_EINVAL, message: 'NBD_CMD_FLUSH takes no offset or length' }
        : undefined;
    }
    const writes = h.type === NBD_CMD_WRITE || h.type === NBD_CMD_WRITE_ZEROES || h.type === NBD_CMD_TRIM;
    if (writes && this.negotiated.export.readOnly) return { error: NBD_EPERM, message: `${name}: export is read-only` };
    if (h.type === NBD_CMD_BLOCK_STATUS && this.negotiated.metaContexts.length === 0) {
      return { error: NBD_EINVAL, message: 'NBD_CMD_BLOCK_STATUS without a selected metadata context' };
    }
    if (h.lengthBytes === 0) return { error: NBD_EINVAL, message: `${name} of length 0` };
    if (h.offsetBytes + h.lengthBytes > this.sizeBytes) {
      const beyondEnd = h.type === NBD_CMD_WRITE || h.type === NBD_CMD_WRITE_ZEROES ? NBD_ENOSPC : NBD_EINVAL;
      return {
        error: beyondEnd,
        message: `${name}: bytes ${h.offsetBytes}+${h.lengthBytes} end beyond the export end (${this.sizeBytes} bytes)`,
      };
    }
    if (h.type === NBD_CMD_READ && h.lengthBytes > MAXIMUM_PAYLOAD_BYTES) {
      return {
        error: this.negotiated.structuredReplies ? NBD_EOVERFLOW : NBD_EINVAL,
        message: `NBD_CMD_READ of ${h.lengthBytes} bytes (at most ${MAXIMUM_PAYLOAD_BYTES})`,
      };
    }
    const align = this.device.ioAlignmentBytes;
    if (
      align > 1 &&
      h.type !== NBD_CMD_BLOCK_STATUS &&
      h.type !== NBD_CMD_CACHE &&
      (h.offsetBytes % align !== 0 || h.lengthBytes % align !== 0)
    ) {
      return { error: NBD_EINVAL, message: `${name}: offset and length must be multiples of ${align} bytes` };
    }
    return undefined;
  }

  private async execute(h: RequestHeader): Promise<void> {
    const fua = (h.flags & NBD_CMD_FLAG_FUA) !== 0;
    try {
      switch (h.type) {
        case NBD_CMD_READ:
          return await this.read(h);
        case NBD_CMD_FLUSH:
          await this.device.flush();
          break;
        case NBD_CMD_TRIM:
          try {
            await this.device.discard(h.offsetBytes, h.lengthBytes);
          } catch (e) {
            // A trim is a hint: a device that cannot discard ignores it.
            if (!isUnsupported(e)) throw e;
          }
          if (fua) await this.device.flush();
          break;
        case NBD_CMD_WRITE_ZEROES:
          // zeroRange never leaves a hole the client did not ask for, so NBD_CMD_FLAG_NO_HOLE needs nothing more.
          await this.device.zeroRange(h.offsetBytes, h.lengthBytes, { fua });
          break;
        case NBD_CMD_CACHE:
          break;
        case NBD_CMD_BLOCK_STATUS:
          return await this.blockStatus(h);
      }
      this.replies.send([encodeSimpleReply(0, h.cookie)]);
    } catch (e) {
      this.sendError(h, nbdErrorOf(e), e instanceof Error ? e.message : String(e));
    }
  }

  private async write(h: RequestHeader, payload: Buffer): Promise<void> {
    try {
      // FUA is the device's: only this write is made durable, not the whole device's cache.
      await this.device.write(payload, 0, h.lengthBytes, h.offsetBytes, { fua: (h.flags & NBD_CMD_FLAG_FUA) !== 0 });
      this.replies.send([encodeSimpleReply(0, h.cookie)]);
    } catch (e) {
      this.sendError(h, nbdErrorOf(e), e instanceof Error ? e.message : String(e));
    }
  }

  private async read(h: RequestHeader): Promise<void> {
    const hold = await this.hold(h.lengthBytes);
    const data = Buffer.allocUnsafe(h.lengthBytes);
    try {
      await this.device.read(data, 0, h.lengthBytes, h.offsetBytes);
    } catch (e) {
      this.release(hold);
      this.sendError(h, nbdErrorOf(e), e instanceof Error ? e.message : String(e));
      return;
    }
    // One content chunk for the whole range, so NBD_CMD_FLAG_DF is always honoured.
    const head = this.negotiated.structuredReplies
      ? encodeOffsetDataHeader(h.cookie, h.offsetBytes, h.lengthBytes, true)
      : encodeSimpleReply(0, h.cookie);
    this.replies.send([head, data], () => this.release(hold));
  }

  /**
   * One NBD_REPLY_TYPE_BLOCK_STATUS chunk per selected context, the last
   * one ending the reply; all are worked out before any is sent, so a
   * failure is answered with one error chunk.
   */
  private async blockStatus(h: RequestHeader): Promise<void> {
    const one = (h.flags & NBD_CMD_FLAG_REQ_ONE) !== 0;
    const contexts = this.negotiated.metaContexts;
    const answers = await Promise.all(contexts.map((c) => c.context.extents(h.offsetBytes, h.lengthBytes)));
    this.replies.send(
      contexts.map((c, i) => encodeBlockStatusChunk(h.cookie, c.id, one ? answers[i].slice(0, 1) : answers[i], i === contexts.length - 1)),
    );
  }

  private sendError(h: RequestHeader, error: number, message: string): void {
    if (this.negotiated.structuredReplies) this.replies.send([encodeErrorChunk(h.cookie, error, message, true)]);
    else this.replies.send([encodeSimpleReply(error, h.cookie)]);
  }

  private start(work: () => Promise<void>): void {
    this.running++;
    work()
      .catch(() => undefined)
      .finally(() => {
        this.running--;
        this.slotWaiters.shift()?.();
        this.finished();
      });
  }

  /** One admitted request is answered (or refused). */
  private finished(): void {
    this.admitted--;
    if (this.admitted > 0) return;
    for (const w of this.idleWaiters.splice(0)) w();
    if (this.stopping) this.socket.end();
  }

  private slot(): Promise<void> {
    if (this.running < this.limits.maxRequestsInFlight) return Promise.resolve();
    return new Promise((resolve) => this.slotWaiters.push(resolve));
  }

  private idle(): Promise<void> {
    if (this.admitted === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async hold(bytes: number): Promise<Hold> {
    await this.limits.connectionBudget.acquire(bytes);
    const h: Hold = { bytes, released: false };
    this.holds.add(h);
    return h;
  }

  private release(h: Hold): void {
    if (h.released) return;
    h.released = true;
    this.holds.delete(h);
    this.limits.connectionBudget.release(h.bytes);
  }
}
