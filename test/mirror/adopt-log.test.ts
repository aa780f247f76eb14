import * as fs from 'fs';
import * as path from 'path';
import { makeImage, readRange, sha256File, sha256Range } from '../support/images';
import { removeDir, tempDir } from '../support/loop';
import { dmtool } from '../support/cli';

const MiB = 1 << 20;

describe('a log from before the mirror grew (--adopt-log, the kernel activation rule)', () => {
  let dir: string;
  beforeEach(() => (dir = tempDir()));
  afterEach(() => removeDir(dir));

  it('is refused by default, and adopted on request: only the new regions are resynced', () => {
    const [l0, l1, log] = ['leg0.img', 'leg1.img', 'log.img'].map((f) => path.join(dir, f));
    makeImage(l0, 8 * MiB, 'OLD0');
    makeImage(l1, 8 * MiB, 'OLD1');
    makeImage(log, 64 << 10);
    expect(dmtool(['mirror-create', '--log', log, '--region-size', '1024', '--nosync', l0, l1]).status).toBe(0);
    // The mirror grows from 16 to 24 regions; the new part of leg 0 gets data.
    fs.truncateSync(l0, 12 * MiB);
    fs.truncateSync(l1, 12 * MiB);
    const fd = fs.openSync(l0, 'r+');
    fs.writeSync(fd, Buffer.alloc(4 * MiB, 0x42), 0, 4 * MiB, 8 * MiB);
    fs.closeSync(fd);
    const logBefore = sha256File(log);

    const refused = dmtool(['mirror-resync', '--log', log, l0, l1]);
    expect(refused.status).toBe(2);
    expect(refused.stderr).toBe(
      `dmtool: dirty log ${log} records 16 regions at sector 0, which no power-of-two region size gives for a mirror of 24576 sectors: wrong region count for the leg size\n`,
    );
    const noSize = dmtool(['mirror-status', '--log', log, l0, l1, '--adopt-log']);
    expect(noSize.status).toBe(2);
    expect(noSize.stderr).toBe(`dmtool: adopting the log ${log} needs the region size (--region-size or a table line)\n`);

    const status = dmtool(['mirror-status', '--log', log, l0, l1, '--adopt-log', '--region-size', '1024']);
    expect(status.status).toBe(0);
    expect(status.stdout.split('\n')[0]).toBe(`0 24576 mirror 2 ${l0} ${l1} 16/24 1 AA 3 disk ${log} A`);
    expect(sha256File(log)).toBe(logBefore); // status writes nothing

    const old1 = sha256Range(l1, 0, 8 * MiB);
    const r = dmtool(['mirror-resync', '--log', log, l0, l1, '--adopt-log', '--region-size', '1024', '--json']);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ regionsToSync: 8, regionsSynced: 8, mirror: { inSync: true } });
    expect(sha256Range(l1, 8 * MiB, 4 * MiB)).toBe(sha256Range(l0, 8 * MiB, 4 * MiB));
    expect(sha256Range(l1, 0, 8 * MiB)).toBe(old1); // regions the log called in sync are left alone
    // The log now records 24 regions, all clean.
    const head = readRange(log, 0, 1028);
    expect(head.readBigUInt64LE(8)).toBe(24n);
    expect([...head.subarray(1024, 1028)]).toEqual([0xff, 0xff, 0xff, 0x00]);
  });
});
