import { SingleBar } from 'cli-progress';
import { formatBytes } from './units';

/**
 * A progress bar on stderr when it is a terminal (and not --json). It is fed
 * completed writes only, so it never runs ahead of the work.
 */
export class Progress {
  private bar?: SingleBar;
  private readonly total: number;

  constructor(label: string, totalBytes: number, enabled = process.stderr.isTTY === true) {
    this.total = totalBytes;
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
    if (!this.bar) return;
    const s = (Date.now() - this.startMs) / 1000;
    const speed = s > 0 ? `${(doneBytes / s / 1e6).toFixed(1)} MB/s` : '';
    this.bar.update(Math.min(doneBytes, this.total), { done: formatBytes(doneBytes), speed });
  }

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
  }
}
