import * as fs from 'fs';
import * as path from 'path';
import { dmtool } from '../support/cli';
import { makeImage, sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';

const MiB = 1 << 20;
let dir: string;
beforeAll(() => {
  dir = tempDir('dmtool-logtools-');
});
afterAll(() => removeDir(dir));

function patch(file: string, byteOffset: number, bytes: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, byteOffset);
  } finally {
    fs.closeSync(fd);
  }
}

/** A 100-region log made by mirror-create (region 1024 sectors over 50 MiB legs, sparse), bitmap then set to a pattern. */
function makeLog(name: string): string {
  const sub = fs.mkdtempSync(path.join(dir, `${name}-`));
  const legs = [0, 1].map((i) => path.join(sub, `leg${i}.img`));
  for (const leg of legs) makeImage(leg, 50 * MiB);
  const log = path.join(sub, 'log.img');
  makeImage(log, 64 * 1024);
  const r = dmtool(['mirror-create', '--log', log, '--region-size', '1024', ...legs]);
  if (r.status !== 0) throw new Error(r.stderr);
  // Regions 0..99: clean except 3, 9, 10 and 64..99.
  const bitmap = Buffer.from([0xf7, 0xf9, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00]);
  patch(log, 1024, bitmap);
  return log;
}

test('mirror-log-check: clean, then every problem with its byte offset; exit codes 0 and 1', () => {
  const log = makeLog('check');
  expect(dmtool(['mirror-log-check', log, '--regions', '100'])).toMatchObject({
    status: 0,
    stderr: '',
    stdout: `${log}: dm-mirror log version 2, 100 regions, 61 in sync: clean\n`,
  });
  patch(log, 1024 + 12, Buffer.from([0x10])); // region 100: past the last one
  patch(log, 20, Buffer.from([1]));
  const r = dmtool(['mirror-log-check', log, '--regions', '99']);
  expect(r.status).toBe(1);
  expect(r.stdout).toBe(
    'region-count-mismatch: nr_regions is 100, the mirror has 99 (byte 8 = 0x8)\n' +
      'unused-bytes: unused header byte 20 is not zero (a new log has zeros in bytes 16..1023) (byte 20 = 0x14)\n' +
      'surplus-bits: bits past region 99 are set (they are always 0; the kernel clears them) (byte 1036 = 0x40c)\n' +
      `${log}: dm-mirror log version 2, 100 regions, 61 in sync: 3 problems found\n`,
  );
  expect(dmtool(['mirror-log-check', '-q', log])).toMatchObject({ status: 1, stdout: '', stderr: '' });
  const j = JSON.parse(dmtool(['mirror-log-check', log, '--json']).stdout);
  expect(j.problems.map((p: { kind: string }) => p.kind)).toEqual(['unused-bytes', 'surplus-bits']);
  expect(j.summary).toEqual({ version: 2, regions: 100, inSync: 61, clean: false });
});

test('mirror-log-dump: the text dump, exactly', () => {
  const log = makeLog('dump');
  expect(dmtool(['mirror-log-dump', log])).toMatchObject({
    status: 0,
    stdout: 'dmtool-mirror-log-dump 1\nversion 2\nregions 100\nin-sync 61\ndirty 3 1\ndirty 9 2\ndirty 64 36\n',
  });
});

test.each([
  ['text', []],
  ['JSON', ['--json']],
])(
  'mirror-log-dump (%s) and mirror-log-restore onto the zeroed log: the same bytes; a version 1 log and unused bytes kept',
  (_label, flags) => {
    const log = makeLog('rt');
    patch(log, 4, Buffer.from([1])); // version 1, as old kernels wrote
    patch(log, 500, Buffer.from('kept'));
    const before = sha256File(log);
    const dumpFile = path.join(path.dirname(log), 'dump');
    expect(dmtool(['mirror-log-dump', log, ...flags, '-o', dumpFile])).toMatchObject({
      status: 0,
      stdout: `dumped the dirty log ${log} (100 regions, 61 in sync) to ${dumpFile}\n`,
    });
    patch(log, 0, Buffer.alloc(4096));
    expect(dmtool(['mirror-log-restore', '-i', dumpFile, log])).toMatchObject({
      status: 0,
      stdout: `restored a dirty log of 100 regions (61 in sync) to ${log}\n`,
    });
    expect(sha256File(log)).toBe(before);
  },
);

test('a pipe from mirror-log-dump to mirror-log-restore; --dry-run writes nothing', () => {
  const a = makeLog('pipe-a');
  const b = path.join(dir, 'pipe-b.img');
  makeImage(b, 64 * 1024);
  const dump = dmtool(['mirror-log-dump', a]).stdout;
  expect(dmtool(['mirror-log-restore', '-i', '-', b, '--dry-run'], { input: dump })).toMatchObject({
    status: 0,
    stdout: `would restore a dirty log of 100 regions (61 in sync) to ${b}\n`,
  });
  expect(fs.readFileSync(b).every((x) => x === 0)).toBe(true);
  expect(dmtool(['mirror-log-restore', '-i', '-', b], { input: dump }).status).toBe(0);
  expect(fs.readFileSync(b)).toEqual(fs.readFileSync(a));
});
