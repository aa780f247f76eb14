import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CliError } from '../util/errors';
import { ExitCode, ExitCodeValue } from '../util/exit-codes';
import { Output } from '../util/output';
import { formatBytes, formatRate, parseBytes } from '../util/units';
import { demoSteps, DemoContext } from './steps';

export interface DemoOptions {
  keep?: string;
  size: string;
  json: boolean;
}

export interface StepReport {
  step: string;
  detail: string;
  bytes?: number;
  seconds?: number;
  ok: boolean;
}

/** Run every demo step on images in a fresh folder; remove it afterwards unless --keep. */
export async function runDemo(o: DemoOptions): Promise<ExitCodeValue> {
  const out = new Output(o.json, 'demo');
  const sizeBytes = parseBytes(o.size);
  if (sizeBytes < 4 * 2 ** 20 || sizeBytes > 4 * 2 ** 30 || sizeBytes % 2 ** 20 !== 0) {
    throw new CliError('usage', '--size must be a whole number of MiB between 4M and 4G');
  }
  const dir = o.keep ? prepareKeepDir(o.keep) : fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-demo-'));
  const reports: StepReport[] = [];
  const ctx: DemoContext = {
    dir,
    sizeBytes,
    report(r) {
      reports.push(r);
      const figures =
        r.bytes !== undefined && r.seconds !== undefined ? ` (${formatBytes(r.bytes)}, ${formatRate(r.bytes, r.seconds)})` : '';
      out.line(`${r.ok ? 'ok  ' : 'FAIL'} ${r.step}: ${r.detail}${figures}`);
    },
  };
  out.line(`dmtool demo in ${dir} (images of ${formatBytes(sizeBytes)})`);
  try {
    for (const step of demoSteps) await step(ctx);
  } finally {
    if (!o.keep) fs.rmSync(dir, { recursive: true, force: true });
  }
  const ok = reports.every((r) => r.ok);
  out.result({ dryRun: false, dir, kept: Boolean(o.keep), steps: reports }, ok);
  out.line(
    ok ? `all ${reports.length} steps passed${o.keep ? `; images kept in ${dir}` : '; temporary images removed'}` : 'some steps failed',
  );
  return ok ? ExitCode.OK : ExitCode.IO_ERROR;
}

function prepareKeepDir(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  if (fs.readdirSync(dir).length > 0) throw new CliError('usage', `--keep folder ${dir} is not empty; name a new or empty folder`);
  return path.resolve(dir);
}

/** A sparse image filled with recognisable content: every 4 KiB block names itself. */
export function writePatternImage(file: string, sizeBytes: number, tag: string): void {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, sizeBytes);
  const fd = fs.openSync(file, 'r+');
  try {
    const block = Buffer.alloc(1 << 20);
    for (let off = 0; off < sizeBytes; off += block.length) {
      for (let b = 0; b < block.length; b += 4096) {
        block.fill(((off + b) / 4096) & 0xff, b, b + 4096);
        block.write(`${tag} block ${(off + b) / 4096}\n`, b);
      }
      fs.writeSync(fd, block, 0, Math.min(block.length, sizeBytes - off), off);
    }
  } finally {
    fs.closeSync(fd);
  }
}

export function sha256File(file: string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(1 << 20);
  try {
    for (let n = fs.readSync(fd, buf); n > 0; n = fs.readSync(fd, buf)) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

export function emptyImage(file: string, sizeBytes: number): void {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, sizeBytes);
}
