import * as fs from 'fs';
import * as path from 'path';
import { dmtool } from '../support/cli';
import { makeImage } from '../support/images';
import { removeDir, tempDir } from '../support/loop';

/** Messages and exit codes: unknown commands, option names, plurals, mirror-check's cmp codes, help, completion. */
const MiB = 1 << 20;
const COMMANDS = [
  'demo',
  'copy',
  'zero',
  'snapshot-create',
  'snapshot-status',
  'snapshot-list',
  'snapshot-read',
  'snapshot-write',
  'snapshot-merge',
  'snapshot-export',
  'snapshot-apply',
  'mirror-create',
  'mirror-status',
  'mirror-resync',
  'mirror-check',
  'serve',
];

describe('messages and exit codes', () => {
  let dir: string;
  const f = (name: string) => path.join(dir, name);
  beforeAll(() => {
    dir = tempDir('dmtool-messages-');
    makeImage(f('leg0.img'), 2 * MiB, 'LEG');
    makeImage(f('leg1.img'), 2 * MiB, 'LEG');
  });
  afterAll(() => removeDir(dir));

  it('a mistyped command is an unknown command, with the likely one', () => {
    expect(dmtool(['snapshot-merg', 'a', 'b'])).toMatchObject({
      status: 2,
      stdout: '',
      stderr: 'dmtool: unknown command: snapshot-merg (did you mean snapshot-merge?)\n',
    });
    expect(dmtool(['merge'])).toMatchObject({ status: 2, stderr: 'dmtool: unknown command: merge (did you mean snapshot-merge?)\n' });
    expect(dmtool(['frobnicate'])).toMatchObject({
      status: 2,
      stderr: 'dmtool: unknown command: frobnicate (dmtool --help lists the commands)\n',
    });
  });

  it('a positional argument is named as --help shows it, not as an option', () => {
    expect(dmtool(['mirror-check', f('leg0.img')])).toMatchObject({ status: 2, stderr: 'dmtool: <legs>: give at least 2 legs\n' });
  });

  it('mirror-check exits 0 identical, 1 differing, 4 when a leg cannot be read, with singular and plural', () => {
    const legs = [f('leg0.img'), f('leg1.img')];
    const same = dmtool(['mirror-check', ...legs, '--region-size', '2048']);
    expect(same.status).toBe(0);
    expect(same.stdout).toMatch(/^legs identical: 2 regions of 2048 sectors compared \(2\.0 MiB, [\d.]+ (MiB|GiB)\/s\)\n$/);
    fs.writeFileSync(f('leg1.img'), Buffer.from('X'), { flag: 'r+' });
    const differ = dmtool(['mirror-check', ...legs, '--region-size', '2048']);
    expect([differ.status, differ.stdout]).toEqual([
      1,
      `1 of 2 regions differs: 0\nregion 0 (sectors 0..2047): ${legs[1]} differs from ${legs[0]}\n`,
    ]);
    const one = dmtool(['mirror-check', ...legs, '--region-size', '4096']);
    expect(one.stdout.split('\n')[0]).toBe('1 of 1 region differs: 0');
    const trouble = dmtool(['mirror-check', ...legs], { faults: { rules: [{ op: 'read', code: 'EIO', path: legs[1] }] } });
    expect(trouble.status).toBe(4);
    expect(trouble.stderr).toMatch(/^dmtool: EIO: read failed on .*leg1\.img.*\n$/);
    expect(dmtool(['mirror-check', ...legs, f('missing.img')]).status).toBe(3);
  });

  it('help is never wrapped: every example is one whole line', () => {
    for (const command of COMMANDS) {
      const help = dmtool([command, '--help']).stdout.split('\n');
      const at = help.indexOf('Examples:');
      expect(at).toBeGreaterThan(0);
      expect(help[at + 1]).toMatch(new RegExp(`^  dmtool ${command}( |$)`));
      for (let i = at + 1; i < help.length && help[i] !== ''; i += 2) {
        expect(help[i]).toMatch(/^ {2}\S/);
        expect(help[i + 1]).toMatch(/^ {6}\S/);
      }
    }
  });

  it('completion prints a bash completion script, and completes command names', () => {
    const script = dmtool(['completion']);
    expect(script.status).toBe(0);
    expect(script.stdout).toContain('complete -o bashdefault -o default -F _dmtool_yargs_completions dmtool\n');
    const names = dmtool(['--get-yargs-completions', 'snap']).stdout.trim().split('\n');
    expect(names).toEqual(expect.arrayContaining(['snapshot-merge', 'mirror-resync']));
  });
});
