import type { SingleBar } from 'cli-progress';
import * as fs from 'fs';
import { formatBytes, formatDuration, formatRate } from './units';

/** The progress of the running command, for SIGUSR1. */
let current: Progress | undefined;

/** One progress line on stderr, as dd prints on SIGUSR1; nothing for commands without progress. */
export function reportProgress(): void {
  current?.report();
}

/**
 * How a command shows progress: a bar on a terminal, machine-readable lines
 * on a descriptor (docs/json.md#progress-lines), or nothing.
 */
export type ProgressMode = { kind: 'bar' } | { kind: 'lines'; fd: number } | { kind: 'off' };

/** Machine-readable lines are written this often, and once more at the end. */
export const PROGRESS_LINE_INTERVAL_MS = 1000;

/** One machine-readable progress line: `progress <done-bytes> <total-bytes> <percent>`. */
export function progressLine(doneBytes: number, totalBytes: number): string {
  const percent = totalBytes > 0 ? Math.floor((100 * Math.min(doneBytes, totalBytes)) / totalBytes) : 100;
  return `progress ${doneBytes} ${totalBytes} ${percent}\n`;
}

export interface ProgressOptions {
  /** Where the progress goes; see progressModeFor. */
  mode: ProgressMode;
  /** The --rate limit, if any: the shown rate never exceeds it. */
  rateBytesPerSecond?: number;
}

/**
 * A command's progress, fed completed work only so it never runs ahead.
 * The clock starts when it is made (the command's start), so the rate and
 * the ETA count every second the command ran. The total may be given later
 * (setTotal), when the work has been planned.
 */
export class Progress {
  private bar?: SingleBar;
  private ticker?: NodeJS.Timeout;
  private totalBytes = 0;
  private doneBytes = 0;
  private readonly startMs = Date.now();

  constructor(
    private readonly label: string,
    private readonly opts: ProgressOptions,
    totalBytes?: number,
  ) {
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the running command's progress, for SIGUSR1
    current = this;
    if (totalBytes !== undefined) this.setTotal(totalBytes);
  }

  /** Start showing progress towards this total (once). */
  setTotal(totalBytes: number): void {
    if (this.bar || this.ticker) return;
    this.totalBytes = totalBytes;
    const mode = this.opts.mode;
    if (mode.kind === 'lines') {
      this.writeLine();
      this.ticker = setInterval(() => this.writeLine(), PROGRESS_LINE_INTERVAL_MS);
      this.ticker.unref();
    } else if (mode.kind === 'bar' && totalBytes > 0) {
      // Only a terminal shows the bar: other runs do not load cli-progress.
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      const { SingleBar: Bar } = require('cli-progress') as typeof import('cli-progress');
      this.bar = new Bar({
        stream: process.stderr,
        format: `${this.label} [{bar}] {percentage}% | {done} of {size} | {speed} | eta {timeLeft}`,
        hideCursor: true,
        fps: 5,
      });
      this.bar.start(totalBytes, Math.min(this.doneBytes, totalBytes), this.payload());
    }
  }

  update(doneBytes: number): void {
    this.doneBytes = doneBytes;
    this.bar?.update(Math.min(doneBytes, this.totalBytes), this.payload());
  }

  /** End the bar, or write the last line. */
  stop(): void {
    if (this.ticker) {
      clearInterval(this.ticker);
      this.ticker = undefined;
      this.writeLine();
    }
    this.bar?.stop();
    this.bar = undefined;
    if (current === this) current = undefined;
  }

  /** The SIGUSR1 line. */
  report(): void {
    const s = this.seconds();
    const percent = this.totalBytes > 0 ? Math.floor((100 * this.doneBytes) / this.totalBytes) : 100;
    process.stderr.write(
      `${this.label}: ${this.doneBytes} of ${this.totalBytes} bytes (${formatBytes(this.doneBytes)} of ${formatBytes(this.totalBytes)}, ${percent}%) done in ${s.toFixed(1)} s, ${formatRate(this.doneBytes, s)}\n`,
    );
  }

  private seconds(): number {
    return (Date.now() - this.startMs) / 1000;
  }

  /** Bytes per second since the command started, never above --rate. */
  private bytesPerSecond(): number {
    const s = this.seconds();
    if (s <= 0) return 0;
    const measured = this.doneBytes / s;
    return this.opts.rateBytesPerSecond === undefined ? measured : Math.min(measured, this.opts.rateBytesPerSecond);
  }

  private payload(): Record<string, string> {
    const rate = this.bytesPerSecond();
    const left = Math.max(0, this.totalBytes - this.doneBytes);
    return {
      done: formatBytes(this.doneBytes),
      size: formatBytes(this.totalBytes),
      speed: this.doneBytes > 0 ? formatRate(rate, 1) : '-',
      timeLeft: left === 0 ? '0s' : rate > 0 ? formatDuration(left / rate) : '-',
    };
  }

  private writeLine(): void {
    if (this.opts.mode.kind !== 'lines') return;
    try {
      fs.writeSync(this.opts.mode.fd, progressLine(this.doneBytes, this.totalBytes));
    } catch {
      // A reader that went away or a full pipe loses a line, never the work.
    }
  }
}
