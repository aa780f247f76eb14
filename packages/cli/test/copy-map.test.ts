import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CliError } from '../src/util/errors';
import { checkMapMatches, CopyMap, formatMap, parseMap, readMap, writeMapAtomically } from '../src/util/copy-map';

const map: CopyMap = {
  source: {
    identity: 'nbd:nbd+unix:///disk?socket=/run/my dir/nbd.sock',
    sizeBytes: 1 << 20,
    path: 'nbd+unix:///disk?socket=/run/my dir/nbd.sock',
  },
  destinations: [
    { identity: 'file:65024:12', sizeBytes: 2 << 20, path: 'copy "one".img' },
    { identity: 'block:1792', sizeBytes: 2 << 20, path: '/dev/loop7' },
  ],
  offset: 8,
  destOffset: 16,
  sectors: 2040,
  done: [
    { startSector: 0, count: 1024 },
    { startSector: 1536, count: 504 },
  ],
};

describe('copy map', () => {
  it('is the documented text, and reads back as written (identities and paths with blanks and quotes)', () => {
    const text = formatMap(map);
    expect(text).toBe(
      [
        'dmtool-copy-map 1',
        'source "nbd:nbd+unix:///disk?socket=/run/my dir/nbd.sock" 1048576 "nbd+unix:///disk?socket=/run/my dir/nbd.sock"',
        'destination "file:65024:12" 2097152 "copy \\"one\\".img"',
        'destination "block:1792" 2097152 "/dev/loop7"',
        'range 8 16 2040',
        'done 8 1024',
        'done 1544 504',
        '',
      ].join('\n'),
    );
    expect(parseMap(text, 'm')).toEqual(map);
  });

  it('merges overlapping done lines, and refuses what is not a map of this copy', () => {
    const text = formatMap({ ...map, done: [] }) + 'done 8 100\ndone 50 100\n';
    expect(parseMap(text, 'm').done).toEqual([{ startSector: 0, count: 142 }]);
    expect(() => parseMap(formatMap(map) + 'done 2040 100\n', 'm')).toThrow('map m: done 2040 100 lies outside the range');
    expect(() => parseMap(formatMap(map).replace('range 8 16 2040\n', ''), 'm')).toThrow(
      'map m lacks its source, destination or range line',
    );
    expect(() => parseMap(formatMap(map) + 'skipped 1 2\n', 'm')).toThrow(
      'map m line 8: not a source, destination, range or done line: "skipped 1 2"',
    );
    const other = { ...map, destinations: [map.destinations[0], { ...map.destinations[1], sizeBytes: 4 << 20 }] };
    expect(() => checkMapMatches(map, other, 'm')).toThrow(
      'map m belongs to another copy: its destination 1 is /dev/loop7 (2097152 bytes), not /dev/loop7 (4194304 bytes); give the copy it records, or remove the map',
    );
    let refusal: unknown;
    try {
      checkMapMatches(map, { ...map, sectors: 2000 }, 'm');
    } catch (e) {
      refusal = e;
    }
    expect(refusal).toBeInstanceOf(CliError);
    expect(refusal).toMatchObject({ kind: 'bad-input', reason: 'map-mismatch' });
  });

  it('never writes through a file planted at its temporary name (a symlink in a shared folder stays untouched)', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-map-'));
    try {
      const victim = path.join(dir, 'victim');
      fs.writeFileSync(victim, 'keep me');
      const file = path.join(dir, 'copy.map');
      fs.symlinkSync(victim, path.join(dir, `.copy.map.${process.pid}.tmp`));
      writeMapAtomically(file, map);
      expect(fs.readFileSync(victim, 'utf8')).toBe('keep me');
      expect(fs.lstatSync(file).isFile()).toBe(true);
      expect(readMap(file)).toEqual(map);
      expect(fs.readdirSync(dir).sort()).toEqual(['copy.map', 'victim']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
