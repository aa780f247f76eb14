/**
 * LVM volumes made by the real lvm2 on the real kernel (qemu, TCG): the guest
 * creates PVs, a VG, linear, striped, snapshot and mirror LVs, writes known
 * data, records what lvm2 and the kernel show, and leaves a snapshot merge
 * deferred to the next activation. dmtool must read every image the same way
 * and merge to the bytes the kernel's merge gives.
 */
import * as fs from 'fs';
import * as path from 'path';
import { makeImage, sha256File } from '../support/images';
import { attachLoop, LoopDevice, removeDir, tempDir } from '../support/loop';
import { Lvm2 } from '../support/lvm2';
import { describeKernelVmLvm, dmtool, ok, vmDir, vmTools, zeroFile } from './helpers';
import { requireLvm, runVm, valueOf, VmResult } from './vm';

jest.setTimeout(600_000);

const MiB = 1 << 20;
const PV_NAMES = ['pv1', 'pv2', 'pv3'];

function expectGuestOk(r: VmResult): void {
  if (r.rc !== 0) throw new Error(`guest scenario failed (rc ${r.rc}, timed out ${r.timedOut}):\n${r.console.slice(-6000)}`);
}

/** Shell: P1..P3 are the PVs' device nodes (lvm2 scans /dev/vd*, not the /dev/disk links). */
const PV_NODES = PV_NAMES.map((n, i) => `P${i + 1}=$(readlink -f /dev/disk/${n})\n`).join('');

/** Shell: print every visible LV's sha256 as `sha-<lv>: <hex>`. */
const PRINT_SHAS = `for lv in /dev/vg0/*; do echo "sha-\${lv##*/}: $(sha256sum "$lv" | cut -d' ' -f1)"; done\n`;

/** Shell: print `lvm lvs -a --reportformat json` on one line after `key: `. */
const lvsJson = (key: string) => `echo "${key}: $(lvm lvs -a --reportformat json vg0 | tr -d '\\n')"\n`;

const BIG_CHUNKS = 1500;

/** The guest builds vg0 and leaves snap2's merge deferred (its origin was open when lvconvert --merge ran). */
const MAKE_SCENARIO = `export LVM_SUPPRESS_FD_WARNINGS=1
${PV_NODES}
lvm pvcreate -q $P1 $P2 $P3
lvm vgcreate -q -s 1m vg0 $P1 $P2 $P3
lvm lvcreate -q -Zn -L 8m -n lin vg0 $P1
lvm lvcreate -q -Zn -i2 -I64k -L 8m -n str vg0 $P1 $P2
dd if=/dev/disk/pat of=/dev/vg0/lin bs=64k count=128 2>/dev/null
dd if=/dev/disk/pat of=/dev/vg0/str bs=64k skip=128 count=128 2>/dev/null
lvm lvcreate -q -s -c 4k -L 2m -n snap vg0/lin
dd if=/dev/disk/pat of=/dev/vg0/lin bs=4k skip=600 seek=3 count=5 2>/dev/null
dd if=/dev/disk/pat of=/dev/vg0/snap bs=4k skip=700 seek=1000 count=3 2>/dev/null
lvm lvcreate -q -Zn --type mirror -m1 --mirrorlog disk --regionsize 512k -L 4m -n mir vg0 $P2 $P3 $P1
i=0
while [ "$(lvm lvs --noheadings -o copy_percent vg0/mir | tr -d ' ')" != "100.00" ] && [ $i -lt 600 ]; do sleep 0.2; i=$((i + 1)); done
dd if=/dev/disk/pat of=/dev/vg0/mir bs=64k skip=300 count=64 2>/dev/null
lvm lvcreate -q -s -c 8k -L 2m -n snap2 vg0/str
dd if=/dev/disk/pat of=/dev/vg0/str bs=4k skip=800 seek=10 count=20 2>/dev/null
dd if=/dev/disk/pat of=/dev/vg0/snap2 bs=4k skip=900 seek=200 count=7 2>/dev/null
lvm lvcreate -q -Zn -L 16m -n big vg0
dd if=/dev/disk/pat of=/dev/vg0/big bs=64k count=256 2>/dev/null
lvm lvcreate -q -s -c 4k -L 12m -n snap3 vg0/big
# ${BIG_CHUNKS} origin chunks two apart: no two exceptions form a run, so the kernel merges them one per batch.
i=0
while [ $i -lt ${BIG_CHUNKS} ]; do
  dd if=/dev/disk/pat of=/dev/vg0/big bs=4k skip=$((1024 + i % 1024)) seek=$((2 * i + 1)) count=1 2>/dev/null
  i=$((i + 1))
done
sync
${PRINT_SHAS}
echo "status-snap: $(dmsetup status vg0-snap)"
echo "status-snap2: $(dmsetup status vg0-snap2)"
${lvsJson('lvs-active')}
lvm lvs -a vg0 | sed 's/^/lvs-text: /'
exec 3</dev/vg0/str
lvm lvconvert --merge vg0/snap2 2>&1 | sed 's/^/merge: /'
exec 3<&-
lvm vgchange -q -an vg0
${lvsJson('lvs-inactive')}
lvm lvs -a --noheadings -o lv_name,lv_attr vg0 | sed 's/^/attr: /'
`;

/** The guest activates vg0 without polling, waits for the kernel's merge of snap2 into str, then lets lvm2 finish it (lvpoll, as lvmpolld would). */
const MERGE_SCENARIO = `export LVM_SUPPRESS_FD_WARNINGS=1
wait_merged() {
  dev=$1 i=0
  while :; do
    set -- $(dmsetup status "$dev")
    [ "$3" = snapshot-merge ] || return 1
    case "$4" in */*) ;; *) return 1 ;; esac
    [ "\${4%/*}" = "$5" ] && return 0
    i=$((i + 1))
    [ $i -gt 1200 ] && return 1
    sleep 0.1
  done
}
lvm vgchange -q -ay --poll n vg0
echo "table-str: $(dmsetup table vg0-str)"
wait_merged vg0-str
echo "merged-str: $(sha256sum /dev/vg0/str | cut -d' ' -f1)"
lvm lvpoll --polloperation merge -i 1 vg0/str 2>&1 | sed 's/^/poll: /'
${PRINT_SHAS}
lvm vgchange -q -an vg0
${lvsJson('lvs-after')}
`;

/**
 * The guest starts the merge of snap3 (`lvconvert --merge --background`: the
 * kernel merges, lvm2 would poll), lets the kernel merge a few hundred
 * chunks, then cuts the power.
 */
const CUT_SCENARIO = `export LVM_SUPPRESS_FD_WARNINGS=1
lvm vgchange -q -ay --poll n vg0
echo "start-snap3: $(dmsetup status vg0-snap3)"
set -- $(dmsetup status vg0-snap3)
stop_below=$((\${4%/*} - 300 * 8))
lvm lvconvert -q --merge --background vg0/snap3
i=0
while :; do
  set -- $(dmsetup status vg0-big)
  [ "$3" = snapshot-merge ] && [ "\${4%/*}" -lt $stop_below ] && break
  i=$((i + 1))
  [ $i -gt 3000 ] && exit 1
done
echo "cut-big: $(dmsetup status vg0-big)"
power-cut
`;

type LvsRow = Record<string, string>;

function lvsRows(r: VmResult, key: string): LvsRow[] {
  return (JSON.parse(valueOf(r, key)) as { report: { lv: LvsRow[] }[] }).report[0].lv;
}

const bare = (name: string) => name.replace(/^\[(.*)\]$/, '$1');

describeKernelVmLvm('LVM volumes made by lvm2 on the kernel, read by dmtool', () => {
  let dir: string;
  let made: VmResult;
  const f = (n: string) => path.join(dir, 'made', `${n}.img`);
  const pvFiles = () => PV_NAMES.map(f);
  const operand = (files: string[], lv: string) => `${files.join(',')}:vg0/${lv}`;

  beforeAll(async () => {
    dir = tempDir('dmtool-kvm-lvm-');
    const tools = vmTools();
    requireLvm(tools);
    const w = vmDir(dir, 'made');
    for (const n of PV_NAMES) zeroFile(f(n), 32 * MiB);
    makeImage(f('pat'), 8 * MiB, 'LVM-PATTERN');
    made = await runVm(tools, {
      workDir: w,
      withLvm: true,
      timeoutMs: 500_000,
      disks: [...PV_NAMES, 'pat'].map((n) => ({ file: f(n), name: n })),
      scenario: MAKE_SCENARIO,
    });
    expectGuestOk(made);
  });
  afterAll(() => {
    if (!process.env.KEEP_VM_DIRS) removeDir(dir);
  });

  /** Sparse copies of the PV images in a folder of their own. */
  function copyPvs(name: string): string[] {
    const d = vmDir(dir, name);
    return PV_NAMES.map((n) => {
      const to = path.join(d, `${n}.img`);
      fs.copyFileSync(f(n), to);
      return to;
    });
  }

  test('lvm2 in the guest deferred the merge of snap2, its origin being open', () => {
    expect(made.lines.filter((l) => l.startsWith('merge: '))).toEqual([
      'merge:   Delaying merge since origin is open.',
      'merge:   Merging of snapshot vg0/snap2 will occur on next activation of vg0/str.',
      'merge:   WARNING: This metadata update is NOT backed up.',
    ]);
  });

  test('dmtool lvm-ls gives the rows of the guest lvs -a: state and open as X, Data% of snapshots from their COW', () => {
    const active = new Map(lvsRows(made, 'lvs-active').map((row) => [bare(row.lv_name), row]));
    const expected = lvsRows(made, 'lvs-inactive').map((row): LvsRow => ({
      ...row,
      lv_attr: `${row.lv_attr.slice(0, 4)}XX${row.lv_attr.slice(6)}`,
      data_percent: active.get(bare(row.lv_name))!.data_percent,
    }));
    expect(expected.map((row) => row.lv_name)).toEqual([
      'big',
      'lin',
      'mir',
      '[mir_mimage_0]',
      '[mir_mimage_1]',
      '[mir_mlog]',
      'snap',
      '[snap2]',
      'snap3',
      'str',
    ]);
    expect(JSON.parse(ok(['lvm-ls', '--json', ...pvFiles()]))).toEqual({ report: [{ lv: expected }] });
  });

  test('every LV read through dmtool has the sha256 the guest read from the kernel: linear, striped, snapshot view, mirror', () => {
    for (const lv of ['lin', 'str', 'snap', 'mir', 'big', 'snap3']) {
      const out = path.join(dir, `${lv}.out`);
      ok(['copy', operand(pvFiles(), lv), out]);
      expect([lv, sha256File(out)]).toEqual([lv, valueOf(made, `sha-${lv}`)]);
    }
  });

  test("snapshot-status of the snapshot is the kernel's dmsetup status", () => {
    const kernel = valueOf(made, 'status-snap');
    expect(kernel).toMatch(/^0 16384 snapshot \d+\/4096 \d+$/);
    expect(`0 16384 snapshot ${ok(['snapshot-status', operand(pvFiles(), 'snap')]).trim()}`).toBe(kernel);
  });

  test("snapshot-merge --update-metadata of the deferred merge gives the origin the kernel's merge gave, and lvm2 accepts the metadata", async () => {
    const kernelPvs = copyPvs('kernel-merge');
    const merged = await runVm(vmTools(), {
      workDir: path.dirname(kernelPvs[0]),
      withLvm: true,
      timeoutMs: 500_000,
      disks: kernelPvs.map((file, i) => ({ file, name: PV_NAMES[i] })),
      scenario: MERGE_SCENARIO,
    });
    expectGuestOk(merged);
    expect(valueOf(merged, 'table-str')).toMatch(/^0 16384 snapshot-merge /);
    const kernelSha = valueOf(merged, 'merged-str');
    // The merged origin reads as the snapshot did before the merge, which differed from the origin.
    expect(kernelSha).toBe(valueOf(made, 'sha-snap2'));
    expect(kernelSha).not.toBe(valueOf(made, 'sha-str'));
    expect(valueOf(merged, 'sha-str')).toBe(kernelSha);

    const ours = copyPvs('dmtool-merge');
    const lockDir = vmDir(dir, 'lock');
    ok(['snapshot-merge', operand(ours, 'snap2'), '--update-metadata', '--lock-dir', lockDir]);
    const out = path.join(dir, 'str-merged.out');
    ok(['copy', operand(ours, 'str'), out]);
    expect(sha256File(out)).toBe(kernelSha);
    for (const lv of ['lin', 'snap', 'mir', 'big', 'snap3']) {
      const lvOut = path.join(dir, `${lv}-after-merge.out`);
      ok(['copy', operand(ours, lv), lvOut]);
      expect([lv, sha256File(lvOut)]).toEqual([lv, valueOf(made, `sha-${lv}`)]);
    }

    const loops: LoopDevice[] = [];
    try {
      for (const file of ours) loops.push(attachLoop(file));
      const lvm = new Lvm2(
        vmDir(dir, 'host-lvm2'),
        loops.map((l) => l.path),
      );
      lvm.run('vgck', 'vg0');
      const names = (rows: LvsRow[]) => rows.map((row) => [row.lv_name, row.lv_attr.slice(0, 4), row.origin]);
      // lvm2 on the host sees what lvm2 in the guest left after the kernel's merge.
      expect(names(lvm.lvsJson('vg0'))).toEqual(names(lvsRows(merged, 'lvs-after')));
      expect(lvm.lvsJson('vg0').map((row) => row.lv_name)).toEqual([
        'big',
        'lin',
        'mir',
        '[mir_mimage_0]',
        '[mir_mimage_1]',
        '[mir_mlog]',
        'snap',
        'snap3',
        'str',
      ]);
    } finally {
      for (const l of loops) l.detach();
    }
  });

  test('a merge the kernel began through lvconvert --merge and lost power in is finished by dmtool snapshot-merge --update-metadata', async () => {
    const pvs = copyPvs('kernel-cut');
    const cut = await runVm(vmTools(), {
      workDir: path.dirname(pvs[0]),
      withLvm: true,
      timeoutMs: 120_000,
      disks: pvs.map((file, i) => ({ file, name: PV_NAMES[i] })),
      scenario: CUT_SCENARIO,
    });
    expect([cut.rc, cut.timedOut]).toEqual([0, false]);
    const start = /^0 32768 snapshot (\d+)\/24576 (\d+)$/.exec(valueOf(cut, 'start-snap3'))!;
    expect(start).not.toBeNull();
    const stopped = /^0 32768 snapshot-merge (\d+)\/24576 (\d+)$/.exec(valueOf(cut, 'cut-big'))!;
    expect(stopped).not.toBeNull();
    // Half merged on disk: fewer exceptions than at the start, but not none.
    const left = ok(['snapshot-status', operand(pvs, 'snap3')]).trim();
    const [allocated, metadata] = /^(\d+)\/24576 (\d+)$/.exec(left)!.slice(1).map(Number);
    expect(allocated).toBeLessThan(Number(start[1]) - 300 * 8);
    expect(allocated).toBeGreaterThan(metadata);

    ok(['snapshot-merge', operand(pvs, 'snap3'), '--update-metadata', '--lock-dir', vmDir(dir, 'lock-cut')]);
    const out = path.join(dir, 'big-merged.out');
    ok(['copy', operand(pvs, 'big'), out]);
    expect(sha256File(out)).toBe(valueOf(made, 'sha-snap3'));
    expect(valueOf(made, 'sha-snap3')).not.toBe(valueOf(made, 'sha-big'));
    const loops: LoopDevice[] = [];
    try {
      for (const file of pvs) loops.push(attachLoop(file));
      const lvm = new Lvm2(
        vmDir(dir, 'host-lvm2-cut'),
        loops.map((l) => l.path),
      );
      lvm.run('vgck', 'vg0');
      expect(lvm.lvsJson('vg0').map((row) => [row.lv_name, row.lv_attr.slice(0, 4)])).toContainEqual(['big', '-wi-']);
      expect(lvm.lvsJson('vg0').map((row) => row.lv_name)).not.toContain('snap3');
    } finally {
      for (const l of loops) l.detach();
    }
  });

  test('a flipped byte in the newest metadata text of a kernel-made PV: one clear line, exit 2, nothing written', () => {
    const bad = copyPvs('bad-crc');
    const text = fs.readFileSync(bad[0]).subarray(0, MiB).toString('latin1');
    let newest = -1;
    let newestSeqno = -1;
    for (const m of text.matchAll(/seqno = (\d+)/g)) {
      if (Number(m[1]) > newestSeqno) [newest, newestSeqno] = [m.index!, Number(m[1])];
    }
    const fd = fs.openSync(bad[0], 'r+');
    fs.writeSync(fd, Buffer.from('X'), 0, 1, newest + 2);
    fs.closeSync(fd);
    const before = bad.map(sha256File);
    for (const args of [
      ['lvm-ls', ...bad],
      ['copy', operand(bad, 'lin'), path.join(dir, 'never.out')],
      ['snapshot-merge', operand(bad, 'snap2'), '--update-metadata', '--lock-dir', vmDir(dir, 'lock-bad')],
    ]) {
      const r = dmtool(args);
      expect([args[0], r.status, r.stdout]).toEqual([args[0], 2, '']);
      expect(r.stderr).toMatch(
        new RegExp(
          `^dmtool: metadata text checksum 0x[0-9a-f]{1,8} does not match its \\d+ bytes \\(0x[0-9a-f]{1,8}\\) \\(${bad[0].replace(/[.]/g, '\\.')} sectors \\d+\\.\\.\\d+\\)\\n$`,
        ),
      );
    }
    expect(bad.map(sha256File)).toEqual(before);
    expect(fs.existsSync(path.join(dir, 'never.out'))).toBe(false);
  });

  test('a missing PV of the kernel-made VG: copy and snapshot-merge refuse with one clear line, exit 2, nothing written', () => {
    const two = copyPvs('missing-pv').slice(0, 2);
    const before = two.map(sha256File);
    const out = path.join(dir, 'never-missing.out');
    for (const args of [
      ['copy', operand(two, 'lin'), out],
      ['snapshot-merge', operand(two, 'snap2'), '--update-metadata', '--lock-dir', vmDir(dir, 'lock-missing')],
    ]) {
      const r = dmtool(args);
      expect([args[0], r.status, r.stdout]).toEqual([args[0], 2, '']);
      expect(r.stderr).toMatch(
        /^dmtool: VG vg0 is missing PV pv2 \([0-9A-Za-z-]{38}, last seen as \/dev\/vd[a-z]\): give every PV of the VG\n$/,
      );
    }
    expect(two.map(sha256File)).toEqual(before);
    expect(fs.existsSync(out)).toBe(false);
  });
});
