import type { Socket } from 'net';
import { ByteBudget } from './byte-budget';
import { ProtocolError } from './codec';
import type { ExportTable } from './export-table';
import { negotiate } from './negotiation';
import { ReplyLimits, ReplyWriter } from './reply-writer';
import { ConnectionClosed, SocketReader } from './socket-reader';
import type { ServerTlsCredentials } from './tls';
import { Transmission } from './transmission';

export interface ConnectionOptions {
  /** The whole handshake must end (in an export, or an abort) within this time. */
  handshakeTimeoutMs: number;
  payloadTimeoutMs: number;
  connectionBudgetBytes: number;
  /** The server's budget, shared by all connections; this connection's bytes count against it too. */
  serverBudget: ByteBudget;
  replyLimits: ReplyLimits;
  maxRequestsInFlight: number;
  /** After the server closed its side, how long the client gets to close its own. */
  lingerMs: number;
  /** Credentials when the server offers TLS. */
  tls?: ServerTlsCredentials;
  log(line: string): void;
}

/**
 * One client, from greeting to closed socket: negotiation under a deadline,
 * then transmission. Every way of ending (disconnect request, abort,
 * protocol violation, vanished peer, shutdown) ends in a closed socket and
 * a resolved `done`; nothing here throws to the server.
 */
export class Connection {
  readonly done: Promise<void>;
  private transmission: Transmission | undefined;
  /** The export this connection went on to use, once negotiation ended in one. */
  exportName: string | undefined;
  private stopping = false;
  /** The plain socket, then its TLS socket once NBD_OPT_STARTTLS succeeded. */
  private socket: Socket;
  private reader: SocketReader;
  private replies: ReplyWriter;

  constructor(
    socket: Socket,
    private readonly id: number,
    table: ExportTable,
    private readonly opts: ConnectionOptions,
  ) {
    socket.on('error', () => undefined);
    this.socket = socket;
    this.reader = new SocketReader(socket);
    this.replies = this.replyWriter(socket);
    this.done = this.serve(table);
  }

  /** Refuse further options or requests, and close once the requests in flight are answered. */
  shutdown(): void {
    this.stopping = true;
    this.transmission?.shutdown();
  }

  /** Reply bytes queued in this process for the client (beyond what the kernel took). */
  get queuedReplyBytes(): number {
    return this.socket.writableLength;
  }

  /** Hard disconnect. */
  destroy(): void {
    this.socket.destroy();
  }

  private replyWriter(socket: Socket): ReplyWriter {
    return new ReplyWriter(socket, this.opts.replyLimits, (why) => this.opts.log(`connection ${this.id}: ${why}; closed`));
  }

  /** After NBD_OPT_STARTTLS's ACK: the handshake, then every read and reply goes through TLS. */
  private async startTls(credentials: ServerTlsCredentials): Promise<void> {
    const plain = this.socket;
    // The ACK must reach the client before the first TLS record.
    await new Promise<void>((resolve) => plain.write(Buffer.alloc(0), () => resolve()));
    if (this.reader.detach() > 0) throw new ProtocolError('invalid', 'data sent after NBD_OPT_STARTTLS before its reply');
    const secure = await credentials.upgrade(plain);
    secure.on('error', () => undefined);
    this.socket = secure;
    this.reader = new SocketReader(secure);
    this.replies = this.replyWriter(secure);
  }

  private async serve(table: ExportTable): Promise<void> {
    const timer = setTimeout(() => {
      this.opts.log(`connection ${this.id}: handshake not finished within ${this.opts.handshakeTimeoutMs} ms; closed`);
      this.socket.destroy();
    }, this.opts.handshakeTimeoutMs);
    try {
      // eslint-disable-next-line @typescript-eslint/no-this-alias -- the io object's getter reads the connection's current reader
      const self = this;
      const tls = this.opts.tls;
      const r = await negotiate(
        {
          get reader() {
            return self.reader;
          },
          send: (b) => this.replies.send([b]),
          drained: () => this.replies.drained(),
          shuttingDown: () => this.stopping,
          tls: tls && { required: tls.mode === 'require', upgrade: () => this.startTls(tls) },
        },
        table,
      );
      clearTimeout(timer);
      if (!('export' in r)) {
        if ('refused' in r) this.opts.log(`connection ${this.id}: ${r.refused}; closed`);
        return;
      }
      this.exportName = r.export.name;
      this.transmission = new Transmission(this.socket, this.reader, this.replies, r, {
        connectionBudget: new ByteBudget(this.opts.connectionBudgetBytes, this.opts.serverBudget),
        maxRequestsInFlight: this.opts.maxRequestsInFlight,
        payloadTimeoutMs: this.opts.payloadTimeoutMs,
      });
      if (this.stopping) this.transmission.shutdown();
      await this.transmission.run();
    } catch (e) {
      if (e instanceof ProtocolError) {
        this.opts.log(`connection ${this.id}: ${e.message}; closed`);
        this.socket.destroy();
      } else if (!(e instanceof ConnectionClosed)) {
        this.opts.log(`connection ${this.id}: ${e instanceof Error ? e.message : String(e)}; closed`);
        this.socket.destroy();
      }
    } finally {
      clearTimeout(timer);
      await this.close();
    }
  }

  /** End our side, give the client `lingerMs` to end its own, then destroy. */
  private close(): Promise<void> {
    if (this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.socket.destroy(), this.opts.lingerMs);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      // Data already queued is still sent before the FIN.
      this.socket.end();
      this.socket.resume();
    });
  }
}
