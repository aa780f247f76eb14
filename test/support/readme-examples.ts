import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

/**
 * The examples of a package README: a ```js block runs as an ES module, a
 * ```sh block with bash -e; a ```text block right after a ```js block is
 * its exact output.
 */
export interface ReadmeExample {
  readme: string;
  index: number;
  lang: 'js' | 'sh';
  code: string;
  expectedStdout?: string;
}

/** The examples of `readme` (a path relative to `root`), in order. */
export function readmeExamples(root: string, readme: string): ReadmeExample[] {
  const text = fs.readFileSync(path.join(root, readme), 'utf8');
  const blocks = [...text.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].map((m) => ({ lang: m[1], code: m[2] }));
  const examples: ReadmeExample[] = [];
  blocks.forEach((b, i) => {
    if (b.lang !== 'js' && b.lang !== 'sh') return;
    const next = blocks[i + 1];
    const expectedStdout = b.lang === 'js' && next?.lang === 'text' ? next.code : undefined;
    examples.push({ readme, index: examples.length, lang: b.lang, code: b.code, expectedStdout });
  });
  return examples;
}

/**
 * Run one example in `dir` (its imports resolve from there, as in a project
 * that installed the packages); `binDir` goes first on the PATH of a sh block.
 */
export function runReadmeExample(
  example: ReadmeExample,
  dir: string,
  binDir: string,
  env: NodeJS.ProcessEnv = process.env,
): { status: number | null; stdout: string; stderr: string } {
  const file = path.join(dir, example.lang === 'js' ? 'example.mjs' : 'example.sh');
  fs.writeFileSync(file, example.code);
  const r =
    example.lang === 'js'
      ? spawnSync(process.execPath, [file], { cwd: dir, env, encoding: 'utf8', timeout: 60_000 })
      : spawnSync('bash', ['-e', file], {
          cwd: dir,
          encoding: 'utf8',
          timeout: 60_000,
          env: { ...env, PATH: `${binDir}:${env.PATH ?? ''}` },
        });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
