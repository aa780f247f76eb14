import * as path from 'path';
import { dmtool } from '../support/cli';
import { makeImage, readRange, sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';
import * as fs from 'fs';

/** mirror-create writes over a recognised format only with --force; an empty MBR signature alone is no format. */
const MiB = 1 << 20;

describe('mirror-create and what the log device already holds', () => {
  let dir: string;
  let legs: string[];
  let log: string;
  beforeEach(() => {
    dir = tempDir('dmtool-create-fmt-');
    legs = [0, 1].map((i) => path.join(dir, `leg${i}.img`));
    legs.forEach((p, i) => makeImage(p, 4 * MiB, `LEG${i}`));
    log = path.join(dir, 'log.img');
    makeImage(log, 128 * 1024);
  });
  afterEach(() => removeDir(dir));

  function put(at: number, bytes: Buffer): void {
    const fd = fs.openSync(log, 'r+');
    fs.writeSync(fd, bytes, 0, bytes.length, at);
    fs.closeSync(fd);
  }

  it('an ext4 signature is refused without --force and overwritten with it', () => {
    put(1080, Buffer.from([0x53, 0xef]));
    const before = sha256File(log);
    const r = dmtool(['mirror-create', '--log', log, '--region-size', '256', ...legs]);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/holds an ext2\/3\/4 filesystem \(magic 0xEF53\) at sector 2; give --force to overwrite it\n$/);
    expect(sha256File(log)).toBe(before);
    const f = dmtool(['mirror-create', '--log', log, '--region-size', '256', '--force', ...legs]);
    expect(f.stderr).toBe('');
    expect(f.status).toBe(0);
    expect(readRange(log, 0, 4).toString('latin1')).toBe('rRiM');
  });

  it('a boot signature with an empty partition table is not a format', () => {
    put(510, Buffer.from([0x55, 0xaa]));
    const r = dmtool(['mirror-create', '--log', log, '--region-size', '256', ...legs]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(readRange(log, 0, 4).toString('latin1')).toBe('rRiM');
  });
});
