import type { Socket } from 'net';
import { ConnectionClosed } from './socket-reader';

export interface ReplyLimits {
  /** Reply bytes queued in this process beyond which the connection is no longer read. */
  backlogBytes: number;
  /** Queued replies over the backlog, or a reply whose completion is awaited, must drain within this time. */
  drainTimeoutMs: number;
}

/**
 * Replies to one client. A client that does not read its replies is met
 * with backpressure: `drained()` holds back the next request until the
 * queue is under the backlog, and a client that does not read for
 * `drainTimeoutMs` is cut (`onTimeout` says why).
 */
export class ReplyWriter {
  private corked = false;

  constructor(
    private readonly socket: Socket,
    private readonly limits: ReplyLimits,
    private readonly onTimeout: (message: string) => void,
  ) {}

  /** One reply's buffers, back to back; `written` runs once the socket took them, or failed. */
  send(buffers: Buffer[], written?: () => void): void {
    if (this.socket.destroyed || !this.socket.writable) {
      written?.();
      return;
    }
    this.corkUntilCheckPhase();
    let timer: NodeJS.Timeout | undefined;
    if (written) {
      // `written` releases memory held for the reply: a client that does not read must not keep it.
      timer = setTimeout(() => this.cut(`a reply was not read within ${this.limits.drainTimeoutMs} ms`), this.limits.drainTimeoutMs);
    }
    buffers.forEach((b, i) => {
      if (i === buffers.length - 1 && written) {
        this.socket.write(b, () => {
          clearTimeout(timer);
          written();
        });
      } else {
        this.socket.write(b);
      }
    });
  }

  /**
   * Replies sent in one turn of the event loop (the requests whose I/O
   * completed together) leave in one writev, not one or two writes each:
   * the socket is corked until the loop's check phase.
   */
  private corkUntilCheckPhase(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    setImmediate(() => {
      this.corked = false;
      this.socket.uncork();
    });
  }

  /** Resolves once the queued replies are within the backlog; rejects if the connection closes or stays over it too long. */
  drained(): Promise<void> {
    // 'drain' comes only for a queue that reached the high-water mark, so a smaller backlog is never waited for.
    const backlogBytes = Math.max(this.limits.backlogBytes, this.socket.writableHighWaterMark);
    if (this.socket.writableLength <= backlogBytes) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (e?: Error) => {
        clearTimeout(timer);
        this.socket.off('drain', check);
        this.socket.off('close', closed);
        if (e) reject(e);
        else resolve();
      };
      const check = () => {
        if (this.socket.writableLength <= backlogBytes) done();
      };
      const closed = () => done(new ConnectionClosed('connection closed'));
      const timer = setTimeout(() => {
        this.cut(`replies not read within ${this.limits.drainTimeoutMs} ms`);
        done(new ConnectionClosed('replies not read'));
      }, this.limits.drainTimeoutMs);
      this.socket.on('drain', check);
      this.socket.on('close', closed);
    });
  }

  private cut(message: string): void {
    if (this.socket.destroyed) return;
    this.onTimeout(message);
    this.socket.destroy();
  }
}
