import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BlockDevice } from '@dmtool/devices';
import { FileDevice } from '@dmtool/native';
import { Bitmap, decodeDiskLog, DiskLog, encodeDiskLog } from '@dmtool/dm-mirror';

describe('disk log on a file (dm-log.c disk_*)', () => {
  let dir: string;
  let file: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-disklog-'));
    file = path.join(dir, 'log.img');
    fs.writeFileSync(file, Buffer.alloc(8192, 0xaa));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  const onDisk = (regions: number) => decodeDiskLog(fs.readFileSync(file), { expectRegions: regions });

  function traced(log: DiskLog, events: string[]) {
    const dev = log.device;
    const write = dev.write.bind(dev);
    const flush = dev.flush.bind(dev);
    dev.write = async (...a: Parameters<BlockDevice['write']>) => {
      events.push('log-write');
      return write(...a);
    };
    dev.flush = async () => {
      events.push('log-flush');
      return flush();
    };
    log.setFlushCallback(async () => {
      events.push('legs-flush');
    });
  }

  test('a new log: written whole (header, zeroed unused area, bitmap, padding) and flushed', async () => {
    const log = await DiskLog.open(FileDevice.open(file, { write: true }), { regionSize: 8, regionCount: 40, create: true });
    log.close();
    const raw = fs.readFileSync(file);
    expect(raw.subarray(0, 16).toString('hex')).toBe('725269' + '4d' + '02000000' + '2800000000000000');
    expect(raw.subarray(16, 1536).every((b) => b === 0)).toBe(true);
    expect(raw.subarray(1536).every((b) => b === 0xaa)).toBe(true);
    expect(onDisk(40).clean.count()).toBe(0);
  });

  test('flush order: dirtied → write then log flush; cleaned → legs flushed first, no log flush; nothing → no I/O', async () => {
    const log = await DiskLog.open(FileDevice.open(file, { write: true }), { regionSize: 8, regionCount: 40, syncMode: 'nosync' });
    const events: string[] = [];
    traced(log, events);
    await log.flush();
    expect(events).toEqual([]);
    log.markRegion(7);
    await log.flush();
    expect(events).toEqual(['log-write', 'log-flush']);
    expect(onDisk(40).clean.zeros()).toEqual([7]);
    events.length = 0;
    log.clearRegion(7);
    await log.flush();
    expect(events).toEqual(['legs-flush', 'log-write']);
    expect(onDisk(40).clean.zeros()).toEqual([]);
    log.close();
  });

  test('a region dirtied while a flush is in flight is on disk once its own flush returns', async () => {
    const log = await DiskLog.open(FileDevice.open(file, { write: true }), { regionSize: 8, regionCount: 40, syncMode: 'nosync' });
    log.markRegion(0);
    const first = log.flush();
    await new Promise((r) => setImmediate(r)); // the first flush is now waiting on its I/O
    log.markRegion(5);
    await first;
    await log.flush();
    expect(onDisk(40).clean.zeros()).toEqual([0, 5]);
    log.close();
  });

  test('a region cleaned while the legs are being flushed is not recorded clean by that flush', async () => {
    const log = await DiskLog.open(FileDevice.open(file, { write: true }), { regionSize: 8, regionCount: 40, syncMode: 'nosync' });
    log.markRegion(1);
    log.markRegion(2);
    await log.flush();
    let legFlushes = 0;
    log.setFlushCallback(async () => {
      legFlushes++;
      if (legFlushes === 1) log.clearRegion(2); // cleaned after this leg flush started
    });
    log.clearRegion(1);
    await log.flush();
    expect(onDisk(40).clean.zeros()).toEqual([2]);
    await log.flush();
    expect(legFlushes).toBe(2);
    expect(onDisk(40).clean.zeros()).toEqual([]);
    log.close();
  });

  test('a failed leg flush leaves the regions it was to record clean dirty, keeps earlier ones, and ignores later clears', async () => {
    const log = await DiskLog.open(FileDevice.open(file, { write: true }), { regionSize: 8, regionCount: 40, syncMode: 'nosync' });
    for (const r of [1, 5, 7]) log.markRegion(r);
    await log.flush();
    log.setFlushCallback(async () => undefined);
    log.clearRegion(7);
    await log.flush();
    expect(onDisk(40).clean.zeros()).toEqual([1, 5]);
    log.setFlushCallback(async () => {
      throw new Error('leg flush failed');
    });
    log.clearRegion(1);
    log.clearRegion(5);
    await log.flush();
    expect(log.legFlushFailed).toBe(true);
    expect(onDisk(40).clean.zeros()).toEqual([1, 5]);
    expect([log.inSync(1), log.inSync(5), log.inSync(7), log.getSyncCount()]).toEqual([false, false, true, 38]);
    log.clearRegion(2);
    expect(log.isClean(2)).toBe(true);
    log.markRegion(2);
    log.clearRegion(2);
    expect(log.isClean(2)).toBe(false);
    log.close();
  });

  test('resume: sync bits from the clean bits; persist:false writes nothing', async () => {
    const clean = new Bitmap(40);
    clean.fill(true);
    clean.clear(3);
    clean.clear(39);
    fs.writeFileSync(file, encodeDiskLog(40, clean), { flag: 'r+' });
    const before = fs.readFileSync(file);
    const log = await DiskLog.open(FileDevice.open(file), { regionSize: 8, regionCount: 40, persist: false });
    expect(log.getSyncCount()).toBe(38);
    expect(log.getResyncWork()).toBe(3);
    expect(log.getResyncWork()).toBe(39);
    expect(log.getResyncWork()).toBeUndefined();
    expect(log.statusInfo()).toBe(`3 disk ${file} A`);
    expect(log.statusTable()).toBe(`disk 2 ${file} 8 `);
    log.close();
    expect(fs.readFileSync(file).equals(before)).toBe(true);
  });

  test('kernel resume rules (strict: false): grown regions are dirty, or clean with nosync; bad magic = new log', async () => {
    const clean = new Bitmap(40);
    clean.fill(true);
    fs.writeFileSync(file, encodeDiskLog(40, clean), { flag: 'r+' });
    const grown = await DiskLog.open(FileDevice.open(file, { write: true }), { regionSize: 8, regionCount: 70, strict: false });
    grown.close();
    expect(onDisk(70).clean.zeros()).toEqual(Array.from({ length: 30 }, (_, i) => 40 + i));
    fs.writeFileSync(file, encodeDiskLog(40, clean), { flag: 'r+' });
    const refused = FileDevice.open(file, { write: true });
    await expect(DiskLog.open(refused, { regionSize: 8, regionCount: 70 })).rejects.toThrow(/records 40 regions/);
    refused.close(); // the caller's device: it holds the file's lock until closed
    const ns = await DiskLog.open(FileDevice.open(file, { write: true }), { regionSize: 8, regionCount: 70, syncMode: 'nosync' });
    ns.close();
    expect(onDisk(70).clean.count()).toBe(70);
    fs.writeFileSync(file, Buffer.alloc(8192, 0x11));
    const fresh = await DiskLog.open(FileDevice.open(file, { write: true }), { regionSize: 8, regionCount: 70, strict: false });
    fresh.close();
    expect(onDisk(70).clean.count()).toBe(0);
  });
});
