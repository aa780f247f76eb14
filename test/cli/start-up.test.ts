import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { COMMANDS } from '../../packages/cli/src/commands';
import { copyCommand } from '../../packages/cli/src/commands/copy';
import { ctlCommand } from '../../packages/cli/src/commands/ctl';
import { demoCommand } from '../../packages/cli/src/commands/demo';
import { lvmLsCommand } from '../../packages/cli/src/commands/lvm';
import { mirrorCommands } from '../../packages/cli/src/commands/mirror';
import { mirrorLogToolCommands } from '../../packages/cli/src/commands/mirror-log-tools';
import { serveCommand } from '../../packages/cli/src/commands/serve';
import { snapshotCommands } from '../../packages/cli/src/commands/snapshot';
import { snapshotExportCommands } from '../../packages/cli/src/commands/snapshot-export';
import { snapshotToolCommands } from '../../packages/cli/src/commands/snapshot-tools';
import { zeroCommand } from '../../packages/cli/src/commands/zero';
import { DMTOOL, dmtool } from '../support/cli';
import { makeImage } from '../support/images';
import { removeDir, tempDir } from '../support/loop';

/**
 * Start-up: the registry lists every command as its module defines it, and
 * a run loads the selected command's module and the packages its operands
 * need, nothing more (docs/benchmarks.md#start-up).
 */
const ROOT = path.resolve(__dirname, '../..');

interface Loaded {
  status: number | null;
  stderr: string;
  /** The @dmtool packages loaded, by folder name (`devices`, `nbd`, ..., `native`), sorted. */
  packages: string[];
  /** The command modules loaded (packages/cli/dist/commands/NAME.js), sorted. */
  commandModules: string[];
  /** Other node_modules packages loaded besides yargs and its own, sorted. */
  others: string[];
  /** The --json schemas were built (json/schemas.ts loaded). */
  jsonSchemas: boolean;
}

/** Run the built CLI with these arguments and list the modules it loaded. */
function loadedBy(args: string[]): Loaded {
  const script = `
    const fs = require('fs');
    process.argv = [process.execPath, ${JSON.stringify(DMTOOL)}, ...process.argv.slice(1)];
    process.on('exit', () => fs.writeSync(3, JSON.stringify(Object.keys(require.cache))));
    require(${JSON.stringify(DMTOOL)});`;
  const r = spawnSync(process.execPath, ['-e', script, '--', ...args], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe', 'pipe'],
    timeout: 60000,
  });
  const files = (JSON.parse(String(r.output[3])) as string[]).map((f) => path.relative(ROOT, f));
  const match = (re: RegExp) => [...new Set(files.map((f) => re.exec(f)?.[1]).filter((m): m is string => m !== undefined))].sort();
  const yargsOwn =
    /^(yargs|yargs-parser|y18n|cliui|string-width|strip-ansi|ansi-regex|is-fullwidth-code-point|emoji-regex|wrap-ansi|ansi-styles|escalade|get-caller-file|require-directory)$/;
  return {
    status: r.status,
    stderr: r.stderr,
    packages: [...match(/^packages\/([^/]+)\/dist\//).filter((p) => p !== 'cli'), ...match(/^(native)\/dist\//)].sort(),
    commandModules: match(/^packages\/cli\/dist\/commands\/([^/]+)\.js$/),
    others: match(/^node_modules\/((?:@[^/]+\/)?[^/]+)\//).filter((m) => !yargsOwn.test(m)),
    jsonSchemas: files.includes('packages/cli/dist/json/schemas.js'),
  };
}

describe('start-up', () => {
  let dir: string;
  const f = (name: string) => path.join(dir, name);
  beforeAll(() => {
    dir = tempDir('dmtool-start-up-');
    makeImage(f('src.img'), 1 << 20, 'SRC');
    makeImage(f('origin.img'), 1 << 20, 'ORIGIN');
    fs.writeFileSync(f('cow.img'), Buffer.alloc(1 << 20));
    expect(dmtool(['snapshot-create', f('origin.img'), f('cow.img'), '--chunk-size', '8']).status).toBe(0);
    fs.writeFileSync(f('block.bin'), Buffer.alloc(4096, 7));
    expect(
      dmtool(['snapshot-write', f('origin.img'), f('cow.img'), '--target', 'snapshot', '--offset', '64', '-i', f('block.bin')]).status,
    ).toBe(0);
  });
  afterAll(() => removeDir(dir));

  it('the registry lists every command its modules define, with their own command string and description, in --help order', () => {
    const defined = [
      demoCommand,
      copyCommand,
      zeroCommand,
      ...snapshotCommands,
      ...snapshotToolCommands,
      ...snapshotExportCommands,
      ...mirrorCommands,
      ...mirrorLogToolCommands,
      serveCommand,
      ctlCommand,
      lvmLsCommand,
    ];
    expect(COMMANDS.map((c) => [c.command, c.describe])).toEqual(defined.map((c) => [c.command, c.describe]));
    expect(COMMANDS.map((c) => c.load())).toEqual(defined);
  });

  it('--version and the main --help load no command module and no @dmtool package', () => {
    for (const args of [['--version'], ['--help']]) {
      expect(loadedBy(args)).toEqual({ status: 0, stderr: '', packages: [], commandModules: ['index'], others: [], jsonSchemas: false });
    }
  });

  it("a command's --help loads its own module only", () => {
    expect(loadedBy(['copy', '--help'])).toMatchObject({ status: 0, commandModules: ['copy', 'index'] });
    expect(loadedBy(['mirror-log-dump', '--help'])).toMatchObject({ status: 0, commandModules: ['index', 'mirror-log-tools', 'snapshot'] });
  });

  it('a merge of image files loads neither the NBD nor the LVM package, nor the progress bar or the --json schemas', () => {
    expect(loadedBy(['snapshot-merge', f('origin.img'), f('cow.img'), '--quiet'])).toEqual({
      status: 0,
      stderr: '',
      packages: ['devices', 'dm-snapshot', 'kcopyd', 'native'],
      commandModules: ['index', 'snapshot'],
      others: ['node-gyp-build', 'zod'],
      jsonSchemas: false,
    });
  });

  it('ctl loads no device code: neither kcopyd nor the native addon', () => {
    expect(loadedBy(['ctl', f('none.sock'), 'status'])).toEqual({
      status: 3,
      stderr: `dmtool: no dmtool serve listens on ${f('none.sock')} (ENOENT)\n`,
      packages: ['devices'],
      commandModules: ['ctl', 'index'],
      others: ['zod'],
      jsonSchemas: false,
    });
  });

  it('a copy of image files loads kcopyd and the native addon; an nbd:// or PV:VG/LV operand loads its package', () => {
    const copy = (src: string, dst: string) => loadedBy(['copy', src, f(dst), '--quiet']);
    expect(copy(f('src.img'), 'copy.img')).toEqual({
      status: 0,
      stderr: '',
      packages: ['devices', 'kcopyd', 'native'],
      commandModules: ['copy', 'index'],
      others: ['node-gyp-build', 'zod'],
      jsonSchemas: false,
    });
    expect(copy('nbd://no-port:x/export', 'nbd.img')).toMatchObject({ status: 2, packages: ['devices', 'kcopyd', 'native', 'nbd'] });
    expect(copy('a.img,,b.img:vg0/lv', 'lvm.img')).toMatchObject({
      status: 2,
      stderr: 'dmtool: "a.img,,b.img:vg0/lv": an empty PV name in "a.img,,b.img"\n',
      packages: expect.arrayContaining(['lvm']),
    });
    expect(fs.existsSync(f('nbd.img')) || fs.existsSync(f('lvm.img'))).toBe(false);
  });
});
