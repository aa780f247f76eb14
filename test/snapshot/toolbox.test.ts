import * as fs from 'fs';
import * as path from 'path';
import { dmtool } from '../support/cli';
import { sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';
import { PlannedWrite, unpackFixture } from '../support/fixtures';

let dir: string;
let fx: string;
beforeAll(() => {
  dir = tempDir('dmtool-toolbox-');
  fx = unpackFixture('snapshot-cow-chunk8', dir).dir;
});
afterAll(() => removeDir(dir));

function copyCow(name: string): string {
  const f = path.join(dir, name);
  fs.copyFileSync(path.join(fx, 'cow.img'), f);
  return f;
}

function patch(file: string, byteOffset: number, bytes: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, byteOffset);
  } finally {
    fs.closeSync(fd);
  }
}

describe('snapshot-check', () => {
  test('a kernel-made COW is clean: one line, exit 0', () => {
    const cow = path.join(fx, 'cow.img');
    const r = dmtool(['snapshot-check', cow, '--origin', path.join(fx, 'origin.img')]);
    expect(r).toMatchObject({ status: 0, stderr: '', stdout: `${cow}: chunk 8 sectors, valid, 310 exceptions in 2 areas: clean\n` });
    expect(dmtool(['snapshot-check', '-q', cow])).toMatchObject({ status: 0, stdout: '', stderr: '' });
  });

  test('every problem, each with its area, entry and byte offset; exit 1', () => {
    const cow = copyCow('damaged.img');
    patch(cow, 4096 + 3 * 16 + 8, Buffer.from([1])); // area 0 entry 3: new chunk 5 → 1, a metadata chunk
    patch(cow, 258 * 4096 + 60 * 16, Buffer.from([9])); // area 1 entry 60: after the terminator (entry 54)
    const r = dmtool(['snapshot-check', cow]);
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(
      'entry-in-metadata: area 0 entry 3 (old 8 → new 1) points into a metadata chunk (byte 4152 = 0x1038)\n' +
        "allocation-order: area 0: 1 entry is out of the kernel's allocation order, first entry 3 (new 1, expected 5) (byte 4152 = 0x1038)\n" +
        'stale-after-terminator: area 1: 1 non-zero entries after the terminator (entry 54), first entry 60: lost to the kernel (byte 1057728 = 0x1023c0)\n' +
        `${cow}: chunk 8 sectors, valid, 310 exceptions in 2 areas: 3 problems found\n`,
    );
    expect(dmtool(['snapshot-check', '--quiet', cow])).toMatchObject({ status: 1, stdout: '', stderr: '' });
    const j = dmtool(['snapshot-check', cow, '--json']);
    expect(j.status).toBe(1);
    const doc = JSON.parse(j.stdout);
    expect(doc.problems.map((p: { kind: string; area: number; entry: number }) => [p.kind, p.area, p.entry])).toEqual([
      ['entry-in-metadata', 0, 3],
      ['allocation-order', 0, 3],
      ['stale-after-terminator', 1, 60],
    ]);
    expect(doc.summary).toEqual({ chunkSectors: 8, valid: true, exceptions: 310, areas: 2, problems: 3, clean: false });
  });

  test('an entry past the origin end is found only when the origin is given', () => {
    const cow = copyCow('past-origin.img');
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(16384n); // the 64 MiB origin has chunks 0..16383
    patch(cow, 4096 + 10 * 16, b);
    expect(dmtool(['snapshot-check', '-q', cow]).status).toBe(0);
    const r = dmtool(['snapshot-check', cow, '--origin', path.join(fx, 'origin.img')]);
    expect(r.status).toBe(1);
    expect(r.stdout.split('\n')[0]).toBe(
      'entry-past-origin-end: area 0 entry 10 (old 16384 → new 12) names an origin chunk past the origin end (131072 sectors) (byte 4256 = 0x10a0)',
    );
  });

  test('--help shows the examples and the exit codes', () => {
    const r = dmtool(['snapshot-check', '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('snapshot-check -q cow.img && echo clean');
    expect(r.stdout).toContain('Exit codes: 0 clean, 1 problems found');
  });
});

describe('snapshot-dump and snapshot-restore', () => {
  test.each(['json', 'xml'])('%s: dump to a file, restore onto a copy with its metadata zeroed: the same bytes', (format) => {
    const original = path.join(fx, 'cow.img');
    const dump = path.join(dir, `dump.${format}`);
    const d = dmtool(['snapshot-dump', original, '--format', format, '-o', dump]);
    expect(d).toMatchObject({
      status: 0,
      stderr: '',
      stdout: `dumped 310 exceptions of ${original} (chunk 8 sectors) to ${dump} as ${format}\n`,
    });
    const copy = copyCow(`restored-${format}.img`);
    for (const chunk of [0, 1, 258, 515]) patch(copy, chunk * 4096, Buffer.alloc(4096));
    const r = dmtool(['snapshot-restore', '-i', dump, copy]);
    expect(r).toMatchObject({
      status: 0,
      stderr: '',
      stdout: `restored 310 exceptions in 2 areas (chunk 8 sectors, valid) to ${copy}; status 2504/32768 24\n`,
    });
    expect(sha256File(copy)).toBe(sha256File(original));
  });

  test('a pipe from dump to restore; --dry-run writes nothing', () => {
    const original = path.join(fx, 'cow.img');
    const copy = copyCow('piped.img');
    patch(copy, 4096, Buffer.alloc(4096));
    const zeroed = sha256File(copy);
    const dump = dmtool(['snapshot-dump', original]).stdout;
    const dry = dmtool(['snapshot-restore', '-i', '-', copy, '--dry-run'], { input: dump });
    expect(dry).toMatchObject({ status: 0, stdout: `would restore 310 exceptions in 2 areas (chunk 8 sectors, valid) to ${copy}\n` });
    expect(sha256File(copy)).toBe(zeroed);
    expect(dmtool(['snapshot-restore', '-i', '-', copy], { input: dump }).status).toBe(0);
    expect(sha256File(copy)).toBe(sha256File(original));
  });

  test('a dump, edited, repairs a COW: the damaged entry is dropped and check is clean', () => {
    const cow = copyCow('repair.img');
    patch(cow, 258 * 4096 + 53 * 16 + 8, Buffer.from([0xff, 0xff, 0xff])); // the last entry points past the COW end
    expect(dmtool(['snapshot-check', '-q', cow]).status).toBe(1);
    const dump = dmtool(['snapshot-dump', cow]).stdout;
    const edited = dump.replace(/,\n {4}\{ "oldChunk": 399, "newChunk": \d+ \}/, '');
    expect(edited).not.toBe(dump);
    expect(dmtool(['snapshot-restore', '-i', '-', cow], { input: edited }).status).toBe(0);
    expect(dmtool(['snapshot-check', cow])).toMatchObject({
      status: 0,
      stdout: `${cow}: chunk 8 sectors, valid, 309 exceptions in 2 areas: clean\n`,
    });
  });
});

describe.each([8, 16])('snapshot-delta on the kernel fixture of chunk %i', (cs) => {
  /** The chunks the manifest's write plan touched, origin and snapshot writes alike, coalesced here independently. */
  function expectedRanges(writes: PlannedWrite[]): { start: number; count: number }[] {
    const chunks = new Set<number>();
    for (const w of writes)
      for (let c = Math.floor(w.start_sector / cs); c <= Math.floor((w.start_sector + w.sectors - 1) / cs); c++) chunks.add(c);
    const sorted = [...chunks].sort((a, b) => a - b);
    const ranges: { start: number; count: number }[] = [];
    for (const c of sorted) {
      const last = ranges.at(-1);
      if (last && last.start + last.count === c) last.count++;
      else ranges.push({ start: c, count: 1 });
    }
    return ranges;
  }

  test('--json: exactly the ranges the write plan produces', () => {
    const sub = fs.mkdtempSync(path.join(dir, 'delta-'));
    const { dir: f, manifest } = unpackFixture(`snapshot-cow-chunk${cs}`, sub);
    const ranges = expectedRanges(manifest.writes);
    const r = dmtool(['snapshot-delta', path.join(f, 'cow.img'), '--origin', path.join(f, 'origin.img'), '--json']);
    expect(r).toMatchObject({ status: 0, stderr: '' });
    expect(r.stdout).toBe(
      `{"chunkSectors": ${cs}, "ranges": [${ranges.map((x) => `{"start": ${x.start}, "count": ${x.count}}`).join(', ')}]}\n`,
    );
    expect(ranges.reduce((n, x) => n + x.count, 0)).toBe(manifest.exceptions_in_table_order.length);
    const text = dmtool(['snapshot-delta', path.join(f, 'cow.img')]);
    expect(text.stdout.split('\n').slice(2, -1)).toEqual(ranges.map((x) => `${x.start} ${x.count} ${x.start * cs} ${x.count * cs}`));
  });
});

test('snapshot-delta of a merged COW: no ranges', () => {
  const sub = fs.mkdtempSync(path.join(dir, 'delta-merged-'));
  const { dir: f } = unpackFixture('snapshot-merge-chunk8', sub);
  expect(dmtool(['snapshot-delta', path.join(f, 'cow.img'), '--json'])).toMatchObject({
    status: 0,
    stdout: '{"chunkSectors": 8, "ranges": []}\n',
  });
});

describe('snapshot-repair', () => {
  /** The kernel COW with entry 100 zeroed (a hole: the kernel stops there) and the last entry pointing past the COW end. */
  function damaged(name: string): string {
    const cow = copyCow(name);
    patch(cow, 4096 + 100 * 16, Buffer.alloc(16));
    patch(cow, 258 * 4096 + 53 * 16 + 8, Buffer.from([0xff, 0xff, 0xff]));
    return cow;
  }
  const DROPPED = 'dropped area 1 entry 53 (old 399 → new 16777215): stale-after-terminator\n';
  const KEPT = 'kept 308 of 309 exceptions (208 recovered past the terminator), dropped 1';

  test('without -o or --in-place: what it would do, nothing written', () => {
    const cow = damaged('repair-plan.img');
    const before = sha256File(cow);
    expect(dmtool(['snapshot-repair', cow])).toMatchObject({
      status: 0,
      stderr: '',
      stdout: `${DROPPED}${KEPT}; nothing written (give -o NEW or --in-place)\n`,
    });
    expect(sha256File(cow)).toBe(before);
  });

  test('-o NEW and --in-place write the same COW, which the kernel rules load with every intact exception', () => {
    const cow = damaged('repair-in-place.img');
    const before = sha256File(cow);
    const copy = path.join(dir, 'repaired.img');
    expect(dmtool(['snapshot-repair', cow, '-o', copy])).toMatchObject({ status: 0, stdout: `${DROPPED}${KEPT}; wrote ${copy}\n` });
    expect(sha256File(cow)).toBe(before);
    expect(dmtool(['snapshot-repair', cow, '--in-place'])).toMatchObject({
      status: 0,
      stdout: `${DROPPED}${KEPT}; rewrote the table of ${cow}\n`,
    });
    expect(sha256File(cow)).toBe(sha256File(copy));
    const list = dmtool(['snapshot-list', cow, '--json']);
    expect(list.status).toBe(0);
    expect(JSON.parse(list.stdout).exceptions).toBe(308);
    expect(JSON.parse(list.stdout).table).toHaveLength(308);
    // Compaction moved entries off their allocation-order places; nothing else is left to report.
    const check = dmtool(['snapshot-check', cow, '--json']);
    expect(new Set(JSON.parse(check.stdout).problems.map((p: { kind: string }) => p.kind))).toEqual(new Set(['allocation-order']));
  });

  test('--output and --in-place together are refused; a refused -o leaves no file behind', () => {
    const cow = damaged('repair-refused.img');
    expect(dmtool(['snapshot-repair', cow, '-o', path.join(dir, 'x.img'), '--in-place'])).toMatchObject({
      status: 2,
      stderr: 'dmtool: --output and --in-place exclude each other\n',
    });
    const out = path.join(dir, 'not-made.img');
    const r = dmtool(['snapshot-repair', cow, '-o', out, '--chunk-size', '12']);
    expect(r).toMatchObject({ status: 2, stderr: 'dmtool: EINVAL: chunk size 12 sectors is not a power of two\n' });
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('snapshot-revalidate', () => {
  test('an invalidated COW with a sound table: --dry-run says what it protects, then the flag is cleared', () => {
    const cow = copyCow('invalid.img');
    patch(cow, 4, Buffer.from([0]));
    const invalid = sha256File(cow);
    const protects =
      'it holds 310 saved chunks of 8 sectors; origin chunks written after the invalidation and not among them are not protected';
    expect(dmtool(['snapshot-revalidate', cow, '--dry-run'])).toMatchObject({
      status: 0,
      stdout: `would clear the invalid flag of ${cow}: ${protects}\n`,
    });
    expect(sha256File(cow)).toBe(invalid);
    expect(dmtool(['snapshot-revalidate', cow, '--origin', path.join(fx, 'origin.img')])).toMatchObject({
      status: 0,
      stdout: `cleared the invalid flag of ${cow}: ${protects}\n`,
    });
    expect(sha256File(cow)).toBe(sha256File(path.join(fx, 'cow.img')));
    expect(dmtool(['snapshot-revalidate', cow])).toMatchObject({ status: 0, stdout: `${cow} is valid already; nothing written\n` });
  });

  test('any other problem: refused, nothing written', () => {
    const cow = copyCow('invalid-damaged.img');
    patch(cow, 4, Buffer.from([0]));
    patch(cow, 4096 + 3 * 16 + 8, Buffer.from([1]));
    const before = sha256File(cow);
    expect(dmtool(['snapshot-revalidate', cow])).toMatchObject({
      status: 2,
      stdout: '',
      stderr: `dmtool: ${cow}: check found 2 problems besides the invalid flag, first entry-in-metadata at byte 4152; nothing written (run snapshot-check, then snapshot-repair)\n`,
    });
    expect(sha256File(cow)).toBe(before);
  });
});

test('every toolbox command has --help with examples and --json', () => {
  const commands = ['snapshot-check', 'snapshot-dump', 'snapshot-restore', 'snapshot-delta', 'snapshot-repair', 'snapshot-revalidate'];
  for (const cmd of [...commands, 'mirror-log-check', 'mirror-log-dump', 'mirror-log-restore']) {
    const r = dmtool([cmd, '--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`dmtool ${cmd}`);
    expect(r.stdout).toContain('Examples:');
    expect(r.stdout).toContain('--json');
  }
});
