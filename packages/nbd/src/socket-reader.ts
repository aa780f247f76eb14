import type { Socket } from 'net';

/** The peer closed the connection, or a read did not complete in time. */
export class ConnectionClosed extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConnectionClosed';
  }
}

/** Read-ahead kept while nobody waits: beyond it the socket is paused, so a fast client meets TCP backpressure. */
const READ_AHEAD_BYTES = 1 << 20;

interface Waiter {
  bytes: number;
  resolve: (b: Buffer) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
}

/**
 * Exact-length reads from a socket: `read(n)` resolves with the next n
 * bytes, or rejects once the peer has gone. One read at a time.
 */
export class SocketReader {
  private chunks: Buffer[] = [];
  private bufferedBytes = 0;
  private waiter: Waiter | undefined;
  private closed: Error | undefined;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- each listener takes its own event's arguments
  private readonly listeners: [string, (...args: any[]) => void][];

  constructor(private readonly socket: Socket) {
    const end = (why: string) => {
      this.closed ??= new ConnectionClosed(why);
      this.settle();
    };
    this.listeners = [
      [
        'data',
        (chunk: Buffer) => {
          this.chunks.push(chunk);
          this.bufferedBytes += chunk.length;
          this.settle();
          if (this.bufferedBytes >= READ_AHEAD_BYTES && (!this.waiter || this.bufferedBytes >= this.waiter.bytes)) socket.pause();
        },
      ],
      ['end', () => end('peer closed the connection')],
      ['close', () => end('connection closed')],
      ['error', (e: Error) => end(`connection failed: ${e.message}`)],
    ];
    for (const [event, f] of this.listeners) socket.on(event, f);
  }

  /**
   * Stop reading the socket (before a TLS layer takes it over) and say how
   * many bytes were read beyond the last `read`: the peer sent them too
   * early, so they belong to no message.
   */
  detach(): number {
    this.socket.pause();
    for (const [event, f] of this.listeners) this.socket.off(event, f);
    return this.bufferedBytes;
  }

  /** The next `bytes` bytes; with `timeoutMs`, the connection is destroyed if they do not all arrive in time. */
  read(bytes: number, timeoutMs?: number): Promise<Buffer> {
    if (this.waiter) return Promise.reject(new Error('SocketReader: one read at a time'));
    if (bytes <= this.bufferedBytes) return Promise.resolve(this.take(bytes));
    if (this.closed) return Promise.reject(this.closed);
    return new Promise<Buffer>((resolve, reject) => {
      const w: Waiter = { bytes, resolve, reject };
      if (timeoutMs !== undefined) {
        w.timer = setTimeout(() => {
          this.closed ??= new ConnectionClosed(`no complete message within ${timeoutMs} ms`);
          this.socket.destroy();
          this.settle();
        }, timeoutMs);
      }
      this.waiter = w;
      this.socket.resume();
    });
  }

  /**
   * The next `bytes` bytes, copied straight into `target` at `offset`: a
   * payload that arrived in several socket chunks is copied once, not
   * gathered into a buffer of its own first.
   */
  async readInto(target: Buffer, offset: number, bytes: number): Promise<void> {
    const end = offset + bytes;
    for (let at = offset; at < end;) {
      // Whatever the first buffered chunk holds (a view, no copy), or the next byte to arrive.
      const piece = await this.read(Math.min(end - at, this.chunks.length > 0 ? this.chunks[0].length : 1));
      piece.copy(target, at);
      at += piece.length;
    }
  }

  /** Read and drop `bytes` bytes without holding them (a payload the server refuses). */
  async skip(bytes: number, timeoutMs?: number): Promise<void> {
    let left = bytes;
    while (left > 0) {
      const n = Math.min(left, Math.max(this.bufferedBytes, 1), READ_AHEAD_BYTES);
      await this.read(n, timeoutMs);
      left -= n;
    }
  }

  private settle(): void {
    const w = this.waiter;
    if (!w) return;
    if (this.bufferedBytes >= w.bytes) {
      this.waiter = undefined;
      if (w.timer) clearTimeout(w.timer);
      w.resolve(this.take(w.bytes));
    } else if (this.closed) {
      this.waiter = undefined;
      if (w.timer) clearTimeout(w.timer);
      w.reject(this.closed);
    }
  }

  private take(bytes: number): Buffer {
    this.bufferedBytes -= bytes;
    const first = this.chunks[0];
    if (first && first.length === bytes) {
      this.chunks.shift();
      return first;
    }
    if (first && first.length > bytes) {
      this.chunks[0] = first.subarray(bytes);
      return first.subarray(0, bytes);
    }
    const out = Buffer.allocUnsafe(bytes);
    let at = 0;
    while (at < bytes) {
      const c = this.chunks[0];
      const n = Math.min(c.length, bytes - at);
      c.copy(out, at, 0, n);
      at += n;
      if (n === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(n);
    }
    return out;
  }
}
