/**
 * `dmtool serve` against the real kernel (qemu, TCG): the host serves
 * exports on a unix socket and the guest gets them as virtio disks through
 * qemu's nbd block driver. The guest reads linear, snapshot and mirror
 * exports and writes through snapshot-origin, snapshot, snapshot-merge and
 * mirror exports (the kernel fixtures' write plans among them); the COWs
 * and mirror logs the server leaves, finished or part way, are then loaded
 * by the kernel's own dm-snapshot and dm-mirror in a second guest.
 */
import * as fs from 'fs';
import * as path from 'path';
import { makeImage, patternBytes, sha256, sha256File, sha256Range } from '../support/images';
import { decodeDiskLog } from '@dmtool/dm-mirror';
import { removeDir, tempDir } from '../support/loop';
import { makeBaseOrigin, makeZeroFile, PlannedWrite, unpackFixture, writeData } from '../support/fixtures';
import { waitFor } from '../support/cli';
import { ServeProcess, startServe } from '../nbd/serve-process';
import {
  chunkData,
  describeKernelVm,
  expectGuestOk,
  fillCow,
  ok,
  printDevNumbers,
  snapList,
  snapStatus,
  vmDir,
  vmTools,
  WAIT_MERGED,
  WAIT_SYNCED,
  zeroFile,
} from './helpers';
import { runVm, valueOf, VmDisk, VmResult } from './vm';

jest.setTimeout(300_000);

const MiB = 1 << 20;
const CS = 8; // snapshot chunk: 4 KiB
const ORIGIN_BYTES = 32 * MiB;
const ORIGIN_SECTORS = ORIGIN_BYTES / 512;
const LEG_BYTES = 16 * MiB;
const LEG_SECTORS = LEG_BYTES / 512;
const REGION = 256; // mirror region: 128 KiB, 128 regions
const REGIONS = LEG_SECTORS / REGION;

/** One write the guest makes: `data` at `sector` of the disk named `disk`. */
interface GuestWrite {
  disk: string;
  sector: number;
  data: Buffer;
  /** dd's block size in sectors: each block one O_DIRECT write, complete before the next (default: one write). */
  bsSectors?: number;
}

/**
 * The data disk holding every write's bytes (each at an 8 KiB boundary) and
 * the guest's dd commands that write them, in order, with O_DIRECT: in
 * blocks of `bsSectors`, else in one request (of 4 KiB blocks where the
 * write allows, else of sectors).
 */
function guestWrites(dataFile: string, writes: GuestWrite[]): string {
  const parts: Buffer[] = [];
  const lines: string[] = [];
  let dataSector = 0;
  for (const w of writes) {
    const sectors = w.data.length / 512;
    const blockSectors = w.bsSectors ?? (w.sector % 8 === 0 && sectors % 8 === 0 ? 8 : 1);
    if (w.sector % blockSectors !== 0 || sectors % blockSectors !== 0 || 16 % blockSectors !== 0) {
      throw new Error(`a write of ${sectors} sectors at ${w.sector} cannot be made in blocks of ${blockSectors} sectors`);
    }
    // One dd per write, bs=block size: busybox dd writes block by block, each complete before the next.
    lines.push(
      `dd if=/dev/disk/data of=/dev/disk/${w.disk} bs=${blockSectors * 512} skip=${dataSector / blockSectors} seek=${w.sector / blockSectors} count=${sectors / blockSectors} oflag=direct 2>/dev/null`,
    );
    const padded = Buffer.alloc(Math.ceil(sectors / 16) * 16 * 512);
    w.data.copy(padded);
    parts.push(padded);
    dataSector += padded.length / 512;
  }
  fs.writeFileSync(dataFile, Buffer.concat(parts));
  return lines.join('\n') + '\n';
}

/** `file`'s bytes with the writes to `disk` applied, in order. */
function withWrites(file: string, writes: GuestWrite[], disk: string): Buffer {
  const buf = fs.readFileSync(file);
  for (const w of writes) if (w.disk === disk) w.data.copy(buf, w.sector * 512);
  return buf;
}

/** Shell: `<key>-<disk>: <value>` lines for each disk: its size in sectors, read-only flag and sha256. */
function describeDisks(names: string[]): string {
  return names
    .map(
      (n) => `b=$(basename $(readlink /dev/disk/${n}))
echo "size-${n}: $(cat /sys/block/$b/size)"
echo "ro-${n}: $(cat /sys/block/$b/ro)"
echo "sha-${n}: $(sha256sum /dev/disk/${n} | cut -d' ' -f1)"
`,
    )
    .join('');
}

function nbdDisk(s: ServeProcess, name: string, readOnly = false): VmDisk {
  return { name, nbd: { socketPath: s.socketPath, exportName: name }, readOnly };
}

/** A mirror status line with the image paths replaced by the guest's major:minor numbers. */
function asKernelNames(line: string, r: VmResult, files: Record<string, string>): string {
  for (const [name, file] of Object.entries(files)) line = line.split(file).join(valueOf(r, `dev-${name}`));
  return line;
}

describeKernelVm('dmtool serve against the kernel', () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir('dmtool-kvm-serve-');
  });
  afterAll(() => {
    if (!process.env.KEEP_VM_DIRS) removeDir(dir);
  });

  test('the guest reads served linear, snapshot and mirror exports as the host expects; its write to the linear export lands in the image', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'reads');
    const f = (n: string) => path.join(w, `${n}.img`);
    // linear: 32 MiB from 4 MiB into a 40 MiB image.
    makeImage(f('base'), 40 * MiB, 'BASE-L');
    const linearStart = (4 * MiB) / 512;
    // snapshot: exceptions from origin writes (one run, single chunks, the
    // last chunk) and snapshot writes (whole and partial chunks).
    makeImage(f('origin'), ORIGIN_BYTES, 'ORIGIN-R');
    zeroFile(f('cow'), 4 * MiB);
    const originChunks = [...Array.from({ length: 20 }, (_, i) => 300 + i), 7, 1000, ORIGIN_SECTORS / CS - 1];
    await fillCow(f('origin'), f('cow'), CS, originChunks, [
      { sector: 2000 * CS, data: chunkData('SNAP-R', 2000, CS) },
      { sector: 3000 * CS + 5, data: chunkData('SNAP-R', 3000, CS).subarray(0, 1024) },
    ]);
    ok(['snapshot-read', f('origin'), f('cow'), '-o', f('view')]);
    const cowStatus = snapStatus(f('cow'));
    // mirror: legs that differ, every region out of sync: reads come from leg 0 while the resync runs.
    makeImage(f('leg0'), LEG_BYTES, 'LEG-R0');
    makeImage(f('leg1'), LEG_BYTES, 'LEG-R1');
    zeroFile(f('log'), MiB);
    ok(['mirror-create', '--log', f('log'), '--region-size', String(REGION), f('leg0'), f('leg1')]);
    const expected = {
      lin: sha256Range(f('base'), linearStart * 512, ORIGIN_BYTES),
      snap: sha256File(f('view')),
      m: sha256File(f('leg0')),
    };
    const write: GuestWrite = { disk: 'lin', sector: 100, data: patternBytes('LIN-W', 100, 8) };
    const baseAfter = withWrites(f('base'), [{ ...write, sector: linearStart + write.sector }], 'lin');

    const s = await startServe(
      [
        '--dev',
        'lin',
        `0 ${ORIGIN_SECTORS} linear ${f('base')} ${linearStart}`,
        '--dev',
        'snap',
        `0 ${ORIGIN_SECTORS} snapshot ${f('origin')} ${f('cow')} P ${CS}`,
        '--read-only',
        'snap',
        '--dev',
        'm',
        `0 ${LEG_SECTORS} mirror disk 2 ${f('log')} ${REGION} 2 ${f('leg0')} 0 ${f('leg1')} 0`,
        '--resync-rate',
        '4M',
      ],
      path.join(w, 'nbd.sock'),
    );
    let stopped;
    try {
      const r = await runVm(tools, {
        workDir: w,
        disks: [nbdDisk(s, 'lin'), nbdDisk(s, 'snap', true), nbdDisk(s, 'm'), { file: f('data'), name: 'data' }],
        scenario: describeDisks(['lin', 'snap', 'm']) + guestWrites(f('data'), [write]),
      });
      expectGuestOk(r);
      expect([valueOf(r, 'size-lin'), valueOf(r, 'size-snap'), valueOf(r, 'size-m')]).toEqual(
        [ORIGIN_SECTORS, ORIGIN_SECTORS, LEG_SECTORS].map(String),
      );
      expect([valueOf(r, 'ro-lin'), valueOf(r, 'ro-snap'), valueOf(r, 'ro-m')]).toEqual(['0', '1', '0']);
      expect(valueOf(r, 'sha-lin')).toBe(expected.lin);
      expect(valueOf(r, 'sha-snap')).toBe(expected.snap);
      expect(valueOf(r, 'sha-m')).toBe(expected.m);
    } finally {
      stopped = await s.stop();
    }
    expect(stopped).toEqual({ status: 0, signal: null });
    expect(s.stdout()).toContain(`status snap: 0 ${ORIGIN_SECTORS} snapshot ${cowStatus}\n`);
    expect(sha256File(f('base'))).toBe(sha256(baseAfter));
    expect(snapStatus(f('cow'))).toBe(cowStatus);
  });

  test('writes through a served snapshot-origin and snapshot: the kernel dm-snapshot loads the COW the server left, with its status line and the view the server showed', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'snapshot');
    const f = (n: string) => path.join(w, `${n}.img`);
    makeImage(f('origin'), ORIGIN_BYTES, 'ORIGIN-W');
    zeroFile(f('cow'), 4 * MiB); // no magic: serving it formats it, as the kernel does
    const originBefore = fs.readFileSync(f('origin'));
    // Origin writes: a whole chunk, one sector, a 16-chunk run, a chunk copied
    // already, the last sector. Snapshot writes: a whole chunk, one sector of a
    // chunk the origin did not change (the origin chunk is copied first), and
    // one of a chunk the origin copied.
    const writes: GuestWrite[] = [
      { disk: 'origin', sector: 100 * CS, data: chunkData('SRV-O1', 100, CS) },
      { disk: 'origin', sector: 5 * CS + 3, data: chunkData('SRV-O2', 5, CS).subarray(0, 512) },
      { disk: 'origin', sector: 512 * CS, data: Buffer.concat(Array.from({ length: 16 }, (_, i) => chunkData('SRV-O3', 512 + i, CS))) },
      { disk: 'origin', sector: 100 * CS + 2, data: chunkData('SRV-O4', 100, CS).subarray(0, 1024) },
      { disk: 'origin', sector: ORIGIN_SECTORS - 1, data: chunkData('SRV-O5', ORIGIN_SECTORS / CS - 1, CS).subarray(0, 512) },
      { disk: 'snap', sector: 2 * CS, data: chunkData('SRV-S1', 2, CS) },
      { disk: 'snap', sector: 250 * CS + 1, data: chunkData('SRV-S2', 250, CS).subarray(0, 512) },
      { disk: 'snap', sector: 515 * CS + 7, data: chunkData('SRV-S3', 515, CS).subarray(0, 512) },
    ];
    const touchedChunks = [100, 5, ...Array.from({ length: 16 }, (_, i) => 512 + i), ORIGIN_SECTORS / CS - 1, 2, 250];
    const expectedOrigin = sha256(withWrites(f('origin'), writes, 'origin'));
    const expectedView = sha256(
      writes.filter((x) => x.disk === 'snap').reduce((buf, x) => (x.data.copy(buf, x.sector * 512), buf), Buffer.from(originBefore)),
    );
    // Two metadata chunks (header, first area) and one chunk per exception.
    const expectedStatus = `0 ${ORIGIN_SECTORS} snapshot ${(2 + touchedChunks.length) * CS}/${(4 * MiB) / 512} ${2 * CS}`;

    const s = await startServe(
      [
        '--dev',
        'origin',
        `0 ${ORIGIN_SECTORS} snapshot-origin ${f('origin')}`,
        '--dev',
        'snap',
        `0 ${ORIGIN_SECTORS} snapshot ${f('origin')} ${f('cow')} P ${CS}`,
      ],
      path.join(w, 'nbd.sock'),
    );
    let served: VmResult;
    let stopped;
    try {
      served = await runVm(tools, {
        workDir: vmDir(w, 'served'),
        disks: [nbdDisk(s, 'origin'), nbdDisk(s, 'snap'), { file: f('data'), name: 'data' }],
        scenario: guestWrites(f('data'), writes) + describeDisks(['origin', 'snap']),
      });
      expectGuestOk(served);
    } finally {
      stopped = await s.stop();
    }
    expect(stopped).toEqual({ status: 0, signal: null });
    expect(valueOf(served, 'sha-origin')).toBe(expectedOrigin);
    expect(valueOf(served, 'sha-snap')).toBe(expectedView);
    expect(s.stdout()).toContain(`status snap: ${expectedStatus}\n`);
    expect(sha256File(f('origin'))).toBe(expectedOrigin);
    expect(snapList(f('cow')).map((e) => e.oldChunk)).toEqual(touchedChunks);
    const cowSha = sha256File(f('cow'));

    const loaded = await runVm(tools, {
      workDir: vmDir(w, 'kernel'),
      disks: [
        { file: f('origin'), name: 'origin' },
        { file: f('cow'), name: 'cow' },
      ],
      scenario: `
dmsetup create snap --table "0 ${ORIGIN_SECTORS} snapshot /dev/disk/origin /dev/disk/cow P ${CS}"
echo "status: $(dmsetup status snap)"
echo "view: $(sha256sum /dev/mapper/snap | cut -d' ' -f1)"
dmsetup remove snap
`,
    });
    expectGuestOk(loaded);
    expect(valueOf(loaded, 'status')).toBe(expectedStatus);
    expect(valueOf(loaded, 'view')).toBe(expectedView);
    // The kernel found nothing to change.
    expect(sha256File(f('cow'))).toBe(cowSha);
    expect(sha256File(f('origin'))).toBe(expectedOrigin);
  });

  test('writes through served mirrors while they resync: the kernel dm-mirror loads legs and log as the server left them, in sync (AA) at once, or, stopped mid-resync, copying exactly the regions the log marks dirty', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'mirror');
    const f = (n: string) => path.join(w, `${n}.img`);
    // m: its resync is let finish before serving ends; n: serving ends while it resyncs.
    const mirrors = ['m', 'n'];
    const writes: GuestWrite[] = [];
    const tables: string[] = [];
    for (const m of mirrors) {
      makeImage(f(`${m}0`), LEG_BYTES, `LEG-${m}0`);
      makeImage(f(`${m}1`), LEG_BYTES, `LEG-${m}1`);
      zeroFile(f(`${m}log`), MiB);
      ok(['mirror-create', '--log', f(`${m}log`), '--region-size', String(REGION), f(`${m}0`), f(`${m}1`)]);
      tables.push('--dev', m, `0 ${LEG_SECTORS} mirror disk 2 ${f(`${m}log`)} ${REGION} 2 ${f(`${m}0`)} 0 ${f(`${m}1`)} 0`);
      // The first region, a write across the boundary of regions 10 and 11, 64 KiB in region 50, the last sector.
      writes.push(
        { disk: m, sector: 0, data: patternBytes(`${m}-W1`, 0, 8) },
        { disk: m, sector: 11 * REGION - 4, data: patternBytes(`${m}-W2`, 11 * REGION - 4, 8) },
        { disk: m, sector: 50 * REGION + 64, data: patternBytes(`${m}-W3`, 50 * REGION + 64, 128) },
        { disk: m, sector: LEG_SECTORS - 1, data: patternBytes(`${m}-W4`, LEG_SECTORS - 1, 1) },
      );
    }
    const writtenRegions = new Set([0, 10, 11, 50, REGIONS - 1]);
    const expectedLeg = Object.fromEntries(mirrors.map((m) => [m, withWrites(f(`${m}0`), writes, m)]));
    // Slow enough that the guest's writes meet regions not yet copied (16 MiB take 128 s).
    const s = await startServe([...tables, '--resync-rate', '128k'], path.join(w, 'nbd.sock'));
    const ctl = `${s.socketPath}.ctl`;
    const inSyncCount = (m: string) => Number(/ mirror 2 \S+ \S+ (\d+)\//.exec(ok(['ctl', ctl, 'status', m]))?.[1]);
    let served: VmResult;
    let synced: boolean;
    let stopped;
    try {
      served = await runVm(tools, {
        workDir: vmDir(w, 'served'),
        disks: [...mirrors.map((m) => nbdDisk(s, m)), { file: f('data'), name: 'data' }],
        scenario: guestWrites(f('data'), writes) + describeDisks(mirrors),
      });
      expectGuestOk(served);
      // n all but stops; m finishes.
      ok(['ctl', ctl, 'message', 'n', 'rate', '4k']);
      expect(inSyncCount('m')).toBeLessThan(REGIONS);
      ok(['ctl', ctl, 'message', 'm', 'rate', '0']);
      synced = await waitFor(() => inSyncCount('m') === REGIONS, 60_000);
    } finally {
      stopped = await s.stop();
    }
    expect(synced).toBe(true);
    expect(stopped).toEqual({ status: 0, signal: null });
    const statusOf = (m: string, inSync: number) =>
      `0 ${LEG_SECTORS} mirror 2 ${f(`${m}0`)} ${f(`${m}1`)} ${inSync}/${REGIONS} 1 AA 3 disk ${f(`${m}log`)} A`;
    for (const m of mirrors) expect(valueOf(served, `sha-${m}`)).toBe(sha256(expectedLeg[m]));

    // m: every region in sync, legs equal.
    expect(s.stdout()).toContain(`status m: ${statusOf('m', REGIONS)}\n`);
    expect([sha256File(f('m0')), sha256File(f('m1'))]).toEqual([sha256(expectedLeg.m), sha256(expectedLeg.m)]);
    const mlogSha = sha256File(f('mlog'));

    // n: the status printed is what its log records, part of the regions in sync.
    const nlog = decodeDiskLog(fs.readFileSync(f('nlog')), { path: f('nlog') });
    const nClean = Array.from({ length: REGIONS }, (_, r) => nlog.clean.get(r));
    const nInSync = nClean.filter(Boolean).length;
    expect(nInSync).toBeGreaterThan(0);
    expect(nInSync).toBeLessThan(REGIONS);
    expect(s.stdout()).toContain(`status n: ${statusOf('n', nInSync)}\n`);
    expect(sha256File(f('n0'))).toBe(sha256(expectedLeg.n));
    // Spoil a region the log records in sync on leg 1: the kernel must trust the log and leave it.
    const spoiled = nClean.findIndex((clean, r) => clean && !writtenRegions.has(r));
    expect(spoiled).toBeGreaterThanOrEqual(0);
    const regionBytes = REGION * 512;
    const fd = fs.openSync(f('n1'), 'r+');
    fs.writeSync(fd, Buffer.alloc(regionBytes, 0x5a), 0, regionBytes, spoiled * regionBytes);
    fs.closeSync(fd);
    const expectedN1 = Buffer.from(expectedLeg.n);
    expectedN1.fill(0x5a, spoiled * regionBytes, (spoiled + 1) * regionBytes);

    const names = mirrors.flatMap((m) => [`${m}log`, `${m}0`, `${m}1`]);
    const loaded = await runVm(tools, {
      workDir: vmDir(w, 'kernel'),
      disks: names.map((n) => ({ file: f(n), name: n })),
      scenario:
        printDevNumbers(names) +
        WAIT_SYNCED +
        mirrors
          .map(
            (m) => `
dmsetup create ${m} --table "0 ${LEG_SECTORS} mirror disk 2 /dev/disk/${m}log ${REGION} 2 /dev/disk/${m}0 0 /dev/disk/${m}1 0"
echo "loaded-${m}: $(dmsetup status ${m})"
wait_synced ${m}
echo "synced-${m}: $(dmsetup status ${m})"
echo "view-${m}: $(sha256sum /dev/mapper/${m} | cut -d' ' -f1)"
dmsetup remove ${m}
`,
          )
          .join(''),
    });
    expectGuestOk(loaded);
    const kernelStatus = (m: string, inSync: number) =>
      asKernelNames(statusOf(m, inSync), loaded, { [`${m}log`]: f(`${m}log`), [`${m}0`]: f(`${m}0`), [`${m}1`]: f(`${m}1`) });
    // m: in sync as the server left it; the kernel copies nothing and rewrites the log with the same bytes.
    expect(valueOf(loaded, 'loaded-m')).toBe(kernelStatus('m', REGIONS));
    expect(valueOf(loaded, 'view-m')).toBe(sha256(expectedLeg.m));
    expect(sha256File(f('mlog'))).toBe(mlogSha);
    expect([sha256File(f('m0')), sha256File(f('m1'))]).toEqual([sha256(expectedLeg.m), sha256(expectedLeg.m)]);
    // n: the kernel starts from the regions the log records, and copies the others from leg 0.
    const loadedN = /^0 \d+ mirror 2 \S+ \S+ (\d+)\//.exec(valueOf(loaded, 'loaded-n'));
    expect(Number(loadedN?.[1])).toBeGreaterThanOrEqual(nInSync);
    expect(valueOf(loaded, 'synced-n')).toBe(kernelStatus('n', REGIONS));
    expect(valueOf(loaded, 'view-n')).toBe(sha256(expectedLeg.n));
    expect(sha256File(f('n0'))).toBe(sha256(expectedLeg.n));
    expect(sha256File(f('n1'))).toBe(sha256(expectedN1));
  });

  test("the kernel fixtures' write plans, made by the guest through served snapshot-origin and snapshot exports, give the kernel's origin and COW byte for byte", async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'fixtures');
    const f = (n: string) => path.join(w, `${n}.img`);
    const fixtures = [8, 16].map((cs) => ({ cs, manifest: unpackFixture(`snapshot-cow-chunk${cs}`, w).manifest }));
    const devArgs: string[] = [];
    const writes: GuestWrite[] = [];
    for (const { cs, manifest } of fixtures) {
      // The 64 MiB origins are served, not read whole: only the plan's chunks cross the wire.
      makeBaseOrigin(f(`origin${cs}`), manifest.images['origin.img'].size);
      makeZeroFile(f(`cow${cs}`), manifest.images['cow.img'].size);
      expect(sha256File(f(`origin${cs}`))).toBe(manifest.images['origin.img'].sha256_before);
      const sectors = manifest.images['origin.img'].size / 512;
      devArgs.push('--dev', `origin${cs}`, `0 ${sectors} snapshot-origin ${f(`origin${cs}`)}`);
      devArgs.push('--dev', `snap${cs}`, `0 ${sectors} snapshot ${f(`origin${cs}`)} ${f(`cow${cs}`)} P ${cs}`);
      // As the fixture's guest wrote them: dd with the plan's block size, O_DIRECT, in plan order.
      for (const p of manifest.writes as PlannedWrite[]) {
        writes.push({
          disk: `${p.target}${cs}`,
          sector: p.start_sector,
          data: writeData(p.tag, p.start_sector, p.sectors),
          bsSectors: p.bs_bytes / 512,
        });
      }
    }
    const s = await startServe(devArgs, path.join(w, 'nbd.sock'));
    let stopped;
    try {
      const r = await runVm(tools, {
        workDir: w,
        disks: [...fixtures.flatMap(({ cs }) => [nbdDisk(s, `origin${cs}`), nbdDisk(s, `snap${cs}`)]), { file: f('data'), name: 'data' }],
        scenario: guestWrites(f('data'), writes),
      });
      expectGuestOk(r);
    } finally {
      stopped = await s.stop();
    }
    expect(stopped).toEqual({ status: 0, signal: null });
    for (const { cs, manifest } of fixtures) {
      const [, kernelStatus] = manifest.kernel_reported.status as string[];
      expect(s.stdout()).toContain(`status ${kernelStatus.replace(/^snap:/, `snap${cs}:`)}\n`);
      expect(sha256File(f(`origin${cs}`))).toBe(manifest.images['origin.img'].sha256_after);
      expect(sha256File(f(`cow${cs}`))).toBe(manifest.images['cow.img'].sha256_after);
    }
  });

  test('a served snapshot-merge, read and written by the guest and stopped part way, is finished by the kernel snapshot-merge target: the origin is the view the guest read, with its writes', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'merge');
    const f = (n: string) => path.join(w, `${n}.img`);
    makeImage(f('origin'), ORIGIN_BYTES, 'ORIGIN-M');
    zeroFile(f('cow'), 4 * MiB);
    // 400 chunks three apart: the kernel's batches are one chunk each.
    const chunks = Array.from({ length: 400 }, (_, i) => 1000 + 3 * i);
    await fillCow(f('origin'), f('cow'), CS, chunks, [{ sector: 7000 * CS + 2, data: chunkData('SNAP-M', 7000, CS).subarray(0, 512) }]);
    ok(['snapshot-read', f('origin'), f('cow'), '-o', f('view')]);
    const view = fs.readFileSync(f('view'));
    const table = snapList(f('cow'));
    // A chunk the merge reaches last (the table's first entry: written to its COW chunk) and one without an exception.
    const writes: GuestWrite[] = [
      { disk: 'mrg', sector: table[0].oldChunk * CS, data: chunkData('MRG-W1', table[0].oldChunk, CS) },
      { disk: 'mrg', sector: 2 * CS + 1, data: chunkData('MRG-W2', 2, CS).subarray(0, 512) },
    ];
    for (const x of writes) x.data.copy(view, x.sector * 512);
    const expectedOrigin = sha256(view);
    const cowSectors = (4 * MiB) / 512;

    // 4 chunks a second: the merge is far from done when serving ends.
    const s = await startServe(
      ['--dev', 'mrg', `0 ${ORIGIN_SECTORS} snapshot-merge ${f('origin')} ${f('cow')} P ${CS}`, '--merge-rate', '16k'],
      path.join(w, 'nbd.sock'),
    );
    let served: VmResult;
    let stopped;
    try {
      served = await runVm(tools, {
        workDir: vmDir(w, 'served'),
        disks: [nbdDisk(s, 'mrg'), { file: f('data'), name: 'data' }],
        scenario: describeDisks(['mrg']) + guestWrites(f('data'), writes) + `echo "after: $(sha256sum /dev/disk/mrg | cut -d' ' -f1)"\n`,
      });
      expectGuestOk(served);
    } finally {
      stopped = await s.stop();
    }
    expect(stopped).toEqual({ status: 0, signal: null });
    expect(valueOf(served, 'sha-mrg')).toBe(sha256File(f('view')));
    expect(valueOf(served, 'after')).toBe(expectedOrigin);
    // Stopped part way: a valid COW holding a prefix of the table, and serve's last status line is its status.
    const left = snapList(f('cow'));
    expect(left.length).toBeGreaterThan(0);
    expect(left.length).toBeLessThan(table.length);
    expect(left).toEqual(table.slice(0, left.length));
    expect(s.stdout()).toContain(`status mrg: 0 ${ORIGIN_SECTORS} snapshot-merge ${snapStatus(f('cow'))}\n`);

    const merged = await runVm(tools, {
      workDir: vmDir(w, 'kernel'),
      disks: [
        { file: f('origin'), name: 'origin' },
        { file: f('cow'), name: 'cow' },
      ],
      scenario:
        WAIT_MERGED +
        `
dmsetup create mrg --table "0 ${ORIGIN_SECTORS} snapshot-merge /dev/disk/origin /dev/disk/cow P ${CS}"
wait_merged mrg
echo "final: $(dmsetup status mrg)"
dmsetup remove mrg
echo "origin: $(sha256sum /dev/disk/origin | cut -d' ' -f1)"
`,
    });
    expectGuestOk(merged);
    expect(valueOf(merged, 'final')).toBe(`0 ${ORIGIN_SECTORS} snapshot-merge ${2 * CS}/${cowSectors} ${2 * CS}`);
    expect(valueOf(merged, 'origin')).toBe(expectedOrigin);
    expect(sha256File(f('origin'))).toBe(expectedOrigin);
    expect(snapList(f('cow'))).toEqual([]);
  });
});
