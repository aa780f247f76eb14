import * as fs from 'fs';
import * as path from 'path';
import { PersistentStore } from '@dmtool/dm-snapshot';
import { findVolumeGroup, mapLvDevice, parseVgMetadata, scanVolumeGroups, VolumeGroup } from '@dmtool/lvm';
import { FileDevice } from '@dmtool/native';
import { REPORT_SCHEMAS } from '../../packages/cli/src/json/schemas';
import { dmtool } from '../support/cli';
import { detachAll, LoopDevice, makeLoop, removeDir, tempDir } from '../support/loop';
import { describeLvm2, Lvm2, withSnapshotAndMirror } from '../support/lvm2';

const MIB = 1 << 20;

/** Where lvm2 says an LV's bytes are: `lvs --segments` ranges, stripe size and `pvs` pe_start, in sectors. */
interface Lvm2Segment {
  ranges: { device: string; firstPe: number; lastPe: number }[];
  stripeSectors: number;
}

/** A different byte pattern for every sector of an LV. */
function pattern(bytes: number, seed: number): Buffer {
  const b = Buffer.alloc(bytes);
  for (let s = 0; s < bytes / 512; s++) b.fill(`${seed}:${s};`, s * 512, (s + 1) * 512);
  return b;
}

function openPvs(paths: string[], write = false): FileDevice[] {
  return paths.map((p) => FileDevice.open(p, { write }));
}

describeLvm2('LVM2 metadata written by lvm2 on loop devices', () => {
  let dir: string;
  let loops: LoopDevice[];
  let lvm: Lvm2;
  let pvPaths: string[];
  let extentSectors: number;
  const peStart = new Map<string, number>();

  /** Each segment of an LV as lvm2 reports it, from its own tools only. */
  function lvm2Segments(lv: string): Lvm2Segment[] {
    const rows = lvm
      .lvsJson(`vg0/${lv}`, 'lv_name,seg_pe_ranges,stripe_size', '--segments', '--units', 's')
      .filter((r) => r.lv_name.replace(/[[\]]/g, '') === lv);
    return rows.map((r) => ({
      ranges: r.seg_pe_ranges.split(' ').map((range) => {
        const m = /^(.+):(\d+)-(\d+)$/.exec(range)!;
        return { device: m[1], firstPe: Number(m[2]), lastPe: Number(m[3]) };
      }),
      stripeSectors: Number(r.stripe_size.replace(/S$/, '')),
    }));
  }

  /** Write `data` as the LV's bytes straight to the loop devices, where lvm2's report says they go (or read them from there). */
  function throughLoops(lv: string, data: Buffer, op: 'read' | 'write'): void {
    let lvByte = 0;
    for (const seg of lvm2Segments(lv)) {
      const n = seg.ranges.length;
      const stripeBytes = n > 1 ? seg.stripeSectors * 512 : (seg.ranges[0].lastPe - seg.ranges[0].firstPe + 1) * extentSectors * 512;
      const perStripeBytes = (seg.ranges[0].lastPe - seg.ranges[0].firstPe + 1) * extentSectors * 512;
      const fds = seg.ranges.map((r) => fs.openSync(r.device, 'r+'));
      try {
        for (let chunk = 0; chunk < (perStripeBytes * n) / stripeBytes; chunk++) {
          const r = seg.ranges[chunk % n];
          const pvByte = (peStart.get(r.device)! + r.firstPe * extentSectors) * 512 + Math.floor(chunk / n) * stripeBytes;
          if (op === 'write') fs.writeSync(fds[chunk % n], data, lvByte + chunk * stripeBytes, stripeBytes, pvByte);
          else fs.readSync(fds[chunk % n], data, lvByte + chunk * stripeBytes, stripeBytes, pvByte);
        }
        for (const fd of fds) fs.fsyncSync(fd);
      } finally {
        for (const fd of fds) fs.closeSync(fd);
      }
      lvByte += perStripeBytes * n;
    }
  }

  beforeAll(() => {
    dir = tempDir('dmtool-lvm2-');
    loops = [makeLoop(dir, 'pv1.img', 64 * MIB), makeLoop(dir, 'pv2.img', 64 * MIB), makeLoop(dir, 'pv3.img', 16 * MIB)];
    pvPaths = loops.slice(0, 2).map((l) => l.path);
    lvm = new Lvm2(
      dir,
      loops.map((l) => l.path),
    );
    lvm.run('pvcreate', ...pvPaths);
    lvm.run('vgcreate', '--physicalextentsize', '1m', 'vg0', ...pvPaths);
    lvm.run('lvcreate', '-an', '-Zn', '-L', '3m', '-n', 'data', 'vg0', pvPaths[0]);
    lvm.run('lvcreate', '-an', '-Zn', '-i', '2', '-I', '64k', '-L', '8m', '-n', 'striped', 'vg0');
    lvm.run('lvcreate', '-an', '-Zn', '-L', '2m', '-n', 'grown', 'vg0', pvPaths[1]);
    lvm.run('lvextend', '-L', '+3m', 'vg0/grown', pvPaths[0]);
    lvm.run('lvcreate', '-an', '-Zn', '-L', '2m', '-n', 'snap', 'vg0', pvPaths[0]);
    for (const n of ['mzero', 'mone', 'mlog']) lvm.run('lvcreate', '-an', '-Zn', '-L', '1m', '-n', n, 'vg0');
    // Snapshots and mirrors need device-mapper to be created; lvm2 takes
    // their metadata through vgcfgrestore, which checks it and writes it to
    // every metadata area as lvcreate would.
    lvm.restore('vg0', withSnapshotAndMirror(lvm.backup('vg0')));
    extentSectors = Number(lvm.run('vgs', '--noheadings', '--units', 's', '-o', 'vg_extent_size', 'vg0').trim().replace(/S$/, ''));
    for (const line of lvm.run('pvs', '--noheadings', '--units', 's', '-o', 'pv_name,pe_start').trim().split('\n')) {
      const [name, start] = line.trim().split(/\s+/);
      peStart.set(name, Number(start.replace(/S$/, '')));
    }
  });

  afterAll(() => {
    detachAll();
    removeDir(dir);
  });

  async function scanned(): Promise<VolumeGroup> {
    const devices = openPvs(pvPaths);
    try {
      return findVolumeGroup(await scanVolumeGroups(devices), 'vg0');
    } finally {
      for (const d of devices) d.close();
    }
  }

  test('the metadata read from the PVs is what vgcfgbackup writes, at the seqno vgs reports, from every copy', async () => {
    const vg = await scanned();
    expect(vg.metadata).toEqual(parseVgMetadata(lvm.backup('vg0')));
    expect(vg.metadata.seqno).toBe(Number(lvm.run('vgs', '--noheadings', '-o', 'vg_seqno', 'vg0').trim()));
    expect(vg.metadata.extentSectors).toBe(extentSectors);
    expect([vg.copies, vg.currentCopies, vg.missing]).toEqual([2, 2, []]);
    const pvs = lvm.run('pvs', '--noheadings', '--units', 's', '-o', 'pv_name,pv_uuid,pe_start', '--separator', ' ').trim().split('\n');
    expect(pvs.map((l) => l.trim().split(' '))).toEqual(
      vg.metadata.pvs.map((p) => [vg.devices.get(p.key)!.path, p.uuid, `${p.peStartSectors}S`]),
    );
  });

  test('segments: the PV extents of every LV are those lvs --segments reports, snapshot and mirror recognised', async () => {
    const vg = await scanned();
    const pvPath = (key: string) => vg.metadata.pvs.find((p) => p.key === key)!.deviceHint;
    for (const lv of vg.metadata.lvs.filter((l) => l.segments.every((s) => s.type === 'striped'))) {
      const ours = lv.segments.map((s) => {
        if (s.type !== 'striped') throw new Error('unreachable');
        const per = s.extentCount / s.stripes.length;
        return {
          ranges: s.stripes.map((st) => ({ device: pvPath(st.pv), firstPe: st.startPe, lastPe: st.startPe + per - 1 })),
          stripeSectors: s.stripeSectors,
        };
      });
      expect([lv.name, ours]).toEqual([lv.name, lvm2Segments(lv.name)]);
    }
    const grown = vg.metadata.lvs.find((l) => l.name === 'grown')!;
    expect(grown.segments.map((s) => s.type === 'striped' && s.stripes[0].pv)).toEqual(['pv1', 'pv0']);
    expect(vg.metadata.lvs.find((l) => l.name === 'snapshot0')?.segments).toEqual([
      { type: 'snapshot', startExtent: 0, extentCount: 3, chunkSectors: 8, origin: 'data', cow: 'snap', merging: false },
    ]);
    expect(vg.metadata.lvs.find((l) => l.name === 'mir')?.segments).toEqual([
      {
        type: 'mirror',
        startExtent: 0,
        extentCount: 1,
        regionSectors: 1024,
        log: 'mir_mlog',
        legs: [
          { lv: 'mir_mimage_0', startExtent: 0 },
          { lv: 'mir_mimage_1', startExtent: 0 },
        ],
      },
    ]);
  });

  test('dmtool lvm-ls --json gives the rows of lvs -a --reportformat json, field for field, and its table that of lvs -a', () => {
    const r = dmtool(['lvm-ls', '--json', ...pvPaths]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const lvs = lvm.lvsJson('vg0');
    expect(lvs.map((row) => row.lv_name)).toEqual([
      'data',
      'grown',
      'mir',
      '[mir_mimage_0]',
      '[mir_mimage_1]',
      '[mir_mlog]',
      'snap',
      'striped',
    ]);
    expect(JSON.parse(r.stdout)).toEqual({ report: [{ lv: lvs }] });
    // The schema describes lvm2's own layout: lvs's document passes it, and so does dmtool's.
    expect(REPORT_SCHEMAS['lvm-ls'].parse({ report: [{ lv: lvs }] })).toEqual({ report: [{ lv: lvs }] });
    REPORT_SCHEMAS['lvm-ls'].parse(JSON.parse(r.stdout));
    // The table is lvs -a's, line for line (lvs pads the last column with blanks, dmtool does not).
    const table = dmtool(['lvm-ls', ...pvPaths]);
    const lvsText = lvm.run('lvs', '-a', 'vg0');
    expect(table.stdout).toBe(
      lvsText
        .split('\n')
        .map((l) => l.trimEnd())
        .join('\n'),
    );
  });

  test('Data% of a snapshot comes from its COW once the COW holds a header', async () => {
    const devices = openPvs(pvPaths, true);
    try {
      const vg = findVolumeGroup(await scanVolumeGroups(devices), 'vg0');
      const cow = mapLvDevice(
        vg,
        vg.metadata.lvs.find((l) => l.name === 'snap')!,
        { write: true },
      );
      await PersistentStore.format(cow, 8);
      cow.close();
    } finally {
      for (const d of devices) d.close();
    }
    const r = dmtool(['lvm-ls', '--json', ...pvPaths]);
    expect(r.status).toBe(0);
    const snap = (JSON.parse(r.stdout) as { report: { lv: Record<string, string>[] }[] }).report[0].lv.find(
      (row) => row.lv_name === 'snap',
    );
    // A formatted COW of 4096 sectors with 8-sector chunks: the header and the first area, 16 sectors.
    expect(snap).toMatchObject({ origin: 'data', lv_size: '2.00m', data_percent: '0.39' });
  });

  test('a snapshot whose merge is pending (merging_store): O and S, the snapshot hidden, as lvs shows it', () => {
    const current = lvm.backup('vg0');
    lvm.restore('vg0', current.replace('cow_store = "snap"', 'merging_store = "snap"'));
    try {
      const r = dmtool(['lvm-ls', '--json', ...pvPaths]);
      expect(r.status).toBe(0);
      const lvs = lvm.lvsJson('vg0');
      expect(lvs.filter((row) => /^(data|\[snap\])$/.test(row.lv_name)).map((row) => [row.lv_name, row.lv_attr])).toEqual([
        ['data', 'Owi-XXs---'],
        ['[snap]', 'Swi-XXs---'],
      ]);
      // The COW holds a header since the test before: dmtool reads its Data%, which lvm2 can only ask device-mapper for.
      const expected = lvs.map((row) => (row.lv_name === '[snap]' ? { ...row, data_percent: '0.39' } : row));
      expect(JSON.parse(r.stdout)).toEqual({ report: [{ lv: expected }] });
    } finally {
      lvm.restore('vg0', current);
    }
  });

  test.each(['data', 'striped', 'grown'])('dmtool copy PV,PV:vg0/%s reads the bytes lvm2 placed, with and without O_DIRECT', (lv) => {
    const expected = pattern(lvBytes(lv), lv.length);
    throughLoops(lv, expected, 'write');
    const out = path.join(dir, `${lv}.out`);
    fs.writeFileSync(out, '');
    fs.truncateSync(out, expected.length);
    const r = dmtool(['copy', `${pvPaths.join(',')}:vg0/${lv}`, out]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.startsWith(`copied ${expected.length / 512} sectors from ${pvPaths.join(',')}:vg0/${lv} to 1 destination: `)).toBe(
      true,
    );
    expect(fs.readFileSync(out).equals(expected)).toBe(true);

    // O_DIRECT on the PVs: the metadata reads and the copy keep to their alignment.
    fs.truncateSync(out, 0);
    fs.truncateSync(out, expected.length);
    const direct = dmtool(['copy', '--direct', `${pvPaths.join(',')}:vg0/${lv}`, out]);
    expect([direct.status, direct.stderr]).toEqual([0, '']);
    expect(fs.readFileSync(out).equals(expected)).toBe(true);
  });

  test.each(['striped', 'grown'])('dmtool copy FILE PV,PV:vg0/%s writes where lvm2 placed the LV', (lv) => {
    const data = pattern(lvBytes(lv), 100 + lv.length);
    const input = path.join(dir, `${lv}.in`);
    fs.writeFileSync(input, data);
    const r = dmtool(['copy', input, `${pvPaths.join(',')}:vg0/${lv}`]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const seen = Buffer.alloc(data.length);
    throughLoops(lv, seen, 'read');
    expect(seen.equals(data)).toBe(true);
  });

  test('an origin whose snapshot merge is pending (merging_store) is not written: only the merge may', () => {
    const current = lvm.backup('vg0');
    lvm.restore('vg0', current.replace('cow_store = "snap"', 'merging_store = "snap"'));
    try {
      const input = path.join(dir, 'origin.in');
      fs.writeFileSync(input, pattern(lvBytes('data'), 7));
      const before = Buffer.alloc(lvBytes('data'));
      throughLoops('data', before, 'read');
      const r = dmtool(['copy', input, `${pvPaths.join(',')}:vg0/data`]);
      expect(r.stderr).toBe(
        `dmtool: vg0/data: the merge of snap into data is pending (merging_store); finish it with snapshot-merge before writing\n`,
      );
      expect(r.status).toBe(2);
      const after = Buffer.alloc(before.length);
      throughLoops('data', after, 'read');
      expect(after.equals(before)).toBe(true);
    } finally {
      lvm.restore('vg0', current);
    }
  });

  function lvBytes(lv: string): number {
    return lvm2Segments(lv).reduce((n, s) => n + s.ranges.reduce((m, r) => m + (r.lastPe - r.firstPe + 1), 0), 0) * extentSectors * 512;
  }
});
