import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

/**
 * Loop devices for tests. Only devices this process attached are ever used
 * or detached; each is backed by a sparse file in a private temporary folder.
 */
export function loopSupported(): boolean {
  if (process.getuid?.() !== 0) return false;
  try {
    execFileSync('losetup', ['--version'], { stdio: 'ignore' });
    return fs.existsSync('/dev/loop-control');
  } catch {
    return false;
  }
}

/** In CI loop tests must run: a machine without loop devices fails loudly there. */
export const describeLoop: jest.Describe = loopSupported() || process.env.CI === 'true' ? describe : describe.skip;

export interface LoopDevice {
  path: string;
  backingFile: string;
  detach(): void;
}

const attached = new Set<LoopDevice>();

export function attachLoop(backingFile: string, opts: { readOnly?: boolean; sectorSize?: number } = {}): LoopDevice {
  const args = ['-f', '--show'];
  if (opts.readOnly) args.push('-r');
  if (opts.sectorSize) args.push('--sector-size', String(opts.sectorSize));
  args.push(backingFile);
  const devPath = execFileSync('losetup', args, { encoding: 'utf8' }).trim();
  const dev: LoopDevice = {
    path: devPath,
    backingFile,
    detach() {
      if (!attached.has(dev)) return;
      attached.delete(dev);
      execFileSync('losetup', ['-d', devPath]);
    },
  };
  attached.add(dev);
  return dev;
}

/** Make a sparse file of `bytes` and attach it. */
export function makeLoop(dir: string, name: string, bytes: number, opts: { readOnly?: boolean; sectorSize?: number } = {}): LoopDevice {
  const file = path.join(dir, name);
  fs.writeFileSync(file, '');
  fs.truncateSync(file, bytes);
  return attachLoop(file, opts);
}

export function detachAll(): void {
  for (const dev of [...attached]) {
    try {
      dev.detach();
    } catch {
      // keep detaching the others
    }
  }
}

export function tempDir(prefix = 'dmtool-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  fs.rmSync(dir, { recursive: true, force: true });
}
