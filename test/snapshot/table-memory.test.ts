import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { CowGeometry, encodeEntry, encodeHeader } from '@dmtool/dm-snapshot';
import { DMTOOL } from '../support/cli';

// status and list read a COW's table in streamed passes: their memory must
// not grow with the table. A million exceptions held in a table took about
// 25 bytes each (24 MiB) plus garbage: 55-65 MiB above an idle dmtool. The
// bound here is the goal for ten million (32 MiB + 8 bytes per exception
// above Node's baseline) applied to one million, with the margin it leaves.
// The baseline is the same command's --help: Node with the modules that
// command loads (the CLI loads a command's modules only when it runs).
const EXCEPTIONS = 1_000_000;
const CS = 8;
const BOUND_KIB = 32 * 1024 + (8 * EXCEPTIONS) / 1024;
const TIME = '/usr/bin/time';

/** A sparse COW whose table maps entry j to origin chunk (j·7919) mod n: only the areas are written. */
function sparseCow(dir: string): { cow: string; origin: string; cowSectors: number } {
  const g = new CowGeometry(CS, 0);
  const cow = path.join(dir, 'cow.img');
  const origin = path.join(dir, 'origin.img');
  const cowBytes = (g.dataChunkOfIndex(EXCEPTIONS) + 2) * g.chunkBytes;
  fs.writeFileSync(cow, '');
  fs.truncateSync(cow, cowBytes);
  fs.writeFileSync(origin, '');
  fs.truncateSync(origin, EXCEPTIONS * g.chunkBytes);
  const fd = fs.openSync(cow, 'r+');
  try {
    const buf = Buffer.alloc(g.chunkBytes);
    encodeHeader(buf, { valid: true, chunkSectors: CS });
    fs.writeSync(fd, buf, 0, buf.length, 0);
    const E = g.exceptionsPerArea;
    for (let area = 0; area * E <= EXCEPTIONS; area++) {
      buf.fill(0);
      for (let j = area * E; j < Math.min(EXCEPTIONS, (area + 1) * E); j++)
        encodeEntry(buf, j - area * E, (j * 7919) % EXCEPTIONS, g.dataChunkOfIndex(j));
      fs.writeSync(fd, buf, 0, buf.length, g.chunkToByte(g.areaChunk(area)));
    }
  } finally {
    fs.closeSync(fd);
  }
  return { cow, origin, cowSectors: cowBytes / 512 };
}

/** Peak RSS in KiB of the CLI run with `args`, stdout to `stdoutFile` (GNU time's %M, written to a file of its own). */
function peakRssKiB(dir: string, args: string[], stdoutFile: string): { status: number | null; rssKiB: number } {
  const rssFile = path.join(dir, 'rss.txt');
  const out = fs.openSync(stdoutFile, 'w');
  try {
    const r = spawnSync(TIME, ['-o', rssFile, '-f', '%M', process.execPath, DMTOOL, ...args], {
      stdio: ['ignore', out, 'pipe'],
      timeout: 120000,
    });
    return { status: r.status, rssKiB: Number(fs.readFileSync(rssFile, 'utf8').trim()) };
  } finally {
    fs.closeSync(out);
  }
}

const haveTime = fs.existsSync(TIME);
const maybe = haveTime || process.env.CI ? describe : describe.skip;
if (!haveTime && !process.env.CI) console.warn(`table-memory tests skipped: ${TIME} (GNU time) is missing`);

maybe('status and list of a million exceptions in bounded memory', () => {
  let dir: string;
  let images: ReturnType<typeof sparseCow>;
  const baselineKiB = (command: string) => peakRssKiB(dir, [command, '--help'], path.join(dir, `${command}-help.txt`)).rssKiB;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-table-memory-'));
    images = sparseCow(dir);
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('snapshot-status', () => {
    const outFile = path.join(dir, 'status.txt');
    const r = peakRssKiB(dir, ['snapshot-status', images.cow, '--origin', images.origin], outFile);
    expect(r.status).toBe(0);
    // next_free one past the last data chunk; header + every area up to the one holding the terminator.
    const g = new CowGeometry(CS, 0);
    const lastArea = Math.floor(EXCEPTIONS / g.exceptionsPerArea);
    expect(fs.readFileSync(outFile, 'utf8')).toBe(
      `${(g.dataChunkOfIndex(EXCEPTIONS - 1) + 1) * CS}/${images.cowSectors} ${(lastArea + 2) * CS}\n`,
    );
    expect(r.rssKiB - baselineKiB('snapshot-status')).toBeLessThan(BOUND_KIB);
  });

  test('snapshot-list', () => {
    const outFile = path.join(dir, 'list.txt');
    const r = peakRssKiB(dir, ['snapshot-list', images.cow, '--origin', images.origin], outFile);
    expect(r.status).toBe(0);
    const text = fs.readFileSync(outFile, 'utf8');
    const lines = text.split('\n');
    expect(lines.length).toBe(EXCEPTIONS + 3); // two comment lines, the entries, the empty string after the last newline
    const g = new CowGeometry(CS, 0);
    const line = (j: number) => {
      const oldChunk = (j * 7919) % EXCEPTIONS;
      const newChunk = g.dataChunkOfIndex(j);
      return `${j} ${oldChunk} ${newChunk} ${oldChunk * CS} ${newChunk * CS}`;
    };
    for (const j of [0, 1, 255, 256, 500_000, EXCEPTIONS - 1]) expect(lines[j + 2]).toBe(line(j));
    expect(r.rssKiB - baselineKiB('snapshot-list')).toBeLessThan(BOUND_KIB);
  });
});
