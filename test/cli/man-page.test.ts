import { spawnSync } from 'child_process';
import * as fs from 'fs';
import { collectHelp, commandNames, MAN_PAGE_PATH, renderManPage } from '../../packages/cli/src/man/man-page';
import { DMTOOL } from '../support/cli';

/** The committed man page is what `npm run man` makes from the current --help, and groff renders it cleanly. */
const { version } = JSON.parse(fs.readFileSync(require.resolve('../../packages/cli/package.json'), 'utf8')) as { version: string };
const groffAvailable = spawnSync('groff', ['--version'], { stdio: 'ignore' }).status === 0;

describe('man/dmtool.1', () => {
  let page: string;
  beforeAll(async () => {
    page = renderManPage(await collectHelp(DMTOOL, version));
  });

  it('is what the generator makes from the current --help (run npm run man after changing a help text)', () => {
    expect(fs.readFileSync(MAN_PAGE_PATH, 'utf8')).toBe(page);
  });

  it('has a section for every command, with its options and examples', () => {
    const names = commandNames(spawnSync(process.execPath, [DMTOOL, '--help'], { encoding: 'utf8' }).stdout);
    expect(names).toContain('copy');
    expect(names).toContain('lvm-ls');
    expect(page).toContain('.B dmtool completion\n');
    for (const name of names.filter((n) => n !== 'completion')) expect(page).toContain(`.SS "dmtool ${name.replace(/-/g, '\\-')}`);
    expect(page).toContain('.B \\-\\-sparse');
    expect(page).toContain('\\f(CRdmtool copy /dev/sdb backup.img \\-\\-map backup.map\\fR');
  });

  (groffAvailable || process.env.CI === 'true' ? it : it.skip)('renders with groff -man without a warning', () => {
    const r = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z', MAN_PAGE_PATH], { encoding: 'utf8' });
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
  });
});
