import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FileDevice } from '../lib/device';

/** Lock modes of FileDevice.open, within one process (each open is its own open file description). */
describe('FileDevice.open locks', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-locks-'));
    file = path.join(dir, 'a.img');
    fs.writeFileSync(file, Buffer.alloc(4096));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const locked = new RegExp(`^EWOULDBLOCK: open failed on .*a\\.img: locked by pid ${process.pid} \\(.*\\)$`);

  it('readers share; a writer is refused while a reader holds the file, and a reader while a writer does', () => {
    const r1 = FileDevice.open(file);
    const r2 = FileDevice.open(file);
    expect(() => FileDevice.open(file, { write: true })).toThrow(locked);
    r1.close();
    expect(() => FileDevice.open(file, { write: true })).toThrow(locked);
    r2.close();
    const w = FileDevice.open(file, { write: true });
    expect(() => FileDevice.open(file)).toThrow(locked);
    expect(() => FileDevice.open(file, { write: true })).toThrow(locked);
    w.close();
    FileDevice.open(file, { write: true }).close();
  });

  it("lock: 'none' neither takes nor respects a lock; an explicit mode overrides the default", () => {
    const w = FileDevice.open(file, { write: true });
    try {
      FileDevice.open(file, { lock: 'none' }).close();
      const r = FileDevice.open(file, { write: true, lock: 'none' });
      r.close();
    } finally {
      w.close();
    }
    const exclusiveReader = FileDevice.open(file, { lock: 'exclusive' });
    try {
      expect(() => FileDevice.open(file)).toThrow(locked);
    } finally {
      exclusiveReader.close();
    }
  });
});
