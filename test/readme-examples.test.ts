import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { removeDir, tempDir } from './support/loop';

/**
 * Each package README's examples run as written: a ```js block as an ES
 * module (against the built packages, as a user would import them), a ```sh
 * block with bash -e and `dmtool` on the PATH, each in an empty folder. A
 * ```text block right after a ```js block is its exact output.
 */
const root = path.join(__dirname, '..');
const readmes = [
  'packages/devices',
  'native',
  'packages/kcopyd',
  'packages/dm-snapshot',
  'packages/dm-mirror',
  'packages/targets',
  'packages/nbd',
  'packages/lvm',
  'packages/cli',
].map((dir) => path.join(dir, 'README.md'));

interface Example {
  readme: string;
  index: number;
  lang: 'js' | 'sh';
  code: string;
  expectedStdout?: string;
}

function examplesOf(readme: string): Example[] {
  const text = fs.readFileSync(path.join(root, readme), 'utf8');
  const blocks = [...text.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].map((m) => ({ lang: m[1], code: m[2] }));
  const examples: Example[] = [];
  blocks.forEach((b, i) => {
    if (b.lang !== 'js' && b.lang !== 'sh') return;
    const next = blocks[i + 1];
    const expectedStdout = b.lang === 'js' && next?.lang === 'text' ? next.code : undefined;
    examples.push({ readme, index: examples.length, lang: b.lang, code: b.code, expectedStdout });
  });
  return examples;
}

const examples = readmes.flatMap(examplesOf);

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
    const file = path.join(dir, example.lang === 'js' ? 'example.mjs' : 'example.sh');
    fs.writeFileSync(file, example.code);
    const r =
      example.lang === 'js'
        ? spawnSync(process.execPath, [file], { cwd: dir, encoding: 'utf8' })
        : spawnSync('bash', ['-e', file], {
            cwd: dir,
            encoding: 'utf8',
            env: { ...process.env, PATH: `${path.join(root, 'node_modules', '.bin')}:${process.env.PATH ?? ''}` },
          });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    if (example.expectedStdout !== undefined) expect(r.stdout).toBe(example.expectedStdout);
  });
});
