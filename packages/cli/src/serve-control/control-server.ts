import * as net from 'net';
import { listenOnUnixSocket, removeUnixSocket } from '@dmtool/nbd';
import {
  ControlError,
  ControlReply,
  ControlRequest,
  IDLE_TIMEOUT_MS,
  MAX_CONTROL_CONNECTIONS,
  MAX_REQUEST_BYTES,
  MAX_REQUESTS_PER_CONNECTION,
  requestSchema,
} from './protocol';

/** Answers one request with the lines to print; throws a ControlError to refuse it. */
export type ControlHandler = (request: ControlRequest) => Promise<string[]>;

/**
 * The control socket of `dmtool serve`: a unix socket (mode 0600) speaking
 * JSON lines. Each connection's requests are answered one at a time, in
 * order; a line over MAX_REQUEST_BYTES, more than MAX_REQUESTS_PER_CONNECTION
 * requests or IDLE_TIMEOUT_MS of silence close the connection.
 */
export class ControlServer {
  private readonly server: net.Server;
  private readonly sockets = new Set<net.Socket>();
  private socketFile?: { path: string; ino: number };

  constructor(private readonly handle: ControlHandler) {
    this.server = net.createServer((socket) => this.accept(socket));
  }

  async listen(socketPath: string): Promise<void> {
    this.socketFile = { path: socketPath, ino: await listenOnUnixSocket(this.server, socketPath) };
  }

  /** Stop accepting, cut open control connections, remove the socket file. */
  async close(): Promise<void> {
    const stopped = new Promise<void>((resolve) => this.server.close(() => resolve()));
    for (const s of this.sockets) s.destroy();
    await stopped;
    const f = this.socketFile;
    this.socketFile = undefined;
    if (f) removeUnixSocket(f.path, f.ino);
  }

  private accept(socket: net.Socket): void {
    socket.on('error', () => undefined);
    if (this.sockets.size >= MAX_CONTROL_CONNECTIONS) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.once('close', () => this.sockets.delete(socket));
    socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy());
    void this.serve(socket);
  }

  private async serve(socket: net.Socket): Promise<void> {
    let pending = '';
    let answered = 0;
    let busy = false;
    let clientEnded = false;
    const lines: string[] = [];
    const next = async (): Promise<void> => {
      if (busy) return;
      busy = true;
      try {
        while (lines.length > 0 && !socket.destroyed) {
          const reply = await this.answer(lines.shift()!);
          socket.write(`${JSON.stringify(reply)}\n`);
          if (++answered >= MAX_REQUESTS_PER_CONNECTION) socket.end();
        }
      } finally {
        busy = false;
        if (clientEnded) socket.end();
        else if (lines.length === 0 && !socket.destroyed) socket.resume();
      }
    };
    socket.setEncoding('utf8');
    let refused = false;
    socket.on('data', (chunk: string) => {
      if (refused) return;
      pending += chunk;
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        lines.push(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
      }
      if (Buffer.byteLength(pending) >= MAX_REQUEST_BYTES || lines.some((l) => Buffer.byteLength(l) >= MAX_REQUEST_BYTES)) {
        refused = true;
        lines.length = 0;
        socket.end(`${JSON.stringify(refusal(new ControlError('bad-input', `a request is at most ${MAX_REQUEST_BYTES} bytes`)))}\n`);
        return;
      }
      // One request at a time: read no more until the queued ones are answered.
      if (lines.length > 0) {
        socket.pause();
        void next();
      }
    });
    socket.on('end', () => {
      // The client sent its last request: answer what is queued, then close.
      clientEnded = true;
      if (!busy) socket.end();
    });
  }

  private async answer(line: string): Promise<ControlReply> {
    let request: ControlRequest;
    try {
      request = requestSchema.parse(JSON.parse(line));
    } catch {
      return refusal(new ControlError('bad-input', 'not a request: one JSON object per line, see docs/serve-ctl.md'));
    }
    try {
      return { ok: true, lines: await this.handle(request) };
    } catch (e) {
      return refusal(e instanceof ControlError ? e : new ControlError('io', e instanceof Error ? e.message : String(e)));
    }
  }
}

function refusal(e: ControlError): ControlReply {
  return { ok: false, error: { kind: e.kind, message: e.message } };
}
