import * as fs from 'fs';
import * as path from 'path';
import { FileDevice, planPieces, sourceDataRuns, ZERO_BLOCK_SECTORS, zeroBlockRuns } from '@dmtool/kcopyd';
import { makeImage, patternBytes } from '../../../test/support/images';
import { removeDir, tempDir } from '../../../test/support/loop';

describe('planPieces', () => {
  it('cuts the whole range into sub-job pieces when there is no plan', () => {
    expect(planPieces(2500, 1024)).toEqual([
      { offsetSectors: 0, count: 1024, hole: false },
      { offsetSectors: 1024, count: 1024, hole: false },
      { offsetSectors: 2048, count: 452, hole: false },
    ]);
  });

  it('cuts at holes and keeps only what is to do', () => {
    const data = [
      { startSector: 0, count: 16 },
      { startSector: 100, count: 20 },
    ];
    expect(planPieces(200, 64, undefined, data)).toEqual([
      { offsetSectors: 0, count: 16, hole: false },
      { offsetSectors: 16, count: 64, hole: true },
      { offsetSectors: 80, count: 20, hole: true },
      { offsetSectors: 100, count: 20, hole: false },
      { offsetSectors: 120, count: 64, hole: true },
      { offsetSectors: 184, count: 16, hole: true },
    ]);
    const todo = [
      { startSector: 110, count: 20 },
      { startSector: 8, count: 4 },
    ];
    expect(planPieces(200, 64, todo, data)).toEqual([
      { offsetSectors: 8, count: 4, hole: false },
      { offsetSectors: 110, count: 10, hole: false },
      { offsetSectors: 120, count: 10, hole: true },
    ]);
  });

  it('merges overlapping ranges and clips them to the job', () => {
    expect(
      planPieces(50, 1024, [
        { startSector: 40, count: 100 },
        { startSector: 0, count: 10 },
        { startSector: 5, count: 10 },
      ]),
    ).toEqual([
      { offsetSectors: 0, count: 15, hole: false },
      { offsetSectors: 40, count: 10, hole: false },
    ]);
  });
});

describe('zeroBlockRuns', () => {
  it('finds all-zero 4 KiB blocks and coalesces runs; a short last block counts', () => {
    const blockBytes = ZERO_BLOCK_SECTORS * 512;
    const buf = Buffer.alloc(4 * blockBytes + 512);
    buf[blockBytes + 7] = 1;
    buf[4 * blockBytes + 511] = 2;
    expect(zeroBlockRuns(buf, buf.length)).toEqual([
      { byteOffset: 0, bytes: blockBytes, zero: true },
      { byteOffset: blockBytes, bytes: blockBytes, zero: false },
      { byteOffset: 2 * blockBytes, bytes: 2 * blockBytes, zero: true },
      { byteOffset: 4 * blockBytes, bytes: 512, zero: false },
    ]);
  });
});

describe('sourceDataRuns', () => {
  it("reports a file's data extents (SEEK_DATA/SEEK_HOLE) from the range's start, widened to 4 KiB blocks", async () => {
    const dir = tempDir();
    const file = path.join(dir, 'sparse.img');
    try {
      makeImage(file, 8 << 20);
      const fd = fs.openSync(file, 'r+');
      fs.writeSync(fd, patternBytes('D', 0, 16), 0, 8192, 1 << 20);
      fs.writeSync(fd, patternBytes('D', 0, 8), 0, 4096, 6 << 20);
      fs.closeSync(fd);
      const dev = FileDevice.open(file);
      try {
        expect(await sourceDataRuns(dev, 0, 16384)).toEqual([
          { startSector: 2048, count: 16 },
          { startSector: 12288, count: 8 },
        ]);
        // From sector 2052 the first extent starts inside the range's first block: widened to the range start.
        expect(await sourceDataRuns(dev, 2052, 10400)).toEqual([
          { startSector: 0, count: 16 },
          { startSector: 10232, count: 16 },
        ]);
      } finally {
        dev.close();
      }
    } finally {
      removeDir(dir);
    }
  });
});
