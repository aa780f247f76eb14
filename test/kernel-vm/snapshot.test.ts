/**
 * dm-snapshot interoperability with the real kernel (qemu, TCG): COWs dmtool
 * writes are loaded by the kernel's snapshot / snapshot-merge targets, COWs
 * the kernel writes are read and merged by dmtool, and a merge begun by
 * either side is finished by the other.
 */
import * as fs from 'fs';
import * as path from 'path';
import { makeImage, readRange, sha256File, sha256 } from '../support/images';
import { removeDir, tempDir } from '../support/loop';
import {
  chunkData,
  describeKernelVm,
  dmtool,
  expectGuestOk,
  fillCow,
  ok,
  snapList,
  snapStatus,
  vmDir,
  vmTools,
  WAIT_MERGED,
  zeroFile,
} from './helpers';
import { runVm, valueOf } from './vm';

const MiB = 1 << 20;
const CS = 8; // 4 KiB chunks: 256 exceptions per metadata area
const ORIGIN_BYTES = 32 * MiB;
const ORIGIN_SECTORS = ORIGIN_BYTES / 512;

/** Write `data` over a copy of a file's bytes at `sector` (in memory) and return the copy. */
function patched(file: string, patches: { sector: number; data: Buffer }[]): Buffer {
  const buf = fs.readFileSync(file);
  for (const p of patches) p.data.copy(buf, p.sector * 512);
  return buf;
}

jest.setTimeout(300_000);

describeKernelVm('kernel dm-snapshot against dmtool', () => {
  let dir: string;
  beforeAll(() => {
    dir = tempDir('dmtool-kvm-snap-');
  });
  afterAll(() => {
    if (!process.env.KEEP_VM_DIRS) removeDir(dir);
  });

  test('the kernel loads a COW dmtool wrote: same status line, same snapshot view; dmtool then reads what the kernel added', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'cow-interop');
    const origin = path.join(w, 'origin.img');
    const cow = path.join(w, 'cow.img');
    const dataImg = path.join(w, 'data.img');
    makeImage(origin, ORIGIN_BYTES, 'ORIGIN-A');
    zeroFile(cow, 4 * MiB);
    ok(['snapshot-create', origin, cow, '--chunk-size', String(CS)]);

    // dmtool's writes: whole and partial chunks, a run, and snapshot writes
    // to a chunk with and without an exception.
    const dmWrites: { target: 'origin' | 'snapshot'; sector: number; data: Buffer }[] = [
      { target: 'origin', sector: 800, data: chunkData('DM-O1', 100, CS) },
      { target: 'origin', sector: 41, data: chunkData('DM-O2', 5, CS).subarray(0, 512) },
      { target: 'origin', sector: 4096, data: Buffer.concat(Array.from({ length: 16 }, (_, i) => chunkData('DM-O3', 512 + i, CS))) },
      { target: 'snapshot', sector: 16, data: chunkData('DM-S1', 2, CS) },
      { target: 'snapshot', sector: 803, data: chunkData('DM-S2', 100, CS).subarray(0, 512) },
      { target: 'snapshot', sector: 2001, data: chunkData('DM-S3', 250, CS).subarray(0, 1024) },
    ];
    for (const [i, wr] of dmWrites.entries()) {
      const f = path.join(w, `w${i}.bin`);
      fs.writeFileSync(f, wr.data);
      ok(['snapshot-write', origin, cow, '--target', wr.target, '--offset', String(wr.sector), '-i', f]);
    }
    const dmStatus = snapStatus(cow);
    const view = path.join(w, 'view.img');
    ok(['snapshot-read', origin, cow, '-o', view]);
    const viewSha = sha256File(view);
    const originBefore = fs.readFileSync(origin);
    const listBefore = snapList(cow);
    expect(listBefore.length).toBe(1 + 1 + 16 + 1 + 1); // chunk 100 is shared by DM-O1 and DM-S2

    // The kernel's writes, taken from a data disk: a new origin chunk, an
    // origin chunk that already has an exception, a whole-chunk and a
    // one-sector snapshot write.
    const k = {
      o1: { sector: 1600, data: chunkData('K-O1', 200, CS) },
      o2: { sector: 800, data: chunkData('K-O2', 100, CS).subarray(0, 512) },
      s1: { sector: 3200, data: chunkData('K-S1', 400, CS) },
      s2: { sector: 4100, data: chunkData('K-S2', 512, CS).subarray(0, 512) },
    };
    const data = Buffer.alloc(32 * 512);
    k.o1.data.copy(data, 0);
    k.o2.data.copy(data, 8 * 512);
    k.s1.data.copy(data, 16 * 512);
    k.s2.data.copy(data, 24 * 512);
    fs.writeFileSync(dataImg, data);

    const dd = (dev: string, skip: number, seek: number, count: number) =>
      `dd if=/dev/disk/data of=${dev} bs=512 skip=${skip} seek=${seek} count=${count} oflag=direct 2>/dev/null`;
    const r = await runVm(tools, {
      workDir: w,
      disks: [
        { file: origin, name: 'origin' },
        { file: cow, name: 'cow' },
        { file: dataImg, name: 'data' },
      ],
      scenario: `
O=/dev/disk/origin C=/dev/disk/cow
dmsetup create snap --table "0 ${ORIGIN_SECTORS} snapshot $O $C P ${CS}"
echo "status-loaded: $(dmsetup status snap)"
echo "view-loaded: $(sha256sum /dev/mapper/snap | cut -d' ' -f1)"
dmsetup create orig --table "0 ${ORIGIN_SECTORS} snapshot-origin $O"
${dd('/dev/mapper/orig', 0, k.o1.sector, 8)}
${dd('/dev/mapper/orig', 8, k.o2.sector, 1)}
${dd('/dev/mapper/snap', 16, k.s1.sector, 8)}
${dd('/dev/mapper/snap', 24, k.s2.sector, 1)}
echo "status-written: $(dmsetup status snap)"
echo "view-written: $(sha256sum /dev/mapper/snap | cut -d' ' -f1)"
echo "origin-written: $(sha256sum /dev/mapper/orig | cut -d' ' -f1)"
dmsetup remove orig
dmsetup remove snap
`,
    });
    expectGuestOk(r);

    // What dmtool wrote, the kernel reads the same way.
    expect(valueOf(r, 'status-loaded')).toBe(`0 ${ORIGIN_SECTORS} snapshot ${dmStatus}`);
    expect(valueOf(r, 'view-loaded')).toBe(viewSha);

    // What the kernel wrote, dmtool reads the same way.
    const kernelStatus = valueOf(r, 'status-written');
    expect(kernelStatus).toBe(`0 ${ORIGIN_SECTORS} snapshot ${snapStatus(cow)}`);
    const [alloc, total, meta] = dmStatus.split(/[/ ]/).map(Number);
    expect(kernelStatus).toBe(`0 ${ORIGIN_SECTORS} snapshot ${alloc + 2 * CS}/${total} ${meta}`); // chunks 200 and 400 are new
    const listAfter = snapList(cow);
    const nextNew = Math.max(...listBefore.map((e) => e.newChunk)) + 1;
    expect(listAfter).toEqual([...listBefore, { oldChunk: 200, newChunk: nextNew }, { oldChunk: 400, newChunk: nextNew + 1 }]);

    const expectedView = sha256(patched(view, [k.s1, k.s2]));
    expect(valueOf(r, 'view-written')).toBe(expectedView);
    const viewAfter = path.join(w, 'view-after.img');
    ok(['snapshot-read', origin, cow, '-o', viewAfter]);
    expect(sha256File(viewAfter)).toBe(expectedView);

    const expectedOrigin = Buffer.from(originBefore);
    k.o1.data.copy(expectedOrigin, k.o1.sector * 512);
    k.o2.data.copy(expectedOrigin, k.o2.sector * 512);
    expect(valueOf(r, 'origin-written')).toBe(sha256(expectedOrigin));
    expect(sha256File(origin)).toBe(sha256(expectedOrigin));
  });

  test('a merge dmtool began and was killed in is finished by the kernel snapshot-merge target', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'dmtool-began');
    // A run of 100 consecutive chunks, 400 chunks three apart and 50 in
    // descending order: three metadata areas, batches of 1..100 chunks.
    const chunks = [
      ...Array.from({ length: 100 }, (_, i) => 1000 + i),
      ...Array.from({ length: 400 }, (_, i) => 3000 + 3 * i),
      ...Array.from({ length: 50 }, (_, i) => 6049 - i),
    ];
    const cases = [
      { name: 'b1', faults: { crashAt: { point: 'snapshot-merge:retired', hit: 40 } }, args: ['--kernel-batches'] },
      { name: 'b2', faults: { crashAt: { point: 'snapshot-merge:copied', hit: 6 } }, args: ['--batch-size', '64k'] },
    ];
    const prepared: { name: string; origin: string; cow: string; expectedSha: string; cowSectors: number }[] = [];
    for (const c of cases) {
      const origin = path.join(w, `${c.name}-origin.img`);
      const cow = path.join(w, `${c.name}-cow.img`);
      makeImage(origin, ORIGIN_BYTES, `ORIGIN-${c.name}`);
      zeroFile(cow, 4 * MiB);
      await fillCow(origin, cow, CS, chunks, [
        { sector: 3000 * CS + 3, data: chunkData('SNAPW', 3000, CS).subarray(0, 512) },
        { sector: 7777 * CS, data: chunkData('SNAPW', 7777, CS) },
      ]);
      const total = chunks.length + 1;
      expect(snapList(cow)).toHaveLength(total);
      const expected = path.join(w, `${c.name}-expected.img`);
      ok(['snapshot-read', origin, cow, '-o', expected]);
      const expectedSha = sha256File(expected);
      fs.unlinkSync(expected);

      const killed = dmtool(['snapshot-merge', origin, cow, ...c.args], { env: { DMTOOL_FAULTS: JSON.stringify(c.faults) } });
      expect(killed.signal).toBe('SIGKILL');
      const left = snapList(cow).length;
      expect(left).toBeGreaterThan(0);
      expect(left).toBeLessThan(total);
      prepared.push({ name: c.name, origin, cow, expectedSha, cowSectors: (4 * MiB) / 512 });
    }

    const r = await runVm(tools, {
      workDir: w,
      disks: prepared.flatMap((p) => [
        { file: p.origin, name: `${p.name}-origin` },
        { file: p.cow, name: `${p.name}-cow` },
      ]),
      scenario:
        WAIT_MERGED +
        prepared
          .map(
            (p) => `
dmsetup create ${p.name} --table "0 ${ORIGIN_SECTORS} snapshot-merge /dev/disk/${p.name}-origin /dev/disk/${p.name}-cow P ${CS}"
echo "${p.name}-start: $(dmsetup status ${p.name})"
wait_merged ${p.name}
echo "${p.name}-final: $(dmsetup status ${p.name})"
dmsetup remove ${p.name}
echo "${p.name}-origin: $(sha256sum /dev/disk/${p.name}-origin | cut -d' ' -f1)"
`,
          )
          .join(''),
    });
    expectGuestOk(r);
    for (const p of prepared) {
      expect(valueOf(r, `${p.name}-final`)).toBe(`0 ${ORIGIN_SECTORS} snapshot-merge ${2 * CS}/${p.cowSectors} ${2 * CS}`);
      expect(valueOf(r, `${p.name}-origin`)).toBe(p.expectedSha);
      expect(sha256File(p.origin)).toBe(p.expectedSha);
      expect(snapStatus(p.cow)).toBe(`${2 * CS}/${p.cowSectors} ${2 * CS}`);
      expect(snapList(p.cow)).toEqual([]);
    }
  });

  test('a merge the kernel began and was stopped in (suspend, power cut) is finished by dmtool snapshot-merge', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'kernel-began');
    // 3000 chunks two apart: no two entries form a run, so the kernel merges
    // one chunk per batch (copy + origin flush + FUA table write each).
    const chunks = Array.from({ length: 3000 }, (_, i) => 2 * i + 1);
    const cowBytes = 16 * MiB;
    const names = ['c1', 'c2'];
    const prepared: { name: string; origin: string; cow: string; expectedSha: string; list: { oldChunk: number; newChunk: number }[] }[] =
      [];
    for (const name of names) {
      const origin = path.join(w, `${name}-origin.img`);
      const cow = path.join(w, `${name}-cow.img`);
      makeImage(origin, ORIGIN_BYTES, `ORIGIN-${name}`);
      zeroFile(cow, cowBytes);
      await fillCow(origin, cow, CS, chunks);
      const expected = path.join(w, `${name}-expected.img`);
      ok(['snapshot-read', origin, cow, '-o', expected]);
      const expectedSha = sha256File(expected);
      fs.unlinkSync(expected);
      expect(snapStatus(cow)).toBe(snapStatusFromList(chunks.length, cowBytes / 512));
      prepared.push({ name, origin, cow, expectedSha, list: snapList(cow) });
    }
    const startAlloc = Number(snapStatus(prepared[0].cow).split('/')[0]);
    // Stop once the kernel has merged a few hundred chunks (allocated shrinks as the table does).
    const stopBelow = startAlloc - 300 * CS;

    const r = await runVm(tools, {
      workDir: w,
      disks: prepared.flatMap((p) => [
        { file: p.origin, name: `${p.name}-origin` },
        { file: p.cow, name: `${p.name}-cow` },
      ]),
      scenario: `
wait_progress() {
  dev=$1 i=0
  while :; do
    set -- $(dmsetup status "$dev")
    case "$4" in */*) ;; *) return 1 ;; esac
    [ "\${4%/*}" -lt ${stopBelow} ] && return 0
    i=$((i + 1))
    [ $i -gt 100000 ] && return 1
  done
}
dmsetup create c1 --table "0 ${ORIGIN_SECTORS} snapshot-merge /dev/disk/c1-origin /dev/disk/c1-cow P ${CS}"
echo "c1-start: $(dmsetup status c1)"
wait_progress c1
dmsetup suspend c1
echo "c1-stopped: $(dmsetup status c1)"
dmsetup remove c1
dmsetup create c2 --table "0 ${ORIGIN_SECTORS} snapshot-merge /dev/disk/c2-origin /dev/disk/c2-cow P ${CS}"
echo "c2-start: $(dmsetup status c2)"
wait_progress c2
echo "c2-cut: $(dmsetup status c2)"
power-cut
`,
    });
    expect(r.rc).toBe(0);
    const cowSectors = cowBytes / 512;
    for (const p of prepared) {
      // The merge starts on resume, so the first status may already show progress.
      expect(valueOf(r, `${p.name}-start`)).toMatch(new RegExp(`^0 ${ORIGIN_SECTORS} snapshot-merge \\d+/${cowSectors} \\d+$`));
      // The kernel merged from the tail: what is left is a prefix of the table.
      const left = snapList(p.cow);
      expect(left.length).toBeGreaterThan(0);
      expect(left.length).toBeLessThan(p.list.length - 100);
      expect(left).toEqual(p.list.slice(0, left.length));
      if (p.name === 'c1') {
        // After a suspend, the table on disk is exactly what the kernel reported.
        expect(valueOf(r, 'c1-stopped')).toBe(`0 ${ORIGIN_SECTORS} snapshot-merge ${snapStatus(p.cow)}`);
      }
      // Half merged, the snapshot view is already the final origin.
      const view = path.join(w, `${p.name}-view.img`);
      ok(['snapshot-read', p.origin, p.cow, '-o', view]);
      expect(sha256File(view)).toBe(p.expectedSha);
      fs.unlinkSync(view);
      ok(['snapshot-merge', p.origin, p.cow]);
      expect(sha256File(p.origin)).toBe(p.expectedSha);
      expect(snapStatus(p.cow)).toBe(`${2 * CS}/${cowSectors} ${2 * CS}`);
      expect(snapList(p.cow)).toEqual([]);
      // Every metadata area the table used is zero again.
      const areas = Math.ceil(p.list.length / 256);
      for (let a = 0; a < areas; a++) {
        const areaChunk = 1 + a * 257;
        expect(readRange(p.cow, areaChunk * CS * 512, CS * 512).equals(Buffer.alloc(CS * 512))).toBe(true);
      }
    }
  });
  test('chunk size 32 with a partial last origin chunk: the kernel adds exceptions across an area boundary to a dmtool COW, dmtool reads them, the kernel merges it all', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'cs32');
    const cs = 32; // 16 KiB chunks, 1024 exceptions per area
    const E = 1024;
    const originBytes = 32 * MiB + 1536; // 2049 chunks, the last one 3 sectors long
    const originSectors = originBytes / 512;
    const lastChunk = Math.floor((originSectors - 1) / cs);
    const cowBytes = 20 * MiB;
    const origin = path.join(w, 'origin.img');
    const cow = path.join(w, 'cow.img');
    const dataImg = path.join(w, 'data.img');
    makeImage(origin, originBytes, 'ORIGIN-CS32');
    zeroFile(cow, cowBytes);
    await fillCow(
      origin,
      cow,
      cs,
      Array.from({ length: 1020 }, (_, i) => 2 * i),
    );
    // The partial last chunk: an origin write (copy truncated at the origin
    // end) and a snapshot write into the exception it made.
    const tail = [
      { target: 'origin', sector: originSectors - 1, data: chunkData('TAIL-O', lastChunk, 1) },
      { target: 'snapshot', sector: originSectors - 2, data: chunkData('TAIL-S', lastChunk, 1) },
    ];
    for (const [i, wr] of tail.entries()) {
      fs.writeFileSync(path.join(w, `tail${i}.bin`), wr.data);
      ok(['snapshot-write', origin, cow, '--target', wr.target, '--offset', String(wr.sector), '-i', path.join(w, `tail${i}.bin`)]);
    }
    const listBefore = snapList(cow);
    expect(listBefore).toHaveLength(1021);
    expect(listBefore[1020]).toEqual({ oldChunk: lastChunk, newChunk: 1022 });
    const dmStatus = snapStatus(cow);
    const view = path.join(w, 'view.img');
    ok(['snapshot-read', origin, cow, '-o', view]);
    const viewSha = sha256File(view);

    // The kernel: eight new origin chunks (exceptions 1021..1028, across the
    // end of area 0) and a one-sector snapshot write to a chunk without one.
    const kOrigin = Array.from({ length: 8 }, (_, i) => 2 * i + 1);
    const kSnap = { sector: 2001 * cs + 7, data: chunkData('K-S', 2001, 1) };
    const data = Buffer.concat([...kOrigin.map((c) => chunkData('K-O', c, cs)), kSnap.data]);
    fs.writeFileSync(dataImg, data);
    const disks = [
      { file: origin, name: 'origin' },
      { file: cow, name: 'cow' },
      { file: dataImg, name: 'data' },
    ];
    const replayOrigin = path.join(w, 'replay-origin.img');
    const replayCow = path.join(w, 'replay-cow.img');
    fs.copyFileSync(origin, replayOrigin);
    fs.copyFileSync(cow, replayCow);
    const r1 = await runVm(tools, {
      workDir: w,
      disks,
      scenario: `
O=/dev/disk/origin C=/dev/disk/cow
dmsetup create snap --table "0 ${originSectors} snapshot $O $C P ${cs}"
echo "status-loaded: $(dmsetup status snap)"
echo "view-loaded: $(sha256sum /dev/mapper/snap | cut -d' ' -f1)"
dmsetup create orig --table "0 ${originSectors} snapshot-origin $O"
${kOrigin.map((c, i) => `dd if=/dev/disk/data of=/dev/mapper/orig bs=512 skip=${i * cs} seek=${c * cs} count=${cs} oflag=direct 2>/dev/null`).join('\n')}
dd if=/dev/disk/data of=/dev/mapper/snap bs=512 skip=${kOrigin.length * cs} seek=${kSnap.sector} count=1 oflag=direct 2>/dev/null
echo "status-written: $(dmsetup status snap)"
echo "view-written: $(sha256sum /dev/mapper/snap | cut -d' ' -f1)"
dmsetup remove orig
dmsetup remove snap
`,
    });
    expectGuestOk(r1);
    expect(valueOf(r1, 'status-loaded')).toBe(`0 ${originSectors} snapshot ${dmStatus}`);
    expect(valueOf(r1, 'view-loaded')).toBe(viewSha);
    const expectedView = sha256(patched(view, [kSnap]));
    expect(valueOf(r1, 'view-written')).toBe(expectedView);
    expect(valueOf(r1, 'status-written')).toBe(`0 ${originSectors} snapshot ${snapStatus(cow)}`);
    const newChunkOf = (j: number) => 2 + Math.floor(j / E) * (E + 1) + (j % E);
    const added = [...kOrigin, 2001].map((c, i) => ({ oldChunk: c, newChunk: newChunkOf(1021 + i) }));
    expect(snapList(cow)).toEqual([...listBefore, ...added]);
    // 1030 exceptions: area 1 is current; next free chunk follows the last one.
    expect(snapStatus(cow)).toBe(`${(newChunkOf(1029) + 1) * cs}/${cowBytes / 512} ${3 * cs}`);
    const viewAfter = path.join(w, 'view-after.img');
    ok(['snapshot-read', origin, cow, '-o', viewAfter]);
    expect(sha256File(viewAfter)).toBe(expectedView);
    fs.unlinkSync(viewAfter);
    // dmtool replaying the kernel's writes on a copy writes the same bytes.
    for (const [i, c] of kOrigin.entries()) {
      fs.writeFileSync(path.join(w, 'k.bin'), data.subarray(i * cs * 512, (i + 1) * cs * 512));
      ok(['snapshot-write', replayOrigin, replayCow, '--target', 'origin', '--offset', String(c * cs), '-i', path.join(w, 'k.bin')]);
    }
    fs.writeFileSync(path.join(w, 'k.bin'), kSnap.data);
    ok(['snapshot-write', replayOrigin, replayCow, '--target', 'snapshot', '--offset', String(kSnap.sector), '-i', path.join(w, 'k.bin')]);
    expect(sha256File(replayCow)).toBe(sha256File(cow));
    expect(sha256File(replayOrigin)).toBe(sha256File(origin));
    fs.unlinkSync(replayCow);
    fs.unlinkSync(replayOrigin);

    // The kernel merges the whole table back (runs of one chunk, two areas).
    const r2 = await runVm(tools, {
      workDir: w,
      disks: disks.slice(0, 2),
      scenario:
        WAIT_MERGED +
        `
dmsetup create merge --table "0 ${originSectors} snapshot-merge /dev/disk/origin /dev/disk/cow P ${cs}"
wait_merged merge
echo "final: $(dmsetup status merge)"
dmsetup remove merge
`,
    });
    expectGuestOk(r2);
    expect(valueOf(r2, 'final')).toBe(`0 ${originSectors} snapshot-merge ${2 * cs}/${cowBytes / 512} ${2 * cs}`);
    expect(sha256File(origin)).toBe(expectedView);
    expect(snapStatus(cow)).toBe(`${2 * cs}/${cowBytes / 512} ${2 * cs}`);
    expect(snapList(cow)).toEqual([]);
  });
  test('overflow: a COW dmtool invalidated is Invalid to the kernel (snapshot and snapshot-merge), one the kernel invalidated is Invalid to dmtool, with the same header bytes', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'overflow');
    const f = (n: string) => path.join(w, `${n}.img`);
    const originSectors = (4 * MiB) / 512;
    // A 24 KiB COW: header, area 0 and room for four data chunks.
    for (const n of ['d', 'k']) {
      makeImage(f(`${n}-origin`), 4 * MiB, `ORIGIN-OVF-${n}`);
      zeroFile(f(`${n}-cow`), 24 * 1024);
      ok(['snapshot-create', f(`${n}-origin`), f(`${n}-cow`), '--chunk-size', String(CS)]);
    }
    // dmtool: five chunks written to the origin: the fifth cannot be saved.
    const five = Buffer.concat(Array.from({ length: 5 }, (_, c) => chunkData('OVF', c, CS)));
    fs.writeFileSync(path.join(w, 'five.bin'), five);
    const r0 = dmtool([
      'snapshot-write',
      f('d-origin'),
      f('d-cow'),
      '--target',
      'origin',
      '--offset',
      '0',
      '-i',
      path.join(w, 'five.bin'),
      '--allow-invalidate',
    ]);
    expect(r0.status).toBe(1);
    expect(snapStatus(f('d-cow'))).toBe('Invalid');
    const dOriginSha = sha256File(f('d-origin'));
    const kOriginBefore = fs.readFileSync(f('k-origin'));
    fs.writeFileSync(f('data'), five);

    const disks = ['d-origin', 'd-cow', 'k-origin', 'k-cow', 'data'].map((n) => ({ file: f(n), name: n }));
    const r = await runVm(tools, {
      workDir: w,
      disks,
      scenario: `
dmsetup create ds --table "0 ${originSectors} snapshot /dev/disk/d-origin /dev/disk/d-cow P ${CS}"
echo "d-snapshot: $(dmsetup status ds)"
dmsetup remove ds
dmsetup create dm --table "0 ${originSectors} snapshot-merge /dev/disk/d-origin /dev/disk/d-cow P ${CS}"
echo "d-merge: $(dmsetup status dm)"
dmsetup remove dm
dmsetup create ks --table "0 ${originSectors} snapshot /dev/disk/k-origin /dev/disk/k-cow P ${CS}"
dmsetup create ko --table "0 ${originSectors} snapshot-origin /dev/disk/k-origin"
dd if=/dev/disk/data of=/dev/mapper/ko bs=4096 count=5 oflag=direct 2>/dev/null
echo "k-snapshot: $(dmsetup status ks)"
dmsetup remove ko
dmsetup remove ks
`,
    });
    expectGuestOk(r);
    expect(valueOf(r, 'd-snapshot')).toBe(`0 ${originSectors} snapshot Invalid`);
    expect(valueOf(r, 'd-merge')).toBe(`0 ${originSectors} snapshot-merge Invalid`);
    expect(sha256File(f('d-origin'))).toBe(dOriginSha); // an invalid snapshot is never merged
    expect(valueOf(r, 'k-snapshot')).toBe(`0 ${originSectors} snapshot Invalid`);
    expect(snapStatus(f('k-cow'))).toBe('Invalid');
    five.copy(kOriginBefore, 0);
    expect(sha256File(f('k-origin'))).toBe(sha256(kOriginBefore));
    // Both invalidated headers: magic, valid = 0, version 1, chunk size, zeros.
    const header = Buffer.alloc(CS * 512);
    header.writeUInt32LE(0x70416e53, 0);
    header.writeUInt32LE(1, 8);
    header.writeUInt32LE(CS, 12);
    expect(readRange(f('k-cow'), 0, CS * 512).equals(header)).toBe(true);
    expect(readRange(f('d-cow'), 0, CS * 512).equals(header)).toBe(true);
    // dmtool refuses to merge it, as the kernel does, and leaves the origin alone.
    expect(dmtool(['snapshot-merge', f('k-origin'), f('k-cow')]).status).toBe(2);
    expect(sha256File(f('k-origin'))).toBe(sha256(kOriginBefore));
  });

  test('exactly one full metadata area (256 exceptions): the kernel reads it as dmtool does, its 257th exception lands where dmtool puts it, byte for byte', async () => {
    const tools = vmTools();
    const w = vmDir(dir, 'full-area');
    const origin = path.join(w, 'origin.img');
    const cow = path.join(w, 'cow.img');
    const cowSectors = (4 * MiB) / 512;
    makeImage(origin, ORIGIN_BYTES, 'ORIGIN-FULL');
    zeroFile(cow, 4 * MiB);
    await fillCow(
      origin,
      cow,
      CS,
      Array.from({ length: 256 }, (_, i) => 4 * i),
    );
    expect(snapStatus(cow)).toBe(`2072/${cowSectors} 24`); // area 0 full, area 1 (chunk 258) zeroed
    const view = path.join(w, 'view.img');
    ok(['snapshot-read', origin, cow, '-o', view]);
    const viewSha = sha256File(view);
    fs.unlinkSync(view);
    const replayOrigin = path.join(w, 'replay-origin.img');
    const replayCow = path.join(w, 'replay-cow.img');
    fs.copyFileSync(origin, replayOrigin);
    fs.copyFileSync(cow, replayCow);
    const k = chunkData('K-257', 1001, CS);
    fs.writeFileSync(path.join(w, 'data.img'), k);

    const r = await runVm(tools, {
      workDir: w,
      disks: [
        { file: origin, name: 'origin' },
        { file: cow, name: 'cow' },
        { file: path.join(w, 'data.img'), name: 'data' },
      ],
      scenario: `
dmsetup create snap --table "0 ${ORIGIN_SECTORS} snapshot /dev/disk/origin /dev/disk/cow P ${CS}"
dmsetup create orig --table "0 ${ORIGIN_SECTORS} snapshot-origin /dev/disk/origin"
echo "loaded: $(dmsetup status snap)"
echo "view: $(sha256sum /dev/mapper/snap | cut -d' ' -f1)"
dd if=/dev/disk/data of=/dev/mapper/orig bs=512 seek=${1001 * CS} count=${CS} oflag=direct 2>/dev/null
echo "written: $(dmsetup status snap)"
dmsetup remove orig
dmsetup remove snap
`,
    });
    expectGuestOk(r);
    expect(valueOf(r, 'loaded')).toBe(`0 ${ORIGIN_SECTORS} snapshot 2072/${cowSectors} 24`);
    expect(valueOf(r, 'view')).toBe(viewSha);
    expect(valueOf(r, 'written')).toBe(`0 ${ORIGIN_SECTORS} snapshot 2080/${cowSectors} 24`);
    expect(snapStatus(cow)).toBe(`2080/${cowSectors} 24`);
    expect(snapList(cow)[256]).toEqual({ oldChunk: 1001, newChunk: 259 });
    fs.writeFileSync(path.join(w, 'k.bin'), k);
    ok(['snapshot-write', replayOrigin, replayCow, '--target', 'origin', '--offset', String(1001 * CS), '-i', path.join(w, 'k.bin')]);
    expect(sha256File(replayCow)).toBe(sha256File(cow));
    expect(sha256File(replayOrigin)).toBe(sha256File(origin));
  });
});

/** The kernel's status for a healthy COW holding n exceptions allocated in order (cs = 8). */
function snapStatusFromList(n: number, cowSectors: number): string {
  const E = 256;
  const nextFree = n === 0 ? 2 : 2 + Math.floor((n - 1) / E) * (E + 1) + ((n - 1) % E) + 1;
  // allocation skips a metadata chunk right after a full area
  const nf = nextFree % (E + 1) === 1 ? nextFree + 1 : nextFree;
  const currentArea = Math.floor(n / E);
  return `${nf * CS}/${cowSectors} ${(currentArea + 2) * CS}`;
}
