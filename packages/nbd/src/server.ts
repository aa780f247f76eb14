import * as net from 'net';
import { ByteBudget } from './byte-budget';
import { Connection } from './connection';
import { MAXIMUM_PAYLOAD_BYTES } from './export-table';
import type { ExportTable } from './export-table';
import { ServerTls, ServerTlsCredentials } from './tls';
import { listenOnUnixSocket, removeUnixSocket } from './unix-socket';

export interface ServerOptions {
  /** Connections served at once; a further one is closed at once (default 16). */
  maxConnections?: number;
  /** Deadline for a client's handshake (default 10 s). */
  handshakeTimeoutMs?: number;
  /** Deadline for a write payload once its header arrived (default 30 s). */
  payloadTimeoutMs?: number;
  /** Bytes one connection's unfinished requests may hold (default 32 MiB, at least the largest request, 32 MiB). */
  connectionBudgetBytes?: number;
  /**
   * Bytes all connections' unfinished requests may hold together (default
   * 64 MiB, at least connectionBudgetBytes), whatever the number of
   * connections. Connections draw on it in arrival order.
   */
  serverBudgetBytes?: number;
  /** Reply bytes a client may leave unread before its connection is no longer read (default 1 MiB; no less than the socket's high-water mark is used). */
  replyBacklogBytes?: number;
  /** Unread replies over the backlog, or a held read reply, must drain within this time (default 30 s). */
  replyDrainTimeoutMs?: number;
  /** Requests one connection runs at once (default 64). */
  maxRequestsInFlight?: number;
  /** On close, how long connections get to finish their requests before they are cut (default 10 s). */
  shutdownGraceMs?: number;
  /** TLS through NBD_OPT_STARTTLS, offered (`on`) or required; files are read when the server (or the credentials) is made. */
  tls?: ServerTls | ServerTlsCredentials;
  /** One line per refused or broken connection. */
  log?: (line: string) => void;
}

/** A unix socket path, or a TCP address, which is used only when given explicitly. */
/**
 * Where to listen: a unix socket made here, a TCP address, or a listening
 * socket inherited as a descriptor (systemd socket activation: unix or TCP,
 * whatever it is; its file is left alone on close).
 */
export type ListenAddress = { socketPath: string } | { host: string; port: number } | { fd: number };

const MiB = 1 << 20;
const DEFAULT_SERVER_BUDGET_BYTES = 64 * MiB;

/**
 * Serves an export table over NBD. Unix sockets are created with mode 0600;
 * a stale socket file (nobody listening) is replaced, a live one refused.
 */
export class NbdServer {
  private readonly server: net.Server;
  private readonly connections = new Set<Connection>();
  private readonly opts: Required<Omit<ServerOptions, 'tls'>>;
  private readonly tls: ServerTlsCredentials | undefined;
  private readonly serverBudget: ByteBudget;
  private nextId = 1;
  private socketFile: { path: string; ino: number } | undefined;
  private closing: Promise<void> | undefined;

  constructor(
    private readonly exports: ExportTable,
    opts: ServerOptions = {},
  ) {
    this.opts = {
      maxConnections: opts.maxConnections ?? 16,
      handshakeTimeoutMs: opts.handshakeTimeoutMs ?? 10_000,
      payloadTimeoutMs: opts.payloadTimeoutMs ?? 30_000,
      connectionBudgetBytes: opts.connectionBudgetBytes ?? MAXIMUM_PAYLOAD_BYTES,
      serverBudgetBytes: opts.serverBudgetBytes ?? DEFAULT_SERVER_BUDGET_BYTES,
      replyBacklogBytes: opts.replyBacklogBytes ?? MiB,
      replyDrainTimeoutMs: opts.replyDrainTimeoutMs ?? 30_000,
      maxRequestsInFlight: opts.maxRequestsInFlight ?? 64,
      shutdownGraceMs: opts.shutdownGraceMs ?? 10_000,
      log: opts.log ?? (() => undefined),
    };
    // Each connection's budget must grant the largest request, and the server's must grant a connection's. The server's is
    // not multiplied by the connection limit: memory stays bounded however many clients connect.
    if (this.opts.connectionBudgetBytes < MAXIMUM_PAYLOAD_BYTES || this.opts.serverBudgetBytes < this.opts.connectionBudgetBytes) {
      throw new RangeError(
        `each connection's budget must be at least ${MAXIMUM_PAYLOAD_BYTES} bytes (the largest request), and the server budget at least a connection's`,
      );
    }
    this.serverBudget = new ByteBudget(this.opts.serverBudgetBytes);
    this.tls = opts.tls instanceof ServerTlsCredentials ? opts.tls : opts.tls && new ServerTlsCredentials(opts.tls);
    this.server = net.createServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) => this.accept(socket));
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Reply bytes queued in this process for all clients together (beyond what the kernels took). */
  get queuedReplyBytes(): number {
    let bytes = 0;
    for (const c of this.connections) bytes += c.queuedReplyBytes;
    return bytes;
  }

  async listen(address: ListenAddress): Promise<void> {
    if ('socketPath' in address) {
      this.socketFile = { path: address.socketPath, ino: await listenOnUnixSocket(this.server, address.socketPath) };
    } else if ('fd' in address) {
      await this.listenOn({ fd: address.fd });
    } else {
      await this.listenOn({ host: address.host, port: address.port });
    }
  }

  /** What the server listens on: a unix socket's path, a TCP address, or undefined (not listening, or unknown). */
  get boundAddress(): string | { host: string; port: number } | undefined {
    const a = this.server.address();
    if (a === null) return undefined;
    if (typeof a === 'string') return a === '' ? undefined : a;
    return { host: a.address, port: a.port };
  }

  /** The TCP port actually bound (useful with port 0). */
  get tcpPort(): number | undefined {
    const a = this.server.address();
    return a && typeof a === 'object' ? a.port : undefined;
  }

  /**
   * Stop accepting, let every connection finish the requests it has
   * (further ones get NBD_ESHUTDOWN), cut those still open after the
   * grace period, and remove the socket file.
   */
  close(): Promise<void> {
    this.closing ??= this.closeNow();
    return this.closing;
  }

  private async closeNow(): Promise<void> {
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    await this.endConnections([...this.connections]);
    await stopped;
    this.removeSocketFile();
  }

  /** Connections in transmission on the export of that name. */
  connectionsTo(exportName: string): number {
    return [...this.connections].filter((c) => c.exportName === exportName).length;
  }

  /**
   * End every connection in transmission on that export as close() ends
   * them all: requests in flight are answered, further ones refused, and
   * connections still open after the grace period are cut.
   */
  disconnectExport(exportName: string): Promise<void> {
    return this.endConnections([...this.connections].filter((c) => c.exportName === exportName));
  }

  private async endConnections(connections: Connection[]): Promise<void> {
    for (const c of connections) c.shutdown();
    const all = Promise.all(connections.map((c) => c.done));
    let timer: NodeJS.Timeout | undefined;
    const grace = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        for (const c of connections) c.destroy();
        resolve();
      }, this.opts.shutdownGraceMs);
    });
    await Promise.race([all, grace]);
    clearTimeout(timer);
    await all;
  }

  private accept(socket: net.Socket): void {
    const id = this.nextId++;
    if (this.closing || this.connections.size >= this.opts.maxConnections) {
      this.opts.log(
        `connection ${id}: ${this.closing ? 'server is shutting down' : `limit of ${this.opts.maxConnections} connections reached`}; closed`,
      );
      socket.on('error', () => undefined);
      socket.destroy();
      return;
    }
    const c = new Connection(socket, id, this.exports, {
      handshakeTimeoutMs: this.opts.handshakeTimeoutMs,
      payloadTimeoutMs: this.opts.payloadTimeoutMs,
      connectionBudgetBytes: this.opts.connectionBudgetBytes,
      serverBudget: this.serverBudget,
      replyLimits: { backlogBytes: this.opts.replyBacklogBytes, drainTimeoutMs: this.opts.replyDrainTimeoutMs },
      maxRequestsInFlight: this.opts.maxRequestsInFlight,
      lingerMs: 2000,
      tls: this.tls,
      log: this.opts.log,
    });
    this.connections.add(c);
    void c.done.then(() => this.connections.delete(c));
  }

  private listenOn(options: net.ListenOptions | { fd: number }): Promise<void> {
    return new Promise((resolve, reject) => {
      const onError = (e: Error) => reject(e);
      this.server.once('error', onError);
      this.server.listen(options, () => {
        this.server.off('error', onError);
        resolve();
      });
    });
  }

  private removeSocketFile(): void {
    const f = this.socketFile;
    this.socketFile = undefined;
    if (f) removeUnixSocket(f.path, f.ino);
  }
}
