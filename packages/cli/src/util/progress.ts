import { SingleBar } from 'cli-progress';
import { formatBytes, formatRate } from './units';

/** The progress of the running command, for SIGUSR1. */
let current: Progress | undefined;

/** One progress line on stderr, as dd prints on SIGUSR1; nothing for commands without progress. */
export function reportProgress(): void {
  current?.report();
}

/**
 * A progress bar on stderr when it is a terminal (and not --json). It is fed
 * completed writes only, so it never runs ahead of the work.
 */
export class Progress {
  private bar?: SingleBar;
  private readonly total: number;
  private doneBytes = 0;

  constructor(
    private readonly label: string,
    totalBytes: number,
    enabled = process.stderr.isTTY === true,
  ) {
    this.total = totalBytes;
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the running command's progress, for SIGUSR1
    current = this;
    if (!enabled || totalBytes <= 0) return;
    this.bar = new SingleBar({
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {done} of {size} | {speed} | eta {eta_formatted}`,
      hideCursor: true,
      etaBuffer: 50,
      fps: 5,
    });
    this.bar.start(totalBytes, 0, { done: formatBytes(0), size: formatBytes(totalBytes), speed: '' });
  }

  private startMs = Date.now();

  update(doneBytes: number): void {
    this.doneBytes = doneBytes;
    if (!this.bar) return;
    const s = (Date.now() - this.startMs) / 1000;
    const speed = s > 0 ? `${(doneBytes / s / 1e6).toFixed(1)} MB/s` : '';
    this.bar.update(Math.min(doneBytes, this.total), { done: formatBytes(doneBytes), speed });
  }

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
    if (current === this) current = undefined;
  }

  report(): void {
    const s = (Date.now() - this.startMs) / 1000;
    const percent = this.total > 0 ? Math.floor((100 * this.doneBytes) / this.total) : 100;
    process.stderr.write(
      `${this.label}: ${this.doneBytes} of ${this.total} bytes (${formatBytes(this.doneBytes)} of ${formatBytes(this.total)}, ${percent}%) done in ${s.toFixed(1)} s, ${formatRate(this.doneBytes, s)}\n`,
    );
  }
}
