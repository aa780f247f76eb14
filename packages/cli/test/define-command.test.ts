import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import yargs from 'yargs';
import { z } from 'zod';
import { main } from '../src/main';
import { argsSchema, defineCommand } from '../src/util/define-command';
import { kebabCase } from '../src/util/options';
import { flag } from '../src/util/options';

/** Capture what a piece of work writes on stdout and stderr. */
async function captured<T>(work: () => Promise<T>): Promise<{ value: T; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const out = jest.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => ((stdout += String(chunk)), true));
  const err = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => ((stderr += String(chunk)), true));
  try {
    return { value: await work(), stdout, stderr };
  } finally {
    out.mockRestore();
    err.mockRestore();
  }
}

describe('defineCommand', () => {
  const seen: unknown[] = [];
  const tryCommand = defineCommand({
    command: 'try <name>',
    describe: 'a command to try',
    positionals: { name: { schema: z.string().min(1), describe: 'a name' } },
    options: {
      count: { schema: z.number().int().min(1), type: 'number', alias: 'c', describe: 'how many', default: 3 },
      dryRun: flag('write nothing'),
    },
    async run(o) {
      seen.push(o);
      return o.dryRun ? 0 : 1;
    },
  });

  async function parse(args: string[]): Promise<number | undefined> {
    let code: number | undefined;
    await yargs(args)
      .parserConfiguration({ 'camel-case-expansion': true })
      .command({ ...tryCommand, handler: async (argv) => void (code = await tryCommand.handler(argv)) })
      .parseAsync();
    return code;
  }

  beforeEach(() => (seen.length = 0));

  test('options are kebab-case on the command line, camelCase and typed in the arguments', async () => {
    expect(kebabCase('dryRun')).toBe('dry-run');
    expect(kebabCase('subJobSize')).toBe('sub-job-size');
    expect(await parse(['try', 'n', '-c', '5', '--dry-run'])).toBe(0);
    expect(seen).toEqual([{ name: 'n', count: 5, dryRun: true }]);
  });

  test('a default is declared once: yargs gives it, the schema checks it', async () => {
    expect(await parse(['try', 'n'])).toBe(1);
    expect(seen).toEqual([{ name: 'n', count: 3, dryRun: false }]);
  });

  test('a value the schema refuses is one line and exit 2; the work does not run', async () => {
    const r = await captured(() => parse(['try', 'n', '--count', '0']));
    expect(r.value).toBe(2);
    expect(r.stderr).toBe('dmtool: --count: Number must be greater than or equal to 1\n');
    expect(seen).toEqual([]);
  });

  test('the schema is the positionals, then the options, in declaration order', () => {
    const schema = argsSchema({ b: { schema: z.string(), describe: '' } }, { a: flag(''), c: flag('') });
    expect(Object.keys(schema.shape)).toEqual(['b', 'a', 'c']);
  });
});

describe("main returns the selected command's exit code", () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-main-'));
    fs.writeFileSync(path.join(dir, 'disk.img'), Buffer.alloc(8 * 512));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('a refusal, then a success: nothing carries over from one run to the next', async () => {
    const missing = path.join(dir, 'missing.img');
    const refused = await captured(() => main(['zero', missing], {}));
    expect(refused.value).toBe(3);
    expect(refused.stderr).toBe(`dmtool: ENOENT: open failed on ${missing}: no such file or device\n`);
    const disk = path.join(dir, 'disk.img');
    const ok = await captured(() => main(['zero', disk, '--dry-run'], {}));
    expect(ok.value).toBe(0);
    expect(ok.stdout).toBe(`would zero sectors 0..7 on ${disk}\n`);
  });

  test('usage errors are exit 2, before any command runs', async () => {
    const r = await captured(() => main(['copy', 'only-one'], {}));
    expect(r.value).toBe(2);
    expect(r.stderr).toBe('dmtool: Not enough non-option arguments: got 1, need at least 2\n');
    expect((await captured(() => main(['zero', path.join(dir, 'disk.img'), '--offset', 'abc'], {}))).value).toBe(2);
  });
});
