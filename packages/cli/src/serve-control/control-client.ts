import * as net from 'net';
import { ControlReply, ControlRequest, replySchema } from './protocol';

/** No reply within this time: the server is stuck (a suspend waits for in-flight requests, which are bounded). */
const REPLY_TIMEOUT_MS = 120_000;

/** The connection could not be made: nobody listens there. */
export class NoControlServer extends Error {
  constructor(
    readonly socketPath: string,
    readonly code: string,
  ) {
    super(`no dmtool serve listens on ${socketPath} (${code})`);
    this.name = 'NoControlServer';
  }
}

/** Send one request to a control socket and read its one reply. */
export function askControl(socketPath: string, request: ControlRequest): Promise<ControlReply> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ path: socketPath });
    let connected = false;
    let text = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`${socketPath}: no reply within ${REPLY_TIMEOUT_MS / 1000} s`));
    }, REPLY_TIMEOUT_MS);
    const finish = (f: () => void) => {
      clearTimeout(timer);
      socket.destroy();
      f();
    };
    socket.setEncoding('utf8');
    socket.on('connect', () => {
      connected = true;
      socket.write(`${JSON.stringify(request)}\n`);
    });
    socket.on('data', (chunk: string) => {
      text += chunk;
      const nl = text.indexOf('\n');
      if (nl < 0) return;
      try {
        const reply = replySchema.parse(JSON.parse(text.slice(0, nl)));
        finish(() => resolve(reply));
      } catch {
        finish(() => reject(new Error(`${socketPath}: the reply is not the control protocol's`)));
      }
    });
    socket.on('error', (e: NodeJS.ErrnoException) => {
      finish(() => reject(connected ? e : new NoControlServer(socketPath, e.code ?? 'error')));
    });
    socket.on('end', () => finish(() => reject(new Error(`${socketPath}: the server closed the connection without a reply`))));
  });
}
