import * as fs from 'fs';
import * as path from 'path';
import { removeDir, tempDir } from './support/loop';
import { WORKSPACES } from './support/packing';
import { readmeExamples, runReadmeExample } from './support/readme-examples';

/**
 * Each package README's examples run as written: a ```js block as an ES
 * module (against the built packages, as a user would import them), a ```sh
 * block with bash -e and `dmtool` on the PATH, each in an empty folder. A
 * ```text block right after a ```js block is its exact output. The packaging
 * test runs them again against the packed packages.
 */
const root = path.join(__dirname, '..');
const readmes = WORKSPACES.map((dir) => path.join(dir, 'README.md'));

const examples = readmes.flatMap((readme) => readmeExamples(root, readme));

describe('package README examples', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
    // Imports resolve as in a project that installed the packages.
    fs.symlinkSync(path.join(root, 'node_modules'), path.join(dir, 'node_modules'));
  });
  afterEach(() => removeDir(dir));

  it('every package has a README with a runnable example', () => {
    for (const readme of readmes) expect(examples.some((e) => e.readme === readme)).toBe(true);
  });

  it.each(examples.map((e) => [`${e.readme} #${e.index + 1} (${e.lang})`, e] as const))('%s runs', (_name, example) => {
    const r = runReadmeExample(example, dir, path.join(root, 'node_modules', '.bin'));
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    if (example.expectedStdout !== undefined) expect(r.stdout).toBe(example.expectedStdout);
  });
});
