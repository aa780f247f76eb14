import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { FaultInjector, VolatileCacheDevice, withFaults } from '@dmtool/devices';
import { FileDevice } from '@dmtool/native';
import { removeDir, tempDir } from '../../../test/support/loop';

const devicesDist = path.join(__dirname, '..', 'dist', 'index.js');
const nativeDist = path.join(__dirname, '..', '..', '..', 'native', 'dist', 'index.js');

/** Run a script in a child with a real file behind the fault decorators; it may be SIGKILLed. */
function child(file: string, plan: object, script: string) {
  const prelude = `const dev = require(${JSON.stringify(devicesDist)}); const n = require(${JSON.stringify(nativeDist)});
    const d = dev.withFaults(n.FileDevice.open(${JSON.stringify(file)}, { write: true }), new dev.FaultInjector(${JSON.stringify(plan)}));`;
  return spawnSync(process.execPath, ['-e', `${prelude} (async () => { ${script} })()`], { encoding: 'utf8' });
}

describe('volatile write cache decorator (power-cut crash tests)', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = tempDir();
    file = path.join(dir, 'disk.img');
    fs.writeFileSync(file, Buffer.alloc(16384, 0x11));
  });
  afterEach(() => removeDir(dir));

  it('keeps writes in memory until a flush; reads see them', async () => {
    const d = new VolatileCacheDevice(FileDevice.open(file, { write: true }));
    try {
      await d.write(Buffer.alloc(4096, 0x22), 0, 4096, 4096);
      await d.zeroRange(8192, 512);
      const back = Buffer.alloc(16384);
      await d.read(back, 0, 16384, 0);
      expect([back[0], back[4096], back[8191], back[8192], back[8703], back[8704]]).toEqual([0x11, 0x22, 0x22, 0, 0, 0x11]);
      expect(fs.readFileSync(file)[4096]).toBe(0x11); // not on disk yet
      expect(d.cachedWrites).toBe(2);
      await d.flush();
      const disk = fs.readFileSync(file);
      expect([disk[4096], disk[8192]]).toEqual([0x22, 0]);
      expect(d.cachedWrites).toBe(0);
    } finally {
      d.close();
    }
  });

  it('offers no native-copy capability (its writes must wait for a flush)', () => {
    const inner = FileDevice.open(file, { write: true });
    try {
      expect(inner.nativeEndpoint()).toBeDefined();
      expect(withFaults(inner, new FaultInjector({ volatileCache: {} })).nativeEndpoint?.()).toBeUndefined();
      expect(withFaults(inner, new FaultInjector({})).nativeEndpoint?.()?.fd).toBe(inner.nativeEndpoint().fd);
    } finally {
      inner.close();
    }
  });

  it('a SIGKILL loses what was not flushed', () => {
    const r = child(
      file,
      { volatileCache: {} },
      `await d.write(Buffer.alloc(4096, 0x33), 0, 4096, 0); await d.flush();
       await d.write(Buffer.alloc(4096, 0x44), 0, 4096, 4096);
       process.kill(process.pid, 'SIGKILL');`,
    );
    expect(r.signal).toBe('SIGKILL');
    const disk = fs.readFileSync(file);
    expect([disk[0], disk[4096]]).toEqual([0x33, 0x11]);
  });

  it('a kill during a reverse-order flush persists a later write without an earlier one', () => {
    const r = child(
      file,
      { volatileCache: { order: 'reverse' }, crashDuringFlush: 1 },
      `await d.write(Buffer.alloc(4096, 0x55), 0, 4096, 0);
       await d.write(Buffer.alloc(4096, 0x66), 0, 4096, 8192);
       await d.flush();`,
    );
    expect(r.signal).toBe('SIGKILL');
    const disk = fs.readFileSync(file);
    expect([disk[0], disk[8192]]).toEqual([0x11, 0x66]);
  });

  it('a FUA write survives a SIGKILL; the cached writes before it are lost except where it covers them', () => {
    const r = child(
      file,
      { volatileCache: {} },
      `await d.write(Buffer.alloc(4096, 0x33), 0, 4096, 0);
       await d.write(Buffer.alloc(4096, 0x44), 0, 4096, 2048, { fua: true });
       await d.zeroRange(12288, 1024, { fua: true });
       await d.write(Buffer.alloc(512, 0x55), 0, 512, 14336);
       process.kill(process.pid, 'SIGKILL');`,
    );
    expect(r.signal).toBe('SIGKILL');
    const expected = Buffer.alloc(16384, 0x11);
    expected.fill(0x44, 2048, 6144);
    expected.fill(0, 12288, 13312);
    expect(fs.readFileSync(file).equals(expected)).toBe(true);
  });

  it('a cached write applied after a FUA write over it does not bring the older bytes back', async () => {
    const d = new VolatileCacheDevice(FileDevice.open(file, { write: true }), { order: 'reverse' });
    try {
      await d.write(Buffer.alloc(4096, 0x66), 0, 4096, 0);
      await d.write(Buffer.alloc(1024, 0x77), 0, 1024, 1024, { fua: true });
      await d.zeroRange(3072, 2048, { fua: true });
      const expected = Buffer.alloc(16384, 0x11);
      expected.fill(0x66, 0, 4096);
      expected.fill(0x77, 1024, 2048);
      expected.fill(0, 3072, 5120);
      const back = Buffer.alloc(16384);
      await d.read(back, 0, 16384, 0);
      expect(back.equals(expected)).toBe(true);
      const onDisk = Buffer.alloc(16384, 0x11);
      onDisk.fill(0x77, 1024, 2048);
      onDisk.fill(0, 3072, 5120);
      expect(fs.readFileSync(file).equals(onDisk)).toBe(true);
      expect(d.cachedWrites).toBe(1);
      await d.flush();
      expect(fs.readFileSync(file).equals(expected)).toBe(true);
    } finally {
      d.close();
    }
  });

  it('a normal exit leaves the cached writes to the OS (applied on close)', () => {
    const r = child(file, { volatileCache: {} }, `await d.write(Buffer.alloc(512, 0x77), 0, 512, 512); d.close();`);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(fs.readFileSync(file)[512]).toBe(0x77);
  });
});
