/**
 * dm-mirror interoperability with the real kernel (qemu, TCG): disk logs
 * dmtool writes are loaded and resynced by the kernel's mirror target, and
 * logs the kernel leaves out of sync are read and resynced by dmtool.
 */
import * as fs from 'fs';
import * as path from 'path';
import { makeImage, patternBytes, readRange, sha256, sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';
import { describeKernelVm, dmtool, expectGuestOk, ok, printDevNumbers, vmDir, vmTools, WAIT_SYNCED, zeroFile } from './helpers';
import { runVm, valueOf, VmResult } from './vm';

jest.setTimeout(300_000);

const MiB = 1 << 20;
const LEG_BYTES = 16 * MiB;
const LEG_SECTORS = LEG_BYTES / 512;
const REGION = 256; // sectors (128 KiB): 128 regions, four bitmap words
const REGIONS = LEG_SECTORS / REGION;

/** dmtool's status line with image paths replaced by the guest's major:minor numbers. */
function dmtoolStatusAsKernel(r: VmResult, args: string[], files: Record<string, string>): string {
  let line = ok(['mirror-status', ...args])
    .split('\n')[0]
    .trim();
  for (const [name, file] of Object.entries(files)) line = line.split(file).join(valueOf(r, `dev-${name}`));
  return line;
}

/** Decode the kernel dm-log disk header and clean bitmap of a log image. */
function readLog(file: string): { magic: number; version: number; regions: number; clean: boolean[]; tailZero: boolean } {
  const hdr = readRange(file, 0, 16);
  const words = Math.ceil(REGIONS / 32);
  const bits = readRange(file, 1024, words * 4);
  const clean = Array.from({ length: REGIONS }, (_, r) => (bits[r >> 3] & (1 << (r & 7))) !== 0);
  let tailZero = true;
  for (let r = REGIONS; r < words * 32; r++) if (bits[r >> 3] & (1 << (r & 7))) tailZero = false;
  return { magic: hdr.readUInt32LE(0), version: hdr.readUInt32LE(4), regions: Number(hdr.readBigUInt64LE(8)), clean, tailZero };
}

describeKernelVm('kernel dm-mirror against dmtool', () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir('dmtool-kvm-mirror-');
  });
  afterAll(() => {
    if (!process.env.KEEP_VM_DIRS) removeDir(dir);
  });

  test('the kernel loads disk logs dmtool wrote: a nosync log is in sync at once, an out-of-sync one is resynced; dmtool reads the log the kernel left', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'dmtool-log');
    const f = (n: string) => path.join(w, `${n}.img`);
    // m0: log created with --nosync over legs that differ (the kernel must not copy).
    makeImage(f('a0'), LEG_BYTES, 'LEG-A0');
    makeImage(f('a1'), LEG_BYTES, 'LEG-A1');
    zeroFile(f('alog'), MiB);
    ok(['mirror-create', '--log', f('alog'), '--region-size', String(REGION), '--nosync', f('a0'), f('a1')]);
    // m1: log with every region out of sync.
    makeImage(f('b0'), LEG_BYTES, 'LEG-B0');
    makeImage(f('b1'), LEG_BYTES, 'LEG-B1');
    zeroFile(f('blog'), MiB);
    ok(['mirror-create', '--log', f('blog'), '--region-size', String(REGION), f('b0'), f('b1')]);
    expect(readLog(f('blog')).clean.every((c) => !c)).toBe(true);
    const sha = Object.fromEntries(['a0', 'a1', 'b0', 'b1'].map((n) => [n, sha256File(f(n))]));
    const alogBefore = fs.readFileSync(f('alog'));

    zeroFile(f('zlog'), MiB); // formatted by the kernel (nosync)
    const names = ['alog', 'a0', 'a1', 'blog', 'b0', 'b1', 'zlog'];
    const table = (log: string, l0: string, l1: string) =>
      `0 ${LEG_SECTORS} mirror disk 2 /dev/disk/${log} ${REGION} 2 /dev/disk/${l0} 0 /dev/disk/${l1} 0`;
    const r = await runVm(tools, {
      workDir: w,
      disks: names.map((n) => ({ file: f(n), name: n })),
      scenario:
        printDevNumbers(names) +
        WAIT_SYNCED +
        `
dmsetup create m0 --table "${table('alog', 'a0', 'a1')}"
echo "m0-loaded: $(dmsetup status m0)"
echo "m0-table: $(dmsetup table m0)"
dmsetup remove m0
dmsetup create z0 --table "0 ${LEG_SECTORS} mirror disk 3 /dev/disk/zlog ${REGION} nosync 2 /dev/disk/a0 0 /dev/disk/a1 0"
echo "z0-loaded: $(dmsetup status z0)"
dmsetup remove z0
dmsetup create m1 --table "${table('blog', 'b0', 'b1')}"
echo "m1-loaded: $(dmsetup status m1)"
wait_synced m1
echo "m1-synced: $(dmsetup status m1)"
dmsetup remove m1
for n in a0 a1 b0 b1; do echo "sha-$n: $(sha256sum /dev/disk/$n | cut -d' ' -f1)"; done
`,
    });
    expectGuestOk(r);
    const dev = (n: string) => valueOf(r, `dev-${n}`);

    // m0: every region in sync straight away, nothing copied, log unchanged.
    expect(valueOf(r, 'm0-loaded')).toBe(
      `0 ${LEG_SECTORS} mirror 2 ${dev('a0')} ${dev('a1')} ${REGIONS}/${REGIONS} 1 AA 3 disk ${dev('alog')} A`,
    );
    expect(valueOf(r, 'm0-table')).toBe(`0 ${LEG_SECTORS} mirror disk 2 ${dev('alog')} ${REGION} 2 ${dev('a0')} 0 ${dev('a1')} 0`);
    expect(valueOf(r, 'sha-a0')).toBe(sha.a0);
    expect(valueOf(r, 'sha-a1')).toBe(sha.a1);
    expect(fs.readFileSync(f('alog')).equals(alogBefore)).toBe(true);
    // The log the kernel formats for nosync is byte for byte the one dmtool made.
    expect(valueOf(r, 'z0-loaded')).toBe(
      `0 ${LEG_SECTORS} mirror 2 ${dev('a0')} ${dev('a1')} ${REGIONS}/${REGIONS} 1 AA 3 disk ${dev('zlog')} A`,
    );
    expect(sha256File(f('zlog'))).toBe(sha256(alogBefore));

    // m1: the kernel starts from dmtool's all-dirty log and copies leg 0 over leg 1.
    expect(valueOf(r, 'm1-loaded')).toMatch(
      new RegExp(`^0 ${LEG_SECTORS} mirror 2 ${dev('b0')} ${dev('b1')} \\d+/${REGIONS} 1 AA 3 disk ${dev('blog')} A$`),
    );
    const synced = `0 ${LEG_SECTORS} mirror 2 ${dev('b0')} ${dev('b1')} ${REGIONS}/${REGIONS} 1 AA 3 disk ${dev('blog')} A`;
    expect(valueOf(r, 'm1-synced')).toBe(synced);
    expect(valueOf(r, 'sha-b0')).toBe(sha.b0);
    expect(valueOf(r, 'sha-b1')).toBe(sha.b0);
    expect(sha256File(f('b1'))).toBe(sha.b0);

    // The log the kernel wrote, byte level and through dmtool.
    const log = readLog(f('blog'));
    expect(log).toEqual({ magic: 0x4d695272, version: 2, regions: REGIONS, clean: Array(REGIONS).fill(true), tailZero: true });
    expect(dmtoolStatusAsKernel(r, ['--log', f('blog'), f('b0'), f('b1')], { blog: f('blog'), b0: f('b0'), b1: f('b1') })).toBe(synced);
    expect(dmtool(['mirror-check', f('b0'), f('b1'), '--region-size', String(REGION)]).status).toBe(0);
    // ... and byte for byte the log dmtool leaves after its own full resync.
    makeImage(f('e0'), LEG_BYTES, 'LEG-B0');
    makeImage(f('e1'), LEG_BYTES, 'LEG-B1');
    zeroFile(f('elog'), MiB);
    ok(['mirror-create', '--log', f('elog'), '--region-size', String(REGION), f('e0'), f('e1')]);
    ok(['mirror-resync', '--log', f('elog'), f('e0'), f('e1')]);
    expect(sha256File(f('elog'))).toBe(sha256File(f('blog')));
  });

  test('a log the kernel left out of sync (resync throttled, writes through the mirror, then suspended) is read and finished by dmtool mirror-resync', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'kernel-log');
    const f = (n: string) => path.join(w, `${n}.img`);
    makeImage(f('c0'), LEG_BYTES, 'LEG-C0');
    makeImage(f('c1'), LEG_BYTES, 'LEG-C1');
    zeroFile(f('clog'), MiB); // no magic: the kernel formats it with every region out of sync
    // Data the kernel writes through the mirror, from a data disk: into regions
    // 100, 101 (one write across their boundary) and 127 (the last sector).
    const writes = [
      { sector: 100 * REGION + 200, sectors: 100, skip: 0 },
      { sector: LEG_SECTORS - 1, sectors: 1, skip: 100 },
    ];
    const data = patternBytes('MIRROR-WRITE', 0, 101);
    fs.writeFileSync(f('data'), data);
    const expectedLeg0 = fs.readFileSync(f('c0'));
    for (const wr of writes) data.copy(expectedLeg0, wr.sector * 512, wr.skip * 512, (wr.skip + wr.sectors) * 512);

    const names = ['clog', 'c0', 'c1', 'data'];
    const r = await runVm(tools, {
      workDir: w,
      disks: names.map((n) => ({ file: f(n), name: n })),
      scenario:
        printDevNumbers(names) +
        `
echo 1 > /sys/module/dm_mirror/parameters/raid1_resync_throttle
dmsetup create m2 --table "0 ${LEG_SECTORS} mirror disk 2 /dev/disk/clog ${REGION} 2 /dev/disk/c0 0 /dev/disk/c1 0"
${writes.map((wr) => `dd if=/dev/disk/data of=/dev/mapper/m2 bs=512 skip=${wr.skip} seek=${wr.sector} count=${wr.sectors} oflag=direct 2>/dev/null`).join('\n')}
sleep 1
dmsetup suspend m2
echo "m2-stopped: $(dmsetup status m2)"
dmsetup remove m2
echo "sha-c0: $(sha256sum /dev/disk/c0 | cut -d' ' -f1)"
`,
    });
    expectGuestOk(r);
    const dev = (n: string) => valueOf(r, `dev-${n}`);
    const stopped = valueOf(r, 'm2-stopped');
    const m = new RegExp(`^0 ${LEG_SECTORS} mirror 2 ${dev('c0')} ${dev('c1')} (\\d+)/${REGIONS} 1 AA 3 disk ${dev('clog')} A$`).exec(
      stopped,
    );
    expect(m).not.toBeNull();
    const inSync = Number(m![1]);
    expect(inSync).toBeLessThan(REGIONS - 2);

    // Writes to out-of-sync regions went to the default leg only.
    expect(valueOf(r, 'sha-c0')).toBe(sha256(expectedLeg0));
    expect(sha256File(f('c0'))).toBe(sha256(expectedLeg0));

    // The kernel's log: clean bits are exactly the regions it had synced, and dmtool reads the same.
    const log = readLog(f('clog'));
    expect([log.magic, log.version, log.regions, log.tailZero]).toEqual([0x4d695272, 2, REGIONS, true]);
    expect(log.clean.filter(Boolean)).toHaveLength(inSync);
    const files = { clog: f('clog'), c0: f('c0'), c1: f('c1') };
    const args = ['--log', f('clog'), f('c0'), f('c1')];
    expect(dmtoolStatusAsKernel(r, args, files)).toBe(stopped);
    // Regions the kernel recorded clean hold identical data on both legs.
    const c0 = fs.readFileSync(f('c0'));
    const c1 = fs.readFileSync(f('c1'));
    const regionBytes = REGION * 512;
    log.clean.forEach((clean, region) => {
      if (clean)
        expect(
          c0
            .subarray(region * regionBytes, (region + 1) * regionBytes)
            .equals(c1.subarray(region * regionBytes, (region + 1) * regionBytes)),
        ).toBe(true);
    });
    expect(log.clean[100] || log.clean[101] || log.clean[127]).toBe(false);
    expect(dmtool(['mirror-check', f('c0'), f('c1'), '--region-size', String(REGION)]).status).toBe(1);

    ok(['mirror-resync', ...args]);
    expect(dmtool(['mirror-check', f('c0'), f('c1'), '--region-size', String(REGION)]).status).toBe(0);
    expect(sha256File(f('c1'))).toBe(sha256(expectedLeg0));
    expect(sha256File(f('c0'))).toBe(sha256(expectedLeg0));
    const after = readLog(f('clog'));
    expect(after.clean.every(Boolean)).toBe(true);
    expect(after.tailZero).toBe(true);
    expect(dmtoolStatusAsKernel(r, args, files)).toBe(
      `0 ${LEG_SECTORS} mirror 2 ${dev('c0')} ${dev('c1')} ${REGIONS}/${REGIONS} 1 AA 3 disk ${dev('clog')} A`,
    );
  });

  test('a resync dmtool began and was killed in (three legs, short last region) is finished by the kernel, which copies exactly the regions the log marks dirty', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'dmtool-began');
    const f = (n: string) => path.join(w, `${n}.img`);
    const legBytes = LEG_BYTES + 64 * 1024; // 129 regions, the last one 128 sectors
    const legSectors = legBytes / 512;
    const regions = Math.ceil(legSectors / REGION);
    makeImage(f('d0'), legBytes, 'LEG-D0');
    makeImage(f('d1'), legBytes, 'LEG-D1');
    makeImage(f('d2'), legBytes, 'LEG-D2');
    zeroFile(f('dlog'), MiB);
    const args = ['--log', f('dlog'), '--region-size', String(REGION), f('d0'), f('d1'), f('d2')];
    ok(['mirror-create', ...args]);
    const killed = dmtool(['mirror-resync', ...args, '--parallel', '1'], {
      env: { DMTOOL_FAULTS: JSON.stringify({ crashAt: { point: 'mirror-resync:recorded', hit: 2 } }) },
    });
    expect(killed.signal).toBe('SIGKILL');
    const words = Math.ceil(regions / 32);
    const bits = readRange(f('dlog'), 1024, words * 4);
    const clean = Array.from({ length: regions }, (_, r) => (bits[r >> 3] & (1 << (r & 7))) !== 0);
    const cleanCount = clean.filter(Boolean).length;
    expect(cleanCount).toBeGreaterThan(0);
    expect(cleanCount).toBeLessThan(regions - 1);
    expect(readRange(f('dlog'), 0, 16).readBigUInt64LE(8)).toBe(BigInt(regions));
    expect(clean[regions - 1]).toBe(false);

    // Change one region dmtool recorded clean on leg 2: the kernel trusts the
    // log and must leave it alone; every dirty region it must copy.
    const tampered = clean.indexOf(true);
    const regionBytes = REGION * 512;
    const fd = fs.openSync(f('d2'), 'r+');
    fs.writeSync(fd, Buffer.alloc(regionBytes, 0x5a), 0, regionBytes, tampered * regionBytes);
    fs.closeSync(fd);
    const expectedD2 = fs.readFileSync(f('d0'));
    Buffer.alloc(regionBytes, 0x5a).copy(expectedD2, tampered * regionBytes);
    const d0Sha = sha256File(f('d0'));

    const names = ['dlog', 'd0', 'd1', 'd2'];
    const r = await runVm(tools, {
      workDir: w,
      disks: names.map((n) => ({ file: f(n), name: n })),
      scenario:
        printDevNumbers(names) +
        WAIT_SYNCED +
        `
dmsetup create m3 --table "0 ${legSectors} mirror disk 2 /dev/disk/dlog ${REGION} 3 /dev/disk/d0 0 /dev/disk/d1 0 /dev/disk/d2 0"
echo "m3-loaded: $(dmsetup status m3)"
wait_synced m3
echo "m3-synced: $(dmsetup status m3)"
dmsetup remove m3
`,
    });
    expectGuestOk(r);
    const dev = (n: string) => valueOf(r, `dev-${n}`);
    const loaded = new RegExp(
      `^0 ${legSectors} mirror 3 ${dev('d0')} ${dev('d1')} ${dev('d2')} (\\d+)/${regions} 1 AAA 3 disk ${dev('dlog')} A$`,
    ).exec(valueOf(r, 'm3-loaded'));
    expect(loaded).not.toBeNull();
    expect(Number(loaded![1])).toBeGreaterThanOrEqual(cleanCount);
    const synced = `0 ${legSectors} mirror 3 ${dev('d0')} ${dev('d1')} ${dev('d2')} ${regions}/${regions} 1 AAA 3 disk ${dev('dlog')} A`;
    expect(valueOf(r, 'm3-synced')).toBe(synced);
    expect(sha256File(f('d0'))).toBe(d0Sha);
    expect(sha256File(f('d1'))).toBe(d0Sha);
    expect(sha256File(f('d2'))).toBe(sha256(expectedD2));
    const files = { dlog: f('dlog'), d0: f('d0'), d1: f('d1'), d2: f('d2') };
    expect(dmtoolStatusAsKernel(r, ['--log', f('dlog'), f('d0'), f('d1'), f('d2')], files)).toBe(synced);
    const check = dmtool(['mirror-check', f('d0'), f('d1'), f('d2'), '--region-size', String(REGION), '--json']);
    expect(check.status).toBe(1);
    const report = JSON.parse(check.stdout);
    expect(report.differingRegions).toEqual([tampered]);
    expect(report.differingLegs).toEqual({ [tampered]: [2] });
  });

  test('the kernel resizes a dmtool log whose region count no longer matches the legs (grown: only the new region is copied; shrunk: nr_regions rewritten); dmtool reads the result', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'resized-log');
    const f = (n: string) => path.join(w, `${n}.img`);
    const regionBytes = REGION * 512;
    // g: a nosync log for 128 regions, legs grown by one region afterwards.
    makeImage(f('g0'), LEG_BYTES, 'LEG-G0');
    makeImage(f('g1'), LEG_BYTES, 'LEG-G1');
    zeroFile(f('glog'), MiB);
    ok(['mirror-create', '--log', f('glog'), '--region-size', String(REGION), '--nosync', f('g0'), f('g1')]);
    for (const [n, seed] of [
      ['g0', 'GROWN-0'],
      ['g1', 'GROWN-1'],
    ]) {
      fs.appendFileSync(f(n), patternBytes(seed, LEG_SECTORS, REGION));
    }
    // s: a nosync log for 129 regions, legs shrunk by one region afterwards.
    makeImage(f('s0'), LEG_BYTES + regionBytes, 'LEG-S0');
    makeImage(f('s1'), LEG_BYTES + regionBytes, 'LEG-S0');
    zeroFile(f('slog'), MiB);
    ok(['mirror-create', '--log', f('slog'), '--region-size', String(REGION), '--nosync', f('s0'), f('s1')]);
    fs.truncateSync(f('s0'), LEG_BYTES);
    fs.truncateSync(f('s1'), LEG_BYTES);
    for (const n of ['glog', 'slog']) {
      const refused = dmtool(['mirror-status', '--log', f(n), '--region-size', String(REGION), f(`${n[0]}0`), f(`${n[0]}1`)]);
      expect(refused.status).toBe(2); // dmtool refuses a log whose region count differs; the kernel adopts it
    }
    const g0 = fs.readFileSync(f('g0'));
    const g1Before = fs.readFileSync(f('g1'));

    const names = ['glog', 'g0', 'g1', 'slog', 's0', 's1'];
    const r = await runVm(tools, {
      workDir: w,
      disks: names.map((n) => ({ file: f(n), name: n })),
      scenario:
        printDevNumbers(names) +
        WAIT_SYNCED +
        `
dmsetup create mg --table "0 ${LEG_SECTORS + REGION} mirror disk 2 /dev/disk/glog ${REGION} 2 /dev/disk/g0 0 /dev/disk/g1 0"
wait_synced mg
echo "mg-synced: $(dmsetup status mg)"
dmsetup remove mg
dmsetup create ms --table "0 ${LEG_SECTORS} mirror disk 2 /dev/disk/slog ${REGION} 2 /dev/disk/s0 0 /dev/disk/s1 0"
echo "ms-loaded: $(dmsetup status ms)"
dmsetup remove ms
`,
    });
    expectGuestOk(r);
    const dev = (n: string) => valueOf(r, `dev-${n}`);
    expect(valueOf(r, 'mg-synced')).toBe(
      `0 ${LEG_SECTORS + REGION} mirror 2 ${dev('g0')} ${dev('g1')} ${REGIONS + 1}/${REGIONS + 1} 1 AA 3 disk ${dev('glog')} A`,
    );
    // Only the new region was copied: the old ones were in sync by the log.
    const expectedG1 = Buffer.from(g1Before);
    g0.copy(expectedG1, LEG_BYTES, LEG_BYTES);
    expect(sha256File(f('g1'))).toBe(sha256(expectedG1));
    const glog = readRange(f('glog'), 0, 1024 + 20);
    expect(Number(glog.readBigUInt64LE(8))).toBe(REGIONS + 1);
    expect([...glog.subarray(1024, 1024 + 20)]).toEqual([...Array(16).fill(0xff), 0x01, 0, 0, 0]);
    expect(ok(['mirror-status', '--log', f('glog'), f('g0'), f('g1')]).split('\n')[0]).toBe(
      `0 ${LEG_SECTORS + REGION} mirror 2 ${f('g0')} ${f('g1')} ${REGIONS + 1}/${REGIONS + 1} 1 AA 3 disk ${f('glog')} A`,
    );

    expect(valueOf(r, 'ms-loaded')).toBe(
      `0 ${LEG_SECTORS} mirror 2 ${dev('s0')} ${dev('s1')} ${REGIONS}/${REGIONS} 1 AA 3 disk ${dev('slog')} A`,
    );
    const slog = readRange(f('slog'), 0, 1024 + 20);
    expect(Number(slog.readBigUInt64LE(8))).toBe(REGIONS);
    // The kernel clears surplus bits only up to its 64-bit-rounded bitmap
    // (128 bits here): region 128's old bit stays on disk, past the bitmap.
    expect([...slog.subarray(1024, 1024 + 20)]).toEqual([...Array(16).fill(0xff), 0x01, 0, 0, 0]);
    expect(ok(['mirror-status', '--log', f('slog'), f('s0'), f('s1')]).split('\n')[0]).toBe(
      `0 ${LEG_SECTORS} mirror 2 ${f('s0')} ${f('s1')} ${REGIONS}/${REGIONS} 1 AA 3 disk ${f('slog')} A`,
    );
  });
});
