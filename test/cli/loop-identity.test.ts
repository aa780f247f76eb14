import * as fs from 'fs';
import * as path from 'path';
import { dmtool } from '../support/cli';
import { unpackFixture } from '../support/fixtures';
import { makeImage, sha256File } from '../support/images';
import { attachLoop, describeLoop, detachAll, removeDir, tempDir } from '../support/loop';

/**
 * A loop device is the same device as its backing file (and as any other
 * loop device on that file): "given twice" is refused before anything is
 * opened for writing, outputs (-o) included.
 */
const MiB = 1 << 20;

describeLoop('a loop device counts as its backing file', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir('dmtool-loop-id-');
  });
  afterEach(() => {
    detachAll();
    removeDir(dir);
  });

  function expectRefused(args: string[], message: RegExp, files: string[]): void {
    const before = files.map((f) => [sha256File(f), fs.statSync(f).size]);
    const r = dmtool(args);
    expect(r.stdout).toBe('');
    expect(r.stderr).toMatch(message);
    expect(r.stderr.split('\n').filter((l) => l)).toHaveLength(1);
    expect(r.status).toBe(2);
    expect(files.map((f) => [sha256File(f), fs.statSync(f).size])).toEqual(before);
  }

  it('snapshot-read from a loop device refuses -o naming its backing file (which it would truncate)', () => {
    const fx = unpackFixture('snapshot-cow-chunk8', dir);
    const origin = path.join(fx.dir, 'origin.img');
    const cow = path.join(fx.dir, 'cow.img');
    const loop = attachLoop(origin);
    expectRefused(
      ['snapshot-read', loop.path, cow, '-o', origin],
      new RegExp(`^dmtool: --output .*origin\\.img is ${loop.path}, which is being read; name another file\\n$`),
      [origin, cow],
    );
  });

  it('mirror-create refuses a log that is the backing file of a leg', () => {
    const legs = [0, 1].map((i) => path.join(dir, `leg${i}.img`));
    legs.forEach((p, i) => makeImage(p, 4 * MiB, `LEG${i}`));
    const loop = attachLoop(legs[0]);
    expectRefused(
      ['mirror-create', '--log', legs[0], '--region-size', '256', loop.path, legs[1]],
      new RegExp(`^dmtool: the log .*leg0\\.img is the same device as leg 0 ${loop.path}\\n$`),
      legs,
    );
  });

  it('mirror-resync refuses a loop device and its backing file as two legs', () => {
    const legs = [0, 1].map((i) => path.join(dir, `leg${i}.img`));
    legs.forEach((p, i) => makeImage(p, 4 * MiB, `LEG${i}`));
    const log = path.join(dir, 'log.img');
    makeImage(log, 64 * 1024);
    expect(dmtool(['mirror-create', '--log', log, '--region-size', '256', ...legs]).status).toBe(0);
    const loop = attachLoop(legs[1]);
    expectRefused(
      ['mirror-resync', '--log', log, legs[0], legs[1], loop.path],
      new RegExp(`^dmtool: leg 2 ${loop.path} is the same device as leg 1 .*leg1\\.img\\n$`),
      [...legs, log],
    );
  });

  it('copy refuses a loop device as the destination of its own backing file, and two loop devices on one file', () => {
    const src = path.join(dir, 'src.img');
    makeImage(src, MiB, 'SRC');
    const a = attachLoop(src);
    const b = attachLoop(src);
    expectRefused(['copy', src, a.path], new RegExp(`^dmtool: destination 0 ${a.path} is the same device as source .*src\\.img\\n$`), [
      src,
    ]);
    expectRefused(['copy', a.path, b.path], new RegExp(`^dmtool: destination 0 ${b.path} is the same device as source ${a.path}\\n$`), [
      src,
    ]);
  });
});
