import * as fs from 'fs';
import * as path from 'path';
import { readRange, sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';
import { dmtool } from '../support/cli';
import { makeBaseOrigin, makeZeroFile, writeData } from '../support/fixtures';

/**
 * kill -9 an origin write with copy-on-write at every step of the commit
 * protocol (data copies, next-area zeroing, area write, flushes, the origin
 * write itself): the snapshot must still show the origin as it was, the COW
 * must still parse, and the same write run again must complete.
 */
let dir: string;
let base: { origin: string; cow: string };
let before: string;
let dataFile: string;
const SECTORS = 600 * 8; // 600 chunks of 4 KiB: fills areas 0 and 1, ends in area 2

beforeAll(() => {
  dir = tempDir('dmtool-cowcrash-');
  base = { origin: path.join(dir, 'origin.img'), cow: path.join(dir, 'cow.img') };
  makeBaseOrigin(base.origin, 4 << 20);
  makeZeroFile(base.cow, 4 << 20);
  const r = dmtool(['snapshot-create', base.origin, base.cow, '--chunk-size', '8']);
  expect(r.status).toBe(0);
  before = sha256File(base.origin);
  dataFile = path.join(dir, 'data.bin');
  fs.writeFileSync(dataFile, writeData('CRASH', 0, SECTORS));
});
afterAll(() => removeDir(dir));

let n = 0;
function copy(): { origin: string; cow: string } {
  const sub = path.join(dir, `c${n++}`);
  fs.mkdirSync(sub);
  const p = { origin: path.join(sub, 'origin.img'), cow: path.join(sub, 'cow.img') };
  fs.copyFileSync(base.origin, p.origin);
  fs.copyFileSync(base.cow, p.cow);
  return p;
}

function viewSha(p: { origin: string; cow: string }): string {
  const out = path.join(path.dirname(p.cow), 'view.img');
  const r = dmtool(['snapshot-read', p.origin, p.cow, '-o', out]);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  return sha256File(out);
}

const write = (p: { origin: string; cow: string }) => [
  'snapshot-write',
  p.origin,
  p.cow,
  '--target',
  'origin',
  '--offset',
  '0',
  '-i',
  dataFile,
];

test('without a crash: 600 exceptions, three areas, snapshot shows the old origin', () => {
  const p = copy();
  const r = dmtool(write(p));
  expect(r.status).toBe(0);
  expect(dmtool(['snapshot-status', p.cow]).stdout).toBe(`${(600 + 2 + 2) * 8}/8192 32\n`);
  expect(viewSha(p)).toBe(before);
  expect(readRange(p.origin, 0, SECTORS * 512).equals(fs.readFileSync(dataFile))).toBe(true);
});

const cases: [string, object][] = [
  ['next-area-zeroed #1', { crashAt: { point: 'snapshot-commit:next-area-zeroed', hit: 1 } }],
  ['next-area-zeroed #2', { crashAt: { point: 'snapshot-commit:next-area-zeroed', hit: 2 } }],
  ['before-area-write #1', { crashAt: { point: 'snapshot-commit:before-area-write', hit: 1 } }],
  ['before-area-write #2', { crashAt: { point: 'snapshot-commit:before-area-write', hit: 2 } }],
  ['before-area-write #3', { crashAt: { point: 'snapshot-commit:before-area-write', hit: 3 } }],
  ['area-written #1', { crashAt: { point: 'snapshot-commit:area-written', hit: 1 } }],
  ['area-written #3', { crashAt: { point: 'snapshot-commit:area-written', hit: 3 } }],
  ...[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11].map((w): [string, object] => [`after ${w} writes`, { crashAfterWrites: w }]),
];

// A power cut: unflushed writes are lost and a flush in progress may have
// persisted its writes in any order. The old origin data must still be
// reachable through the snapshot: no exception may be durable before the
// copy it points at, and no origin write before its exception.
const powerCuts: [string, object][] = [
  ...cases.map(([name, plan]): [string, object] => [name, { ...plan, volatileCache: { order: 'reverse' } }]),
  ...[1, 2, 3, 4, 5, 6, 7, 8, 9].map((w): [string, object] => [
    `${w} cached writes applied by flushes`,
    { volatileCache: { order: 'reverse' }, crashDuringFlush: w },
  ]),
];

const crashes: [string, object][] = [
  ...cases.map(([name, plan]): [string, object] => [`kill -9 at ${name}`, plan]),
  ...powerCuts.map(([name, plan]): [string, object] => [`power cut at ${name}`, plan]),
];

test.each(crashes)('%s: snapshot view unchanged, COW valid, rerun completes', (_name, plan) => {
  const p = copy();
  const r = dmtool(write(p), { env: { DMTOOL_FAULTS: JSON.stringify(plan) } });
  expect(r.signal).toBe('SIGKILL');
  const status = dmtool(['snapshot-status', p.cow, '--origin', p.origin, '--json']);
  expect(status.status).toBe(0);
  expect(JSON.parse(status.stdout).valid).toBe(true);
  expect(viewSha(p)).toBe(before);
  const again = dmtool(write(p));
  expect(again.stderr).toBe('');
  expect(again.status).toBe(0);
  expect(viewSha(p)).toBe(before);
  expect(readRange(p.origin, 0, SECTORS * 512).equals(fs.readFileSync(dataFile))).toBe(true);
});
