import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { removeDir, tempDir } from '../../test/support/loop';

/**
 * The raw binding checks its own arguments: a wrong type, a bad integer or a
 * range outside the buffer throws synchronously and queues no I/O. Each call
 * runs in a child process, because an unchecked call can write memory past
 * a buffer to a descriptor, or abort the process.
 */
const FILE_BYTES = 8192;
const BUF_BYTES = 4096;
const CALLBACK_WAIT_MS = 150;

interface Outcome {
  threw: { name: string; message: string } | null;
  callbacks: number;
  bufferTouched: boolean;
}

// `fd` is a read-write descriptor of a real file; `buf` is 4096 bytes of 0xa5;
// `cb` counts calls. The call must throw before anything reaches the file.
function runCall(file: string, call: string, waitMs = CALLBACK_WAIT_MS): Outcome {
  const dist = path.join(__dirname, '..', 'dist', 'binding.js');
  const script = `
    const { binding: b } = require(${JSON.stringify(dist)});
    const opened = b.open(${JSON.stringify(file)}, true, false, true, 0, false, 0);
    if (opened.errno !== 0) throw new Error('open failed: ' + opened.errno);
    const fd = opened.fd;
    const buf = Buffer.alloc(${BUF_BYTES}, 0xa5);
    let callbacks = 0;
    const cb = () => { callbacks++; };
    let threw = null;
    try {
      ${call};
    } catch (e) {
      threw = { name: e.constructor.name, message: String(e.message) };
    }
    setTimeout(() => {
      const bufferTouched = buf.some((x) => x !== 0xa5);
      process.stdout.write(JSON.stringify({ threw, callbacks, bufferTouched }));
    }, ${waitMs});
  `;
  const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
  if (r.status !== 0) throw new Error(`child exited with ${r.status ?? r.signal}: ${r.stderr.slice(0, 500)}`);
  return JSON.parse(r.stdout) as Outcome;
}

type Case = [string, string, 'TypeError' | 'RangeError', RegExp];

const cases: Case[] = [
  // read / write: (fd, buffer, bufOffset, length, position, cb)
  ['write: a string fd', `b.write(String(fd), buf, 0, 512, 0, cb)`, 'TypeError', /write.*fd/],
  ['write: a fractional fd', `b.write(fd + 0.5, buf, 0, 512, 0, cb)`, 'RangeError', /write.*fd/],
  ['write: a negative fd', `b.write(-1, buf, 0, 512, 0, cb)`, 'RangeError', /write.*fd/],
  ['write: no callback', `b.write(fd, buf, 0, 512, 0)`, 'TypeError', /write.*callback/],
  ['write: a string for the buffer', `b.write(fd, 'abcd', 0, 4, 0, cb)`, 'TypeError', /write.*buffer/],
  ['write: a plain array for the buffer', `b.write(fd, [1, 2, 3, 4], 0, 4, 0, cb)`, 'TypeError', /write.*buffer/],
  ['write: a negative position', `b.write(fd, buf, 0, 512, -512, cb)`, 'RangeError', /write.*position/],
  ['write: a fractional position', `b.write(fd, buf, 0, 512, 1.5, cb)`, 'RangeError', /write.*position/],
  ['write: a position beyond 2^53', `b.write(fd, buf, 0, 512, 2 ** 60, cb)`, 'RangeError', /write.*position/],
  ['write: NaN length', `b.write(fd, buf, 0, NaN, 0, cb)`, 'RangeError', /write.*length/],
  ['write: a string length', `b.write(fd, buf, 0, '512', 0, cb)`, 'TypeError', /write.*length/],
  ['write: a negative buffer offset', `b.write(fd, buf, -1, 512, 0, cb)`, 'RangeError', /write.*bufOffset/],
  ['write: a range past the buffer end', `b.write(fd, buf, 4000, 512, 0, cb)`, 'RangeError', /write.*buffer/],
  ['write: a length longer than the buffer', `b.write(fd, buf, 0, 65536, 0, cb)`, 'RangeError', /write.*buffer/],
  ['read: a range past the buffer end', `b.read(fd, buf, 1, ${BUF_BYTES}, 0, cb)`, 'RangeError', /read.*buffer/],
  ['read: a string fd', `b.read(String(fd), buf, 0, 512, 0, cb)`, 'TypeError', /read.*fd/],
  ['read: no callback', `b.read(fd, buf, 0, 512, 0, 'cb')`, 'TypeError', /read.*callback/],
  // datasync / zeroRange / discard: (fd, [isBlockDevice, position, length,] cb)
  ['datasync: a string fd', `b.datasync(String(fd), cb)`, 'TypeError', /datasync.*fd/],
  ['datasync: no callback', `b.datasync(fd)`, 'TypeError', /datasync.*callback/],
  ['zeroRange: a negative position', `b.zeroRange(fd, false, -4096, 4096, cb)`, 'RangeError', /zeroRange.*position/],
  ['zeroRange: a number for isBlockDevice', `b.zeroRange(fd, 0, 0, 4096, cb)`, 'TypeError', /zeroRange.*isBlockDevice/],
  ['zeroRange: a fractional length', `b.zeroRange(fd, false, 0, 4096.5, cb)`, 'RangeError', /zeroRange.*length/],
  ['discard: a string fd', `b.discard(String(fd), false, 0, 4096, cb)`, 'TypeError', /discard.*fd/],
  ['discard: no callback', `b.discard(fd, false, 0, 4096)`, 'TypeError', /discard.*callback/],
  // copyOut: (srcFd, srcPosition, length, buffer, destFds, destPositions, writeOnReadError, cb)
  [
    'copyOut: a non-number in the fd array',
    `b.copyOut(fd, 0, 512, buf, [fd, 'x'], [4096, 0], false, cb)`,
    'TypeError',
    /copyOut.*destFds\[1\]/,
  ],
  [
    'copyOut: a fractional destination position',
    `b.copyOut(fd, 0, 512, buf, [fd], [0.5], false, cb)`,
    'RangeError',
    /copyOut.*destPositions\[0\]/,
  ],
  ['copyOut: fewer positions than fds', `b.copyOut(fd, 0, 512, buf, [fd, fd], [4096], false, cb)`, 'RangeError', /copyOut.*destPositions/],
  ['copyOut: destFds not an array', `b.copyOut(fd, 0, 512, buf, fd, [4096], false, cb)`, 'TypeError', /copyOut.*destFds/],
  ['copyOut: a length longer than the buffer', `b.copyOut(fd, 0, 8192, buf, [fd], [0], false, cb)`, 'RangeError', /copyOut.*buffer/],
  ['copyOut: a string source fd', `b.copyOut(String(fd), 0, 512, buf, [fd], [4096], false, cb)`, 'TypeError', /copyOut.*srcFd/],
  ['copyOut: no callback', `b.copyOut(fd, 0, 512, buf, [fd], [4096], false)`, 'TypeError', /copyOut.*callback/],
  // scatter: (srcFd, srcPosition, spanLength, buffer, destFd, pieces, cb)
  ['scatter: pieces not a Float64Array', `b.scatter(fd, 0, 512, buf, fd, [0, 4096, 512], cb)`, 'TypeError', /scatter.*pieces/],
  ['scatter: pieces not in triples', `b.scatter(fd, 0, 512, buf, fd, new Float64Array([0, 4096]), cb)`, 'RangeError', /scatter.*pieces/],
  [
    'scatter: a piece past the span',
    `b.scatter(fd, 0, 512, buf, fd, new Float64Array([256, 4096, 512]), cb)`,
    'RangeError',
    /scatter.*pieces\[0\]/,
  ],
  [
    'scatter: a negative piece position',
    `b.scatter(fd, 0, 512, buf, fd, new Float64Array([0, -1, 512]), cb)`,
    'RangeError',
    /scatter.*pieces\[0\]/,
  ],
  [
    'scatter: a span longer than the buffer',
    `b.scatter(fd, 0, 8192, buf, fd, new Float64Array([0, 0, 512]), cb)`,
    'RangeError',
    /scatter.*buffer/,
  ],
  [
    'scatter: a string destination fd',
    `b.scatter(fd, 0, 512, buf, String(fd), new Float64Array([0, 4096, 512]), cb)`,
    'TypeError',
    /scatter.*destFd/,
  ],
  // synchronous entry points
  ['open: a number for the path', `b.open(7, false, false, true, 0, false, 0)`, 'TypeError', /open.*path/],
  ['open: a lock mode out of range', `b.open('/dev/null', false, false, true, 3, false, 0)`, 'RangeError', /open.*lockMode/],
  ['open: a string for write', `b.open('/dev/null', 'yes', false, true, 0, false, 0)`, 'TypeError', /open.*write/],
  ['open: a number for create', `b.open('/dev/null', true, false, true, 0, 1, 0)`, 'TypeError', /open.*create/],
  ['open: a negative size to create', `b.open('/dev/null', true, false, true, 0, true, -1)`, 'RangeError', /open.*createBytes/],
  ['seekExtent: a string fd', `b.seekExtent(String(fd), 0, false)`, 'TypeError', /seekExtent.*fd/],
  ['seekExtent: a negative offset', `b.seekExtent(fd, -1, false)`, 'RangeError', /seekExtent.*byteOffset/],
  ['seekExtent: a number for hole', `b.seekExtent(fd, 0, 1)`, 'TypeError', /seekExtent.*hole/],
  ['lock: a lock mode that is not a number', `b.lock('/dev/null', 'exclusive')`, 'TypeError', /lock.*lockMode/],
  ['close: a string fd', `b.close(String(fd))`, 'TypeError', /close.*fd/],
  ['allocAligned: a negative size', `b.allocAligned(-1)`, 'RangeError', /allocAligned.*bytes/],
  ['allocAligned: a string size', `b.allocAligned('4096')`, 'TypeError', /allocAligned.*bytes/],
];

describe('native binding argument checks', () => {
  let dir: string;
  let file: string;
  const content = Buffer.alloc(FILE_BYTES);
  for (let i = 0; i < FILE_BYTES; i++) content[i] = (i * 7) & 0xff;

  beforeAll(() => {
    dir = tempDir();
    file = path.join(dir, 'data.img');
  });
  afterAll(() => removeDir(dir));
  beforeEach(() => fs.writeFileSync(file, content));

  it.each(cases)('%s throws synchronously and does no I/O', (_name, call, errorClass, message) => {
    const outcome = runCall(file, call);
    expect(outcome.threw).toEqual({ name: errorClass, message: expect.stringMatching(message) });
    expect(outcome.callbacks).toBe(0);
    expect(outcome.bufferTouched).toBe(false);
    expect(fs.readFileSync(file).equals(content)).toBe(true);
  });

  it('valid calls still work: write, read back, copyOut and scatter', () => {
    const outcome = runCall(
      file,
      `b.write(fd, buf, 0, 512, 0, (e, n) => {
         if (e !== 0 || n !== 512) throw new Error('write ' + e);
         b.copyOut(fd, 0, 512, Buffer.alloc(512), [fd], [512], false, (re, rn, we) => {
           if (re !== 0 || we[0] !== 0) throw new Error('copyOut');
           b.scatter(fd, 0, 1024, Buffer.alloc(1024), fd, new Float64Array([0, 4096, 1024]), (r2, w2) => {
             if (r2 !== 0 || w2 !== 0) throw new Error('scatter');
             callbacks++;
           });
         });
       })`,
      2000,
    );
    expect(outcome).toEqual({ threw: null, callbacks: 1, bufferTouched: false });
    const expected = Buffer.from(content);
    expected.fill(0xa5, 0, 1024);
    expected.fill(0xa5, 4096, 5120);
    expect(fs.readFileSync(file).equals(expected)).toBe(true);
  });
});
