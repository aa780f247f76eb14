import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { makeImage, sha256File, sha256Zeros } from '../support/images';
import { removeDir, tempDir } from '../support/loop';
import { readmeExamples, runReadmeExample } from '../support/readme-examples';
import {
  crossCompilerAvailable,
  elfInfo,
  noCompilerEnv,
  npmInstall,
  PackedPackage,
  packWorkspaces,
  ROOT,
  unpack,
  WORKSPACES,
} from '../support/packing';

/**
 * The packages as npm publishes them: each tarball's files and metadata,
 * native's prebuilds, and installs from the tarballs on a machine where
 * nothing can be compiled, which then copy real bytes.
 */
const PACK_BUDGET_MS = 240_000;
const INSTALL_BUDGET_MS = 180_000;
const REPOSITORY_URL = 'git+https://github.com/dmtool/dmtool.git';
const IMAGE_BYTES = 1 << 20;

const canPack = crossCompilerAvailable() || process.env.CI === 'true';
const describePacked = canPack ? describe : describe.skip;
const title = canPack
  ? 'packed packages'
  : 'packed packages (skipped: aarch64-linux-gnu-g++ not found; apt-get install g++-aarch64-linux-gnu)';

// A copy through @dmtool/kcopyd, as a user's CommonJS or ES module would write it.
const COPY_BODY = `
const [srcPath, dstPath] = process.argv.slice(2);
const src = FileDevice.open(srcPath);
const dst = FileDevice.open(dstPath, { write: true });
const client = new KcopydClient();
const result = await client.copy({ device: src, sector: 0, count: src.sizeSectors }, [{ device: dst, sector: 0 }]);
await dst.flush();
await client.destroy();
src.close();
dst.close();
console.log(\`copied \${result.sectorsDone} sectors\`);
`;
const COPY_CJS = `const { FileDevice, KcopydClient } = require('@dmtool/kcopyd');\n(async () => {${COPY_BODY}})();\n`;
const COPY_ESM = `import { FileDevice, KcopydClient } from '@dmtool/kcopyd';\n${COPY_BODY}`;
// Types resolve through "exports" for both module kinds under node16 resolution.
const TYPES_CHECK = `import { FileDevice, KcopydClient, CopyResult } from '@dmtool/kcopyd';
export async function copyAll(src: FileDevice, dst: FileDevice): Promise<number> {
  const result: CopyResult = await new KcopydClient().copy({ device: src, sector: 0, count: src.sizeSectors }, [{ device: dst, sector: 0 }]);
  return result.sectorsDone;
}
`;

function listed(pkg: PackedPackage, pattern: RegExp): string[] {
  return pkg.files.filter((f) => pattern.test(f));
}

describePacked(title, () => {
  let work: string;
  let packed: PackedPackage[];
  const unpacked = new Map<string, string>();

  beforeAll(() => {
    work = tempDir('dmtool-pack-');
    packed = packWorkspaces(path.join(work, 'tarballs'));
    for (const p of packed) unpacked.set(p.name, unpack(p.tarball, path.join(work, 'unpacked', p.workspace)));
  }, PACK_BUDGET_MS);
  afterAll(() => removeDir(work));

  const byName = (name: string): PackedPackage => {
    const p = packed.find((q) => q.name === name);
    if (!p) throw new Error(`${name} was not packed`);
    return p;
  };
  const tarballs = (...names: string[]) => names.map((n) => byName(n).tarball);

  it('packs every workspace', () => {
    expect(packed.map((p) => p.workspace)).toEqual(WORKSPACES);
  });

  it.each(WORKSPACES)('%s: package.json declares platform, engines, exports, types, files, repository and license', (workspace) => {
    const pkg = packed.find((p) => p.workspace === workspace)!;
    const meta = JSON.parse(fs.readFileSync(path.join(unpacked.get(pkg.name)!, 'package.json'), 'utf8'));
    expect(meta.os).toEqual(['linux']);
    expect(meta.engines).toEqual({ node: '>=20' });
    expect(meta.license).toBe('GPL-2.0-only');
    expect(meta.repository).toEqual({ type: 'git', url: REPOSITORY_URL, directory: workspace });
    expect(meta.main).toBe('dist/index.js');
    expect(meta.types).toBe('dist/index.d.ts');
    expect(meta.exports).toEqual({
      '.': { types: './dist/index.d.ts', default: './dist/index.js' },
      './package.json': './package.json',
    });
    expect(Array.isArray(meta.files)).toBe(true);
    for (const file of ['package.json', 'README.md', 'dist/index.js', 'dist/index.d.ts']) expect(pkg.files).toContain(file);
    for (const bin of Object.values<string>(meta.bin ?? {})) expect(pkg.files).toContain(bin);
  });

  it.each(WORKSPACES)('%s: ships no tests, no tsconfig or build info, and the sources of every source map', (workspace) => {
    const pkg = packed.find((p) => p.workspace === workspace)!;
    expect(listed(pkg, /(^|\/)(test|tests|__tests__)\/|\.test\.[cm]?[jt]s(\.map)?$/)).toEqual([]);
    expect(listed(pkg, /(^|\/)tsconfig[^/]*\.json$|\.tsbuildinfo$/)).toEqual([]);
    const dir = unpacked.get(pkg.name)!;
    const maps = listed(pkg, /\.map$/);
    expect(maps.length).toBeGreaterThan(0);
    const missing: string[] = [];
    for (const map of maps) {
      const { sources, sourceRoot } = JSON.parse(fs.readFileSync(path.join(dir, map), 'utf8')) as {
        sources: string[];
        sourceRoot?: string;
      };
      for (const source of sources) {
        const file = path.relative(dir, path.resolve(dir, path.dirname(map), sourceRoot ?? '', source));
        if (file.startsWith('..') || !pkg.files.includes(file)) missing.push(`${map} -> ${file}`);
      }
    }
    expect(missing).toEqual([]);
  });

  it('@dmtool/native ships the C++ sources and one prebuild each for linux-x64 and linux-arm64', () => {
    const pkg = byName('@dmtool/native');
    expect(listed(pkg, /^prebuilds\//)).toEqual([
      'prebuilds/linux-arm64/@dmtool+native.glibc.node',
      'prebuilds/linux-x64/@dmtool+native.glibc.node',
    ]);
    expect(listed(pkg, /^(binding\.gyp|src\/)/)).toEqual(
      ['binding.gyp', ...fs.readdirSync(path.join(ROOT, 'native', 'src')).map((f) => `src/${f}`)].sort(),
    );
  });

  it.each([
    ['linux-x64', 'Advanced Micro Devices X86-64'],
    ['linux-arm64', 'AArch64'],
  ])('the %s prebuild is a %s shared object exporting napi_register_module_v1', (platform, machine) => {
    const file = path.join(unpacked.get('@dmtool/native')!, 'prebuilds', platform, '@dmtool+native.glibc.node');
    expect(elfInfo(file, 'napi_register_module_v1')).toEqual({ type: 'DYN (Shared object file)', machine, exports: true });
  });

  it(
    '@dmtool/kcopyd installs from its tarball with those of @dmtool/native and @dmtool/devices, with no compiler, and copies (require and import, types)',
    () => {
      const project = path.join(work, 'kcopyd-project');
      fs.mkdirSync(project);
      // npm 11.19 runs an unreviewed install script with a warning; allowScripts
      // keeps it running where a stricter policy would skip it.
      const meta = { name: 'kcopyd-user', private: true, allowScripts: { '@dmtool/native': true } };
      fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify(meta));
      const env = noCompilerEnv(path.join(work, 'bin-kcopyd'));
      // The command packages/kcopyd/README.md gives, run as given, beside the tarballs.
      const readme = fs.readFileSync(path.join(ROOT, 'packages', 'kcopyd', 'README.md'), 'utf8');
      const command = /^\$ npm i (.+)$/m.exec(readme)?.[1].split(' ') ?? [];
      expect(command.map((arg) => path.basename(arg)).sort()).toEqual(
        tarballs('@dmtool/devices', '@dmtool/kcopyd', '@dmtool/native').map((t) => path.basename(t)),
      );
      for (const arg of command) fs.copyFileSync(path.join(work, 'tarballs', path.basename(arg)), path.join(project, arg));
      const r = npmInstall(project, command, env);
      expect(r.stderr).not.toMatch(/npm error/);
      expect(r.status).toBe(0);
      // node-gyp-build ran and found that the prebuild loads: had it not, it
      // would have called node-gyp, which fails here, and the install with it.
      expect(r.stdout).toContain('> node-gyp-build');
      expect(fs.existsSync(path.join(project, 'node_modules', '@dmtool', 'native', 'build'))).toBe(false);

      makeImage(path.join(project, 'src.img'), IMAGE_BYTES, 'packed-kcopyd');
      const expected = sha256File(path.join(project, 'src.img'));
      fs.writeFileSync(path.join(project, 'copy.cjs'), COPY_CJS);
      fs.writeFileSync(path.join(project, 'copy.mjs'), COPY_ESM);
      for (const script of ['copy.cjs', 'copy.mjs']) {
        const dst = path.join(project, `${script}.img`);
        makeImage(dst, IMAGE_BYTES);
        const run = spawnSync(process.execPath, [script, 'src.img', dst], { cwd: project, env, encoding: 'utf8', timeout: 30_000 });
        expect({ script, stderr: run.stderr, stdout: run.stdout, status: run.status }).toEqual({
          script,
          stderr: '',
          stdout: `copied ${IMAGE_BYTES / 512} sectors\n`,
          status: 0,
        });
        expect(sha256File(dst)).toBe(expected);
      }

      fs.writeFileSync(path.join(project, 'check.mts'), TYPES_CHECK);
      fs.writeFileSync(path.join(project, 'check.cts'), TYPES_CHECK);
      const tsc = spawnSync(
        process.execPath,
        [
          path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'),
          ...['--noEmit', '--strict', '--skipLibCheck', '--module', 'node16', '--moduleResolution', 'node16', '--target', 'es2022'],
          ...['--typeRoots', path.join(ROOT, 'node_modules', '@types'), '--types', 'node', 'check.mts', 'check.cts'],
        ],
        { cwd: project, env, encoding: 'utf8', timeout: 60_000 },
      );
      expect(tsc.stdout + tsc.stderr).toBe('');
      expect(tsc.status).toBe(0);
    },
    INSTALL_BUDGET_MS,
  );

  it(
    'every package installs together with --ignore-scripts and no compiler; the dmtool command copies, every README example runs, and without an addon dmtool says so in one line',
    () => {
      const project = path.join(work, 'all-project');
      fs.mkdirSync(project);
      fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'dmtool-user', private: true }));
      const env = noCompilerEnv(path.join(work, 'bin-all'));
      // No install script runs at all: the loader finds the prebuild by itself.
      const r = npmInstall(project, ['--ignore-scripts', ...packed.map((p) => p.tarball)], env);
      expect(r.stderr).not.toMatch(/npm error/);
      expect(r.status).toBe(0);
      expect(r.stdout).not.toContain('> node-gyp-build');
      expect(fs.existsSync(path.join(project, 'node_modules', '@dmtool', 'native', 'build'))).toBe(false);

      makeImage(path.join(project, 'src.img'), IMAGE_BYTES, 'packed-cli');
      makeImage(path.join(project, 'dst.img'), IMAGE_BYTES);
      const run = spawnSync(path.join(project, 'node_modules', '.bin', 'dmtool'), ['copy', 'src.img', 'dst.img'], {
        cwd: project,
        env,
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(run.stderr).toBe('');
      expect(run.stdout).toMatch(
        /^copied 2048 sectors from src\.img to 1 destination: 1\.0 MiB in \d+\.\d+ s \(\d+(\.\d+)? [KMG]?i?B\/s\)\n$/,
      );
      expect(run.status).toBe(0);
      expect(sha256File(path.join(project, 'dst.img'))).toBe(sha256File(path.join(project, 'src.img')));

      // Every package README's examples, against the installed tarballs.
      const examples = WORKSPACES.flatMap((w) => readmeExamples(ROOT, path.join(w, 'README.md')));
      expect(examples.length).toBeGreaterThanOrEqual(WORKSPACES.length);
      const outcomes = examples.map((example, i) => {
        const dir = path.join(project, `readme-${i}`);
        fs.mkdirSync(dir);
        // Examples use coreutils (truncate, cmp), so the machine's PATH follows.
        const r = runReadmeExample(example, dir, path.join(project, 'node_modules', '.bin'), {
          ...env,
          PATH: `${env.PATH}:${process.env.PATH}`,
        });
        return { readme: example.readme, index: example.index, status: r.status, stderr: r.stderr, stdout: r.stdout };
      });
      expect(outcomes).toEqual(
        examples.map((e, i) => ({
          readme: e.readme,
          index: e.index,
          status: 0,
          stderr: '',
          stdout: e.expectedStdout ?? outcomes[i].stdout,
        })),
      );

      // Without a prebuild or a source build, the command says so in one line.
      const nativeDir = path.join(project, 'node_modules', '@dmtool', 'native');
      removeDir(path.join(nativeDir, 'prebuilds'));
      makeImage(path.join(project, 'untouched.img'), IMAGE_BYTES);
      const refused = spawnSync(path.join(project, 'node_modules', '.bin', 'dmtool'), ['copy', 'src.img', 'untouched.img'], {
        cwd: project,
        env,
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect({ stdout: refused.stdout, stderr: refused.stderr, status: refused.status }).toEqual({
        stdout: '',
        stderr:
          `dmtool: @dmtool/native: no native addon: no source build in ${nativeDir}/build/Release and no prebuild in ${nativeDir}/prebuilds ` +
          `for ${process.platform}-${process.arch} (glibc); build it from source with \`npm rebuild @dmtool/native --build-from-source\` ` +
          '(needs python3, make and g++)\n',
        status: 1,
      });
      expect(sha256File(path.join(project, 'untouched.img'))).toBe(sha256Zeros(IMAGE_BYTES));
    },
    INSTALL_BUDGET_MS,
  );
});
