import { execFileSync, spawnSync, SpawnSyncReturns } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';

/** The monorepo's root, its workspaces in build order, and their package names. */
export const ROOT = path.resolve(__dirname, '..', '..');
export const WORKSPACES: string[] = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).workspaces;

export interface PackedPackage {
  name: string;
  /** The workspace folder, relative to the root (`packages/kcopyd`). */
  workspace: string;
  tarball: string;
  /** Paths inside the tarball, relative to its `package/` folder. */
  files: string[];
}

/** `env` without the variables npm exports to the scripts it runs (as when jest runs under `npm test`). */
function withoutNpmVars(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !/^npm_/i.test(k) && k !== 'INIT_CWD'));
}

/** The arm64 prebuild is made with Debian's cross compiler (g++-aarch64-linux-gnu). */
export function crossCompilerAvailable(): boolean {
  return spawnSync('aarch64-linux-gnu-g++', ['--version'], { stdio: 'ignore' }).status === 0;
}

/** `npm pack --workspaces` into `dest`, as a release would (native's prepack builds its prebuilds). */
export function packWorkspaces(dest: string): PackedPackage[] {
  fs.mkdirSync(dest, { recursive: true });
  const r = spawnSync('npm', ['pack', '--workspaces', '--pack-destination', dest, '--json'], {
    cwd: ROOT,
    env: withoutNpmVars(process.env),
    encoding: 'utf8',
    timeout: 240_000,
    maxBuffer: 64 << 20,
  });
  if (r.status !== 0) throw new Error(`npm pack failed (${r.status ?? r.signal}):\n${r.stderr.slice(-4000)}`);
  const packed = JSON.parse(r.stdout) as { name: string; filename: string; files: { path: string }[] }[];
  const workspaceOf = new Map(
    WORKSPACES.map((w) => [JSON.parse(fs.readFileSync(path.join(ROOT, w, 'package.json'), 'utf8')).name as string, w]),
  );
  return packed.map((p) => ({
    name: p.name,
    workspace: workspaceOf.get(p.name) ?? '',
    tarball: path.join(dest, p.filename),
    files: p.files.map((f) => f.path).sort(),
  }));
}

/** Unpack a tarball into `dir`; returns the package folder. */
export function unpack(tarball: string, dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  execFileSync('tar', ['-xzf', tarball, '-C', dir]);
  return path.join(dir, 'package');
}

/**
 * An environment in which nothing can be compiled: CC and CXX are
 * /bin/false, PYTHON too, and PATH is a folder holding only node, sh and the
 * two tools the installed `dmtool` wrapper uses (no python3, make or g++).
 * Variables npm exports to its scripts are dropped, so an install in a
 * temporary project sees none of this repository's npm settings.
 */
export function noCompilerEnv(binDir: string): NodeJS.ProcessEnv {
  fs.mkdirSync(binDir, { recursive: true });
  for (const tool of ['sh', 'dirname', 'readlink']) {
    fs.symlinkSync(execFileSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim(), path.join(binDir, tool));
  }
  fs.symlinkSync(process.execPath, path.join(binDir, 'node'));
  return { ...withoutNpmVars(process.env), PATH: binDir, CC: '/bin/false', CXX: '/bin/false', PYTHON: '/bin/false' };
}

/** npm's own entry point, run with node so that PATH need not hold npm. */
export function npmCli(): string {
  return fs.realpathSync(execFileSync('sh', ['-c', 'command -v npm'], { encoding: 'utf8' }).trim());
}

/** `npm install [OPTIONS] TARBALLS...` in `project`, with the given environment; install scripts print on stdout. */
export function npmInstall(project: string, args: string[], env: NodeJS.ProcessEnv): SpawnSyncReturns<string> {
  return spawnSync(process.execPath, [npmCli(), 'install', '--no-audit', '--no-fund', '--foreground-scripts', ...args], {
    cwd: project,
    env,
    encoding: 'utf8',
    timeout: 180_000,
  });
}

/** The ELF header fields and whether `symbol` is defined and exported, read with readelf. */
export function elfInfo(file: string, symbol: string): { type: string; machine: string; exports: boolean } {
  const header = execFileSync('readelf', ['-h', '-W', file], { encoding: 'utf8' });
  const field = (name: string) => new RegExp(`^\\s*${name}:\\s*(.*)$`, 'm').exec(header)?.[1].trim() ?? '';
  const symbols = execFileSync('readelf', ['--dyn-syms', '-W', file], { encoding: 'utf8' });
  const exports = symbols
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .some((cols) => cols[7] === symbol && cols[3] === 'FUNC' && cols[4] === 'GLOBAL' && cols[6] !== 'UND');
  return { type: field('Type'), machine: field('Machine'), exports };
}
