import { spawnSync } from 'child_process';
import * as path from 'path';
import { makeImage, sha256File } from './helpers/images';
import { removeDir, tempDir } from './helpers/loop';

const examples = path.join(__dirname, '..', 'examples');

function runExample(name: string, args: string[]) {
  return spawnSync(process.execPath, [path.join(examples, name), ...args], { encoding: 'utf8' });
}

describe('examples', () => {
  let dir: string;
  beforeEach(() => (dir = tempDir()));
  afterEach(() => removeDir(dir));

  it('copy-to-many.js copies an image to three destinations with progress', () => {
    const src = path.join(dir, 'src.img');
    makeImage(src, 3 << 20, 'EX');
    const dests = [1, 2, 3].map((i) => path.join(dir, `d${i}.img`));
    dests.forEach((d) => makeImage(d, 3 << 20));
    const r = runExample('copy-to-many.js', [src, ...dests]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    // 6 pieces of 1024 sectors: 16, 33, 50, 66, 83, 100 percent; the example prints quarters.
    expect(r.stdout).toBe('progress 50%\nprogress 100%\ncopied 6144 sectors to 3 destinations: readErr=false writeErr=0\n');
    for (const d of dests) expect(sha256File(d)).toBe(sha256File(src));
  });
});
