import * as fs from 'fs';
import * as path from 'path';
import { dmtool } from '../support/cli';
import { removeDir, tempDir } from '../support/loop';

describe('dmtool demo', () => {
  let dir: string;
  beforeEach(() => (dir = tempDir()));
  afterEach(() => removeDir(dir));

  it('runs every step on generated images and removes them', () => {
    const r = dmtool(['demo', '--size', '16M', '--json'], { env: { TMPDIR: dir } });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.ok).toBe(true);
    expect(out.steps.map((s: { step: string }) => s.step)).toEqual([
      'kcopyd copy',
      'kcopyd zero',
      'snapshot-create',
      'origin writes',
      'snapshot view',
      'nbd serve',
      'snapshot-merge',
      'mirror-create',
      'mirror-resync (full)',
      'mirror-resync (dirty regions)',
      'mirror-check',
    ]);
    expect(out.steps.every((s: { ok: boolean }) => s.ok)).toBe(true);
    const merge = out.steps.find((s: { step: string }) => s.step === 'snapshot-merge');
    expect(merge.detail).toMatch(/^512 chunks merged .*; status 16\/16384 16; origin restored \(sha256 equal\)$/);
    const served = out.steps.find((s: { step: string }) => s.step === 'nbd serve');
    expect(served.detail).toBe("snapshot exported read-only on nbd.sock, read through dmtool's NBD client: sha256 equal to snapshot-read");
    expect(served.bytes).toBe(16 << 20);
    const dirty = out.steps.find((s: { step: string }) => s.step === 'mirror-resync (dirty regions)');
    expect(dirty.detail).toBe(
      'log had 29/32 in sync; copied regions 3, 16, 31 only (3 regions); status 3 leg0.img leg1.img leg2.img 32/32 1 AAA 3 disk mirror-log.img A',
    );
    expect(fs.readdirSync(dir)).toEqual([]);
  });

  it('--keep keeps the images in an empty folder, and refuses a folder that is not empty', () => {
    const keep = path.join(dir, 'kept');
    const r = dmtool(['demo', '--size', '8M', '--keep', keep]);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/all 11 steps passed; images kept in /);
    expect(fs.readdirSync(keep).sort()).toEqual(
      [
        'copy-1.img',
        'copy-2.img',
        'copy-3.img',
        'cow.img',
        'leg0.img',
        'leg1.img',
        'leg2.img',
        'mirror-log.img',
        'origin.img',
        'source.img',
      ].sort(),
    );
    const again = dmtool(['demo', '--keep', keep]);
    expect(again.status).toBe(2);
    expect(again.stderr).toBe(`dmtool: --keep folder ${keep} is not empty; name a new or empty folder\n`);
  });
});
