import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { removeDir, tempDir } from '../../test/support/loop';

/**
 * A FUA write on a file is one pwritev2 with RWF_DSYNC (the kernel makes
 * those bytes durable before it returns); a plain write is a pwrite64 and
 * a flush an fdatasync. Seen with strace on a child that does the I/O.
 */
const nativeDist = path.join(__dirname, '..', 'dist', 'index.js');
const haveStrace = spawnSync('strace', ['-V']).status === 0;
if (!haveStrace && process.env.CI) throw new Error('strace is missing (.ci/run installs it)');
const when = haveStrace ? describe : describe.skip;
if (!haveStrace) console.warn('skipping the FUA syscall tests: strace is not installed');

when('FileDevice FUA writes (strace)', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = tempDir();
    file = path.join(dir, 'disk.img');
    fs.writeFileSync(file, Buffer.alloc(65536, 0x11));
  });
  afterEach(() => removeDir(dir));

  /** The child's pwrite64, pwritev2, fdatasync and fallocate calls on the device's descriptor, one line each. */
  function traced(script: string): string[] {
    const log = path.join(dir, 'strace.log');
    const prelude = `const n = require(${JSON.stringify(nativeDist)}); const d = n.FileDevice.open(${JSON.stringify(file)}, { write: true });
      const fd = d.nativeEndpoint().fd; process.stdout.write(String(fd));`;
    const r = spawnSync(
      'strace',
      [
        '-f',
        '-qq',
        '-s',
        '0',
        '-e',
        'trace=pwrite64,pwritev2,fdatasync,fallocate',
        '-o',
        log,
        process.execPath,
        '-e',
        `${prelude} (async () => { ${script}; d.close(); })()`,
      ],
      { encoding: 'utf8', timeout: 60000 },
    );
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
    const fd = r.stdout;
    return fs
      .readFileSync(log, 'utf8')
      .split('\n')
      .map((l) => l.replace(/^\d+ +/, '').replace(/ +=/, ' ='))
      .filter((l) => l.includes(`(${fd},`) || l.includes(`(${fd})`));
  }

  it('write { fua } is one pwritev2 with RWF_DSYNC; a plain write is a pwrite64 and a flush an fdatasync', () => {
    const calls = traced(`await d.write(Buffer.alloc(4096, 0x22), 0, 4096, 8192, { fua: true });
      await d.write(Buffer.alloc(512, 0x33), 0, 512, 0);
      await d.flush()`);
    const fd = /\((\d+),/.exec(calls[0])![1];
    expect(calls).toEqual([
      `pwritev2(${fd}, [...], 1, 8192, RWF_DSYNC) = 4096`,
      `pwrite64(${fd}, ""..., 512, 0) = 512`,
      `fdatasync(${fd}) = 0`,
    ]);
    const expected = Buffer.alloc(65536, 0x11);
    expected.fill(0x22, 8192, 12288);
    expected.fill(0x33, 0, 512);
    expect(fs.readFileSync(file).equals(expected)).toBe(true);
  });

  it('zeroRange { fua } zeroes, then fdatasyncs (fallocate takes no FUA)', () => {
    const calls = traced(`await d.zeroRange(4096, 8192, { fua: true })`);
    const fd = /\((\d+),/.exec(calls[0])![1];
    expect(calls).toEqual([`fallocate(${fd}, FALLOC_FL_KEEP_SIZE|FALLOC_FL_ZERO_RANGE, 4096, 8192) = 0`, `fdatasync(${fd}) = 0`]);
    const expected = Buffer.alloc(65536, 0x11);
    expected.fill(0, 4096, 12288);
    expect(fs.readFileSync(file).equals(expected)).toBe(true);
  });
});
