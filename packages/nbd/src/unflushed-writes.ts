/**
 * Which acknowledged writes no completed flush covers yet, per connection,
 * as counts in flush epochs (no data): a flush covers the writes answered
 * before it was sent, on every connection of the server (multi-conn), so
 * each flush sent opens a new epoch and its reply retires the epochs up to
 * its own. A connection that dropped with writes in uncovered epochs lost
 * them as far as the device can tell: its server may have died with them
 * in a volatile cache. Those counts wait for the next flush to report.
 */
export interface TrackedConnection {
  readonly alive: boolean;
}

export class UnflushedWrites {
  private epoch = 0;
  /** Per connection: [epoch, writes acknowledged in it] for epochs no flush has retired, oldest first. */
  private readonly byConnection = new Map<TrackedConnection, [number, number][]>();
  private lost = 0;

  /** A write, zero or trim answered on `conn`. */
  acknowledged(conn: TrackedConnection): void {
    let epochs = this.byConnection.get(conn);
    if (!epochs) this.byConnection.set(conn, (epochs = []));
    const last = epochs[epochs.length - 1];
    if (last && last[0] === this.epoch) last[1]++;
    else epochs.push([this.epoch, 1]);
  }

  /** A flush is about to be sent; returns the epoch its reply retires. */
  flushSent(): number {
    return this.epoch++;
  }

  /**
   * The flush sent in `epoch` completed: live connections' writes up to it
   * are durable. A dropped connection's writes are lost: its server may not
   * be the one that answered the flush.
   */
  flushed(epoch: number): void {
    for (const [conn, epochs] of this.byConnection) {
      if (!conn.alive) {
        this.lost += epochs.reduce((n, [, count]) => n + count, 0);
        this.byConnection.delete(conn);
        continue;
      }
      while (epochs.length > 0 && epochs[0][0] <= epoch) epochs.shift();
      if (epochs.length === 0) this.byConnection.delete(conn);
    }
  }

  /** Writes lost since the last call (errseq-like: each loss is reported once). */
  takeLost(): number {
    const n = this.lost;
    this.lost = 0;
    return n;
  }
}
