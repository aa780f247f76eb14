import { CoreLog, MirrorError, RegionHash, parseMirrorTable, formatMirrorTable, deriveRegionSize } from '@dmtool/dm-mirror';

describe('core log (dm-log.c core_*)', () => {
  test('starts all clean, all out of sync; nosync starts in sync', () => {
    const log = new CoreLog(8, 5);
    expect(log.dirtyRegions()).toEqual([]);
    expect(log.getSyncCount()).toBe(0);
    const ns = new CoreLog(8, 5, 'nosync');
    expect(ns.getSyncCount()).toBe(5);
    expect(ns.getResyncWork()).toBeUndefined();
  });

  test('get_resync_work scans forward once, skipping recovering regions; set_region_sync counts', () => {
    const log = new CoreLog(8, 4);
    expect(log.getResyncWork()).toBe(0);
    expect(log.getResyncWork()).toBe(1);
    log.setRegionSync(0, true);
    expect(log.getResyncWork()).toBe(2);
    expect(log.getResyncWork()).toBe(3);
    expect(log.getResyncWork()).toBeUndefined();
    log.setRegionSync(1, false);
    // behind the cursor: not offered again until resume
    expect(log.getResyncWork()).toBeUndefined();
    expect(log.getSyncCount()).toBe(1);
    log.setRegionSync(0, false);
    expect(log.getSyncCount()).toBe(0);
  });

  test('mark / clear change the clean bit', () => {
    const log = new CoreLog(8, 4);
    log.markRegion(2);
    expect(log.isClean(2)).toBe(false);
    expect(log.dirtyRegions()).toEqual([2]);
    log.clearRegion(2);
    expect(log.isClean(2)).toBe(true);
  });

  test('status lines', () => {
    expect(new CoreLog(1024, 4).statusInfo()).toBe('1 core');
    expect(new CoreLog(1024, 4).statusTable()).toBe('core 1 1024 ');
    expect(new CoreLog(1024, 4, 'nosync').statusTable()).toBe('core 2 1024 nosync ');
  });

  test('refuses a region size that is not a power of two', () => {
    expect(() => new CoreLog(1000, 4)).toThrow(MirrorError);
    expect(() => new CoreLog(1, 4)).toThrow(/power of two/);
  });
});

describe('region hash states', () => {
  test('CLEAN → DIRTY on write (log marked) → CLEAN queued → cleaned on update', async () => {
    const log = new CoreLog(8, 4, 'nosync');
    const rh = new RegionHash(log, 30);
    expect(rh.regionSectors(3)).toBe(6);
    expect(rh.state(1)).toBe('CLEAN');
    expect(await rh.beginWrite(1)).toBe('DIRTY');
    expect(log.isClean(1)).toBe(false);
    expect(rh.state(1)).toBe('DIRTY');
    expect(await rh.beginWrite(1)).toBe('DIRTY');
    rh.endWrite(1);
    expect(rh.state(1)).toBe('DIRTY');
    rh.endWrite(1);
    expect(rh.state(1)).toBe('CLEAN');
    expect(log.isClean(1)).toBe(false);
    await rh.update();
    expect(log.isClean(1)).toBe(true);
  });

  test('a failed leg write makes the region NOSYNC and drops it from the sync count', async () => {
    const log = new CoreLog(8, 4, 'nosync');
    const rh = new RegionHash(log, 32);
    await rh.beginWrite(2);
    rh.endWrite(2, true);
    expect(rh.state(2)).toBe('NOSYNC');
    expect(log.getSyncCount()).toBe(3);
    await rh.update();
    expect(log.isClean(2)).toBe(false);
  });

  test('recovery quiesces pending writes and delays new ones', async () => {
    const log = new CoreLog(8, 2);
    const rh = new RegionHash(log, 16);
    expect(rh.state(0)).toBe('NOSYNC');
    await rh.beginWrite(0);
    let prepared: number | undefined = -1;
    const prep = rh.recoveryPrepare().then((r) => (prepared = r));
    await new Promise((r) => setImmediate(r));
    expect(prepared).toBe(-1);
    expect(rh.state(0)).toBe('RECOVERING');
    rh.endWrite(0);
    await prep;
    expect(prepared).toBe(0);
    let writeState: string | undefined;
    const w = rh.beginWrite(0).then((s) => (writeState = s));
    await new Promise((r) => setImmediate(r));
    expect(writeState).toBeUndefined();
    rh.recoveryEnd(0, true);
    await rh.update();
    await w;
    expect(log.inSync(0)).toBe(true);
    expect(writeState).toBe('DIRTY');
  });
});

describe('table lines', () => {
  test('parses and formats a disk log line', () => {
    const line = '0 2048 mirror disk 2 /dev/loop9 1024 2 /dev/loop7 0 /dev/loop8 0';
    const t = parseMirrorTable(line);
    expect(t).toEqual({
      startSector: 0,
      lengthSectors: 2048,
      log: { type: 'disk', path: '/dev/loop9' },
      regionSize: 1024,
      syncMode: 'default',
      legs: [
        { path: '/dev/loop7', offsetSectors: 0 },
        { path: '/dev/loop8', offsetSectors: 0 },
      ],
      handleErrors: false,
      keepLog: false,
    });
    expect(formatMirrorTable(t)).toBe(line);
    const l2 = '0 4096 mirror core 2 64 nosync 3 a 0 b 8 c 16 2 handle_errors keep_log';
    const t2 = parseMirrorTable(l2);
    expect(t2.syncMode).toBe('nosync');
    expect(t2.handleErrors && t2.keepLog).toBe(true);
    expect(formatMirrorTable(t2)).toBe(l2);
  });

  test.each([
    ['0 2048 linear /dev/a 0', /target must be "mirror"/],
    ['0 2048 mirror disk 2 L 1000 2 a 0 b 0', /power of two/],
    ['0 2048 mirror disk 2 L 4096 2 a 0 b 0', /larger than the mirror/],
    ['0 2048 mirror disk 1 1024 2 a 0 b 0', /takes 2\.\.3 arguments/],
    ['0 2048 mirror core 1 1024 1 a 0', /#mirrors must be 2\.\.9/],
    ['0 2048 mirror core 1 1024 3 a 0 b 0', /3 mirrors announced, 2 present/],
    ['0 2048 mirror core 2 1024 maybe 2 a 0 b 0', /sync or nosync/],
    ['0 2048 mirror core 1 1024 2 a 0 b 0 1 keep_log', /keep_log requires handle_errors/],
    ['0 2048 mirror core 1 1024 2 a 0 b 0 1 fast', /unknown feature/],
  ])('refuses %s', (line, msg) => {
    expect(() => parseMirrorTable(line)).toThrow(msg);
  });

  test('region size derived from the log region count', () => {
    expect(deriveRegionSize(20971520, 20480)).toBe(1024);
    expect(deriveRegionSize(1000, 2)).toBe(512);
    expect(deriveRegionSize(2048, 3)).toBeUndefined();
  });
});

describe('region hash: a leg failing on a write that is draining before a recovery', () => {
  test('the region stays RECOVERING and the writes parked on it are released when it ends', async () => {
    const log = new CoreLog(8, 4, 'nosync');
    const rh = new RegionHash(log, 32);
    log.setRegionSync(2, false); // region 2 needs resync
    await rh.beginWrite(2); // a write in flight before the recovery starts
    const prepared = rh.recoveryPrepare(); // waits for that write to drain
    let parkedStarted = false;
    const parked = rh.beginWrite(2).then(() => (parkedStarted = true)); // a new write: delayed
    rh.endWrite(2, true); // the in-flight write missed a leg
    expect(await prepared).toBe(2);
    expect(rh.state(2)).toBe('RECOVERING');
    expect(parkedStarted).toBe(false);
    rh.recoveryEnd(2, true);
    await rh.update();
    await parked;
    expect(parkedStarted).toBe(true);
    expect(log.inSync(2)).toBe(true);
  });
});
