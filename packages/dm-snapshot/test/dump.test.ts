import * as fs from 'fs';
import * as path from 'path';
import { FileDevice } from '@dmtool/native';
import { MemoryDevice } from '@dmtool/devices';
import {
  dumpCow,
  dumpEntry,
  dumpEpilogue,
  dumpPrologue,
  DumpEvent,
  DumpSyntax,
  planRestore,
  readDump,
  restoreCow,
  SnapshotError,
} from '@dmtool/dm-snapshot';
import { sha256File } from '../../../test/support/images';
import { removeDir, tempDir } from '../../../test/support/loop';
import { unpackFixture } from '../../../test/support/fixtures';

let dir: string;
beforeAll(() => {
  dir = tempDir('dmtool-snapdump-');
});
afterAll(() => removeDir(dir));

/** A source over a buffer, handing out at most `piece` bytes a call (to cross piece boundaries). */
function sourceOf(text: string, piece = 7): (buf: Buffer) => number {
  const bytes = Buffer.from(text);
  let at = 0;
  return (buf) => {
    const n = Math.min(piece, buf.length, bytes.length - at);
    bytes.copy(buf, 0, at, at + n);
    at += n;
    return n;
  };
}

function events(text: string): DumpEvent[] {
  return [...readDump(sourceOf(text))];
}

function dumpText(syntax: DumpSyntax, entries: [number, number][]): string {
  const h = { cowSectors: 2048, valid: true, chunkSectors: 8 };
  return dumpPrologue(syntax, h) + entries.map(([o, n], i) => dumpEntry(syntax, i, o, n)).join('') + dumpEpilogue(syntax, entries.length);
}

describe('dump documents', () => {
  test('JSON, exactly', () => {
    expect(
      dumpText('json', [
        [3, 2],
        [9, 3],
      ]),
    ).toBe(
      '{\n' +
        '  "format": "dmtool-snapshot-dump",\n' +
        '  "formatVersion": 1,\n' +
        '  "cowSectors": 2048,\n' +
        '  "header": { "magic": "SnAp", "valid": true, "version": 1, "chunkSectors": 8 },\n' +
        '  "exceptionsPerArea": 256,\n' +
        '  "exceptions": [\n' +
        '    { "oldChunk": 3, "newChunk": 2 },\n' +
        '    { "oldChunk": 9, "newChunk": 3 }\n' +
        '  ]\n' +
        '}\n',
    );
    expect(JSON.parse(dumpText('json', []))).toEqual({
      format: 'dmtool-snapshot-dump',
      formatVersion: 1,
      cowSectors: 2048,
      header: { magic: 'SnAp', valid: true, version: 1, chunkSectors: 8 },
      exceptionsPerArea: 256,
      exceptions: [],
    });
  });

  test('XML, exactly', () => {
    expect(dumpText('xml', [[3, 2]])).toBe(
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
        '<snapshot_dump format="dmtool-snapshot-dump" format_version="1" cow_sectors="2048" magic="SnAp" valid="1" version="1" chunk_sectors="8" exceptions_per_area="256">\n' +
        '  <exception old_chunk="3" new_chunk="2"/>\n' +
        '</snapshot_dump>\n',
    );
  });

  test.each<DumpSyntax>(['json', 'xml'])('%s reads back to the same events, read in pieces of 7 bytes', (syntax) => {
    const entries: [number, number][] = [
      [3, 2],
      [2 ** 53 - 1, 3],
      [0, 4],
    ];
    expect(events(dumpText(syntax, entries))).toEqual([
      { kind: 'header', header: { cowSectors: 2048, valid: true, chunkSectors: 8 } },
      ...entries.map(([oldChunk, newChunk]) => ({ kind: 'entry', oldChunk, newChunk })),
    ]);
  });

  test('JSON laid out another way (as jq prints it) reads the same', () => {
    const doc = JSON.stringify(JSON.parse(dumpText('json', [[3, 2]])), null, 4);
    expect(events(doc)).toEqual(events(dumpText('json', [[3, 2]])));
  });

  test.each([
    ['', 'dump line 1: the dump is empty'],
    ['hello', 'dump line 1: not a snapshot dump (it starts with neither "{" nor "<")'],
    ['{"format": "x"}', 'dump line 1: the dump has no "exceptions" array'],
    ['{"exceptions": []}', 'dump line 1: "header" must come before "exceptions"'],
    [dumpText('json', []).replace('"formatVersion": 1', '"formatVersion": 2'), 'dump line 7: format version 2 is not supported (only 1)'],
    [dumpText('json', []).replace('"chunkSectors": 8', '"chunkSectors": 12'), 'dump line 7: chunk size 12 sectors is not a power of two'],
    [dumpText('json', []).replace('"magic": "SnAp"', '"magic": "SNAP"'), 'dump line 7: header magic "SNAP" is not "SnAp"'],
    [
      dumpText('json', []).replace('"exceptionsPerArea": 256', '"exceptionsPerArea": 512'),
      'dump line 7: exceptionsPerArea 512 does not match chunk size 8 (256)',
    ],
    [
      dumpText('json', [[3, 2]]).replace('"newChunk": 2', '"newChunk": -2'),
      'dump line 8: exception 0: a chunk number must be a whole number below 2^53',
    ],
    [
      dumpText('json', [[3, 2]]).replace('"newChunk": 2', '"newChunk": 2.5'),
      'dump line 8: exception 0: a chunk number must be a whole number below 2^53',
    ],
    [
      dumpText('json', [[3, 2]]).replace('"newChunk": 2', '"new": 2'),
      'dump line 8: exception 0: expected exactly "oldChunk" and "newChunk"',
    ],
    [dumpText('json', [[3, 2]]).slice(0, -3), 'dump line 9: unexpected end of the dump'],
    [dumpText('json', []) + 'x', 'dump line 9: text after the end of the dump'],
    [
      dumpText('xml', [[3, 2]]).replace('new_chunk="2"', 'new_chunk="02"'),
      'dump line 3: exception 0: new_chunk must be a whole number below 2^53',
    ],
    [dumpText('xml', [[3, 2]]).replace('valid="1"', 'valid="yes"'), 'dump line 2: header valid must be true or false'],
    [dumpText('xml', [[3, 2]]).replace('</snapshot_dump>\n', ''), 'dump line 4: unterminated <snapshot_dump>'],
    [
      dumpText('xml', [[3, 2]]).replace('<exception ', '<entry '),
      'dump line 3: expected <exception old_chunk="N" new_chunk="N"/> or </snapshot_dump>',
    ],
  ])('a bad dump is refused with one line: %j', (text, message) => {
    let error: unknown;
    try {
      events(text);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SnapshotError);
    expect((error as SnapshotError).reason).toBe('bad-dump');
    expect((error as Error).message).toBe(`EINVAL: ${message}`);
  });
});

describe('planRestore refuses by the loader rules, before writing', () => {
  const cow = () => new MemoryDevice(64 * 4096, { name: 'cow.img' });
  test.each([
    [[[1, 0]], 'bad-dump', 'dump exception 0 (old 1 → new 0): new chunk 0 would end the table there'],
    [[[1, 64]], 'entry-past-cow-end', 'dump exception 0 (old 1 → new 64) points past the COW end (64 chunks) (cow.img)'],
    [[[1, 1]], 'entry-in-metadata', 'dump exception 0 (old 1 → new 1) points into a metadata chunk (cow.img)'],
    [
      [
        [1, 2],
        [1, 3],
      ],
      'duplicate-old-chunk',
      'dump exception 1 (old 1 → new 3) repeats origin chunk 1 (cow.img)',
    ],
    [
      [
        [1, 2],
        [2, 2],
      ],
      'duplicate-new-chunk',
      'dump exception 1 (old 2 → new 2) shares COW chunk 2 with an earlier exception (cow.img)',
    ],
  ] as [[number, number][], string, string][])('%j: %s', (entries, reason, message) => {
    let error: unknown;
    try {
      planRestore(cow(), readDump(sourceOf(dumpText('json', entries))));
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(SnapshotError);
    expect((error as SnapshotError).reason).toBe(reason);
    expect((error as Error).message).toBe(`EINVAL: ${message}`);
  });

  test('a table whose last area lies past the COW end', () => {
    // 256 entries fill area 0; area 1 (chunk 258) must exist for the terminator.
    const entries = Array.from({ length: 256 }, (_, j): [number, number] => [j, 2 + j]);
    expect(() =>
      planRestore(new MemoryDevice(258 * 4096, { name: 'cow.img' }), readDump(sourceOf(dumpText('json', entries), 1 << 20))),
    ).toThrow('EINVAL: 256 exceptions need 2 metadata areas, and area 1 at chunk 258 lies past the COW end (258 chunks) (cow.img)');
  });
});

async function dumpToText(cowFile: string, syntax: DumpSyntax): Promise<string> {
  const dev = FileDevice.open(cowFile);
  const parts: string[] = [];
  let n = 0;
  try {
    const count = await dumpCow(dev, {
      header: (h) => void parts.push(dumpPrologue(syntax, h)),
      entries: (olds, news) => {
        for (let i = 0; i < olds.length; i++) parts.push(dumpEntry(syntax, n++, olds[i], news[i]));
      },
    });
    parts.push(dumpEpilogue(syntax, count));
  } finally {
    dev.close();
  }
  return parts.join('');
}

/** Zero the header and every metadata area position of a COW file. */
function zeroMetadata(file: string, chunkSectors: number): void {
  const chunkBytes = chunkSectors * 512;
  const stride = chunkBytes / 16 + 1;
  const size = fs.statSync(file).size;
  const fd = fs.openSync(file, 'r+');
  try {
    const zeros = Buffer.alloc(chunkBytes);
    fs.writeSync(fd, zeros, 0, chunkBytes, 0);
    for (let chunk = 1; (chunk + 1) * chunkBytes <= size; chunk += stride) fs.writeSync(fd, zeros, 0, chunkBytes, chunk * chunkBytes);
  } finally {
    fs.closeSync(fd);
  }
}

describe.each([
  ['snapshot-cow-chunk8', 8],
  ['snapshot-cow-chunk16', 16],
  ['snapshot-merge-chunk8', 8],
  ['snapshot-merge-chunk16', 16],
])('round trip on the kernel fixture %s', (name, cs) => {
  test.each<DumpSyntax>(['json', 'xml'])('dump (%s), restore onto a copy with the metadata zeroed: the same COW bytes', async (syntax) => {
    const sub = fs.mkdtempSync(path.join(dir, 'rt-'));
    const { dir: fx } = unpackFixture(name, sub);
    const original = path.join(fx, 'cow.img');
    const copy = path.join(sub, 'copy.img');
    fs.copyFileSync(original, copy);
    zeroMetadata(copy, cs);
    expect(sha256File(copy)).not.toBe(sha256File(original));
    const text = await dumpToText(original, syntax);
    const dev = FileDevice.open(copy, { write: true });
    try {
      await restoreCow(dev, planRestore(dev, readDump(sourceOf(text, 1 << 20))));
    } finally {
      dev.close();
    }
    expect(sha256File(copy)).toBe(sha256File(original));
    fs.rmSync(sub, { recursive: true });
  });
});
