import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Device } from '../lib/device';

/** Lock modes of Device.open, within one process (each open is its own open file description). */
describe('Device.open locks', () => {
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
    const r1 = Device.open(file);
    const r2 = Device.open(file);
    expect(() => Device.open(file, { write: true })).toThrow(locked);
    r1.close();
    expect(() => Device.open(file, { write: true })).toThrow(locked);
    r2.close();
    const w = Device.open(file, { write: true });
    expect(() => Device.open(file)).toThrow(locked);
    expect(() => Device.open(file, { write: true })).toThrow(locked);
    w.close();
    Device.open(file, { write: true }).close();
  });

  it("lock: 'none' neither takes nor respects a lock; an explicit mode overrides the default", () => {
    const w = Device.open(file, { write: true });
    try {
      Device.open(file, { lock: 'none' }).close();
      const r = Device.open(file, { write: true, lock: 'none' });
      r.close();
    } finally {
      w.close();
    }
    const exclusiveReader = Device.open(file, { lock: 'exclusive' });
    try {
      expect(() => Device.open(file)).toThrow(locked);
    } finally {
      exclusiveReader.close();
    }
  });
});
