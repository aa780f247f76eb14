import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { Device, setFaultPlan } from '@dmtool/native';
import { removeDir, tempDir } from '../../test/support/loop';

const dist = path.join(__dirname, '..', 'dist', 'index.js');

/** Run a script against the built binding in a child with a fault plan; it may be SIGKILLed. */
function child(script: string, plan: object) {
  return spawnSync(process.execPath, ['-e', `const n = require(${JSON.stringify(dist)}); (async () => { ${script} })()`], {
    env: { ...process.env, DMTOOL_FAULTS: JSON.stringify(plan) },
    encoding: 'utf8',
  });
}

describe('volatile write cache (power-cut crash tests)', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = tempDir();
    file = path.join(dir, 'disk.img');
    fs.writeFileSync(file, Buffer.alloc(16384, 0x11));
  });
  afterEach(() => {
    setFaultPlan(undefined);
    removeDir(dir);
  });

  it('keeps writes in memory until a flush; reads see them', async () => {
    setFaultPlan({ volatileCache: {} });
    const d = Device.open(file, { write: true });
    try {
      await d.write(Buffer.alloc(4096, 0x22), 0, 4096, 4096);
      await d.zeroRange(8192, 512);
      const back = Buffer.alloc(16384);
      await d.read(back, 0, 16384, 0);
      expect([back[0], back[4096], back[8191], back[8192], back[8703], back[8704]]).toEqual([0x11, 0x22, 0x22, 0, 0, 0x11]);
      expect(fs.readFileSync(file)[4096]).toBe(0x11); // not on disk yet
      await d.flush();
      const disk = fs.readFileSync(file);
      expect([disk[4096], disk[8192]]).toEqual([0x22, 0]);
    } finally {
      d.close();
    }
  });

  it('a SIGKILL loses what was not flushed', () => {
    const r = child(
      `const d = n.Device.open(${JSON.stringify(file)}, { write: true });
       await d.write(Buffer.alloc(4096, 0x33), 0, 4096, 0); await d.flush();
       await d.write(Buffer.alloc(4096, 0x44), 0, 4096, 4096);
       process.kill(process.pid, 'SIGKILL');`,
      { volatileCache: {} },
    );
    expect(r.signal).toBe('SIGKILL');
    const disk = fs.readFileSync(file);
    expect([disk[0], disk[4096]]).toEqual([0x33, 0x11]);
  });

  it('a kill during a reverse-order flush persists a later write without an earlier one', () => {
    const r = child(
      `const d = n.Device.open(${JSON.stringify(file)}, { write: true });
       await d.write(Buffer.alloc(4096, 0x55), 0, 4096, 0);
       await d.write(Buffer.alloc(4096, 0x66), 0, 4096, 8192);
       await d.flush();`,
      { volatileCache: { order: 'reverse' }, crashDuringFlush: 1 },
    );
    expect(r.signal).toBe('SIGKILL');
    const disk = fs.readFileSync(file);
    expect([disk[0], disk[8192]]).toEqual([0x11, 0x66]);
  });

  it('a normal exit leaves the cached writes to the OS (applied on close)', () => {
    const r = child(
      `const d = n.Device.open(${JSON.stringify(file)}, { write: true });
       await d.write(Buffer.alloc(512, 0x77), 0, 512, 512); d.close();`,
      { volatileCache: {} },
    );
    expect(r.status).toBe(0);
    expect(fs.readFileSync(file)[512]).toBe(0x77);
  });
});
