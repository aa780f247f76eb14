import * as fs from 'fs';
import * as path from 'path';
import { findVolumeGroup, mapLvDevice, scanVolumeGroups } from '@dmtool/lvm';
import { FileDevice } from '@dmtool/native';
import { dmtool } from '../support/cli';
import { makeImage, patternBytes, sha256, sha256File } from '../support/images';
import { detachAll, LoopDevice, makeLoop, removeDir, tempDir } from '../support/loop';
import { describeLvm2, Lvm2, withSnapshotAndMirror } from '../support/lvm2';

const MIB = 1 << 20;

/** The raw bytes of an LV's segments (for an LV the CLI would open as a target, e.g. a COW LV). */
async function rawLv(pvPaths: string[], lv: string): Promise<Buffer> {
  const pvs = pvPaths.map((p) => FileDevice.open(p, { write: false }));
  try {
    const vg = findVolumeGroup(await scanVolumeGroups(pvs), 'vg0');
    const dev = mapLvDevice(
      vg,
      vg.metadata.lvs.find((l) => l.name === lv)!,
      { write: false },
    );
    const buf = Buffer.alloc(dev.sizeBytes);
    await dev.read(buf, 0, buf.length, 0);
    dev.close();
    return buf;
  } finally {
    for (const d of pvs) d.close();
  }
}

function ok(args: string[]): string {
  const r = dmtool(args);
  expect([r.status, r.stderr]).toEqual([0, '']);
  return r.stdout;
}

/**
 * A VG made by lvm2 (snapshot and mirror added through vgcfgrestore, as
 * lvm2 cannot create them without device-mapper), and the same origin, COW,
 * legs and log as loose files: every operation is done on both and the
 * results compared byte for byte.
 */
describeLvm2('LVM snapshots and mirrors as devices, compared with loose files', () => {
  let dir: string;
  let loops: LoopDevice[];
  let lvm: Lvm2;
  let pvs: string;
  const file = (name: string) => path.join(dir, name);
  const ORIGIN_BYTES = 3 * MIB;
  const COW_BYTES = 2 * MIB;

  beforeAll(() => {
    dir = tempDir('dmtool-lvmsnap-');
    loops = [makeLoop(dir, 'pv1.img', 32 * MIB), makeLoop(dir, 'pv2.img', 32 * MIB)];
    const paths = loops.map((l) => l.path);
    pvs = paths.join(',');
    lvm = new Lvm2(dir, paths);
    lvm.run('pvcreate', ...paths);
    lvm.run('vgcreate', '--physicalextentsize', '1m', 'vg0', ...paths);
    // The origin on both PVs, so that its mapping has two segments.
    lvm.run('lvcreate', '-an', '-Zn', '-L', '2m', '-n', 'data', 'vg0', paths[0]);
    lvm.run('lvextend', '-L', '+1m', 'vg0/data', paths[1]);
    lvm.run('lvcreate', '-an', '-Zn', '-L', '2m', '-n', 'snap', 'vg0', paths[1]);
    for (const n of ['mzero', 'mone', 'mlog']) lvm.run('lvcreate', '-an', '-Zn', '-L', '1m', '-n', n, 'vg0');
    // The origin's data, written while it has no snapshot yet.
    makeImage(file('origin.img'), ORIGIN_BYTES, 'origin');
    ok(['copy', file('origin.img'), `${pvs}:vg0/data`]);
    ok(['zero', `${pvs}:vg0/snap`]);
    lvm.restore('vg0', withSnapshotAndMirror(lvm.backup('vg0')));
    makeImage(file('cow.img'), COW_BYTES);
  });

  afterAll(() => {
    detachAll();
    removeDir(dir);
  });

  test('snapshot-create PVS:vg0/snap formats the COW LV as snapshot-create formats a loose COW', async () => {
    ok(['snapshot-create', file('origin.img'), file('cow.img'), '--chunk-size', '8']);
    const out = ok(['snapshot-create', `${pvs}:vg0/snap`, '--chunk-size', '8']);
    expect(out.split('\n')[1]).toBe('0 6144 snapshot 16/4096 16');
    expect(
      sha256(
        await rawLv(
          loops.map((l) => l.path),
          'snap',
        ),
      ),
    ).toBe(sha256File(file('cow.img')));
  });

  test('a write to the origin LV copies into the snapshot first, as snapshot-write --target origin does', async () => {
    fs.writeFileSync(file('b.bin'), patternBytes('b', 0, 24));
    ok(['snapshot-write', file('origin.img'), file('cow.img'), '--target', 'origin', '--offset', '4092', '-i', file('b.bin')]);
    const copied = ok(['copy', file('b.bin'), `${pvs}:vg0/data`, '--offset', '0', '--dest-offset', '4092', '--length', '24']);
    expect(copied).toMatch(/^copied 24 sectors/);
    expect(
      sha256(
        await rawLv(
          loops.map((l) => l.path),
          'snap',
        ),
      ),
    ).toBe(sha256File(file('cow.img')));
    expect(
      sha256(
        await rawLv(
          loops.map((l) => l.path),
          'data',
        ),
      ),
    ).toBe(sha256File(file('origin.img')));
  });

  test('a write to the snapshot LV goes to its COW, as snapshot-write --target snapshot does', async () => {
    fs.writeFileSync(file('c.bin'), patternBytes('c', 0, 12));
    ok(['snapshot-write', file('origin.img'), file('cow.img'), '--target', 'snapshot', '--offset', '100', '-i', file('c.bin')]);
    ok(['copy', file('c.bin'), `${pvs}:vg0/snap`, '--dest-offset', '100']);
    expect(
      sha256(
        await rawLv(
          loops.map((l) => l.path),
          'snap',
        ),
      ),
    ).toBe(sha256File(file('cow.img')));
  });

  test('the snapshot LV reads as the snapshot view: copy, snapshot-read PVS:vg0/snap and snapshot-read ORIGIN COW agree', () => {
    ok(['snapshot-read', file('origin.img'), file('cow.img'), '-o', file('view-files.img')]);
    ok(['snapshot-read', `${pvs}:vg0/snap`, '-o', file('view-lv.img')]);
    makeImage(file('view-copy.img'), ORIGIN_BYTES);
    ok(['copy', `${pvs}:vg0/snap`, file('view-copy.img')]);
    const expected = sha256File(file('view-files.img'));
    expect(sha256File(file('view-lv.img'))).toBe(expected);
    expect(sha256File(file('view-copy.img'))).toBe(expected);
    // The view differs from the origin exactly where the origin was written after the snapshot.
    expect(expected).not.toBe(sha256File(file('origin.img')));
  });

  test('snapshot-status, snapshot-list, snapshot-check and snapshot-delta take PVS:vg0/snap for the COW', () => {
    const status = ok(['snapshot-status', `${pvs}:vg0/snap`]);
    expect(status).toBe(ok(['snapshot-status', file('cow.img')]));
    const list = (cow: string) => ok(['snapshot-list', cow]).split('\n').slice(1).join('\n');
    expect(list(`${pvs}:vg0/snap`)).toBe(list(file('cow.img')));
    const delta = (cow: string) => ok(['snapshot-delta', cow]).split('\n').slice(1).join('\n');
    expect(delta(`${pvs}:vg0/snap`)).toBe(delta(file('cow.img')));
    expect(ok(['snapshot-check', `${pvs}:vg0/snap`])).toMatch(/: chunk 8 sectors, valid, 6 exceptions in 1 areas?: clean\n$/);
  });

  test('snapshot-export PVS:vg0/snap writes the stream snapshot-export ORIGIN COW writes, for either data', () => {
    for (const data of ['origin', 'snapshot']) {
      ok(['snapshot-export', file('origin.img'), file('cow.img'), '--data', data, '-o', file(`files-${data}.delta`)]);
      ok(['snapshot-export', `${pvs}:vg0/snap`, '--data', data, '-o', file(`lv-${data}.delta`)]);
      expect(sha256File(file(`lv-${data}.delta`))).toBe(sha256File(file(`files-${data}.delta`)));
    }
    // An output over one of the snapshot's PVs (by device or by the loop's backing file) is refused; nothing is written.
    const before = sha256File(file('pv2.img'));
    for (const pv of [loops[1].path, file('pv2.img')]) {
      for (const args of [
        ['snapshot-export', `${pvs}:vg0/snap`, '-o', pv],
        ['snapshot-read', `${pvs}:vg0/snap`, '-o', pv],
      ]) {
        const refused = dmtool(args);
        expect([refused.status, refused.stderr]).toEqual([
          2,
          `dmtool: --output ${pv} is ${loops[1].path}, which is being read; name another file\n`,
        ]);
      }
    }
    expect(sha256File(file('pv2.img'))).toBe(before);
    const r = dmtool(['snapshot-export', `${pvs}:vg0/data`, '-o', file('never.delta')]);
    expect([r.status, r.stderr]).toEqual([
      2,
      'dmtool: vg0/data is not a snapshot (the origin of a snapshot, a linear/striped LV); name a snapshot LV, or give ORIGIN and COW\n',
    ]);
    expect(fs.existsSync(file('never.delta'))).toBe(false);
  });

  test('snapshot commands refuse an LV that is not a snapshot, with one line', () => {
    const r = dmtool(['snapshot-read', `${pvs}:vg0/data`, '-o', file('never.img')]);
    expect(r.stderr).toBe(
      'dmtool: vg0/data is not a snapshot (the origin of a snapshot, a linear/striped LV); name a snapshot LV, or give ORIGIN and COW\n',
    );
    expect(r.status).toBe(2);
    expect(fs.existsSync(file('never.img'))).toBe(false);
  });

  test('the mirror LV is a mirror: reads from its legs, a write reaches both legs and leaves the log as a loose mirror leaves it', async () => {
    const paths = loops.map((l) => l.path);
    makeImage(file('leg0.img'), MIB, 'leg');
    makeImage(file('leg1.img'), MIB, 'leg');
    makeImage(file('log.img'), MIB);
    ok(['mirror-create', '--nosync', '--region-size', '1024', '--log', file('log.img'), file('leg0.img'), file('leg1.img')]);
    for (const [f, lv] of [
      ['leg0.img', 'mir_mimage_0'],
      ['leg1.img', 'mir_mimage_1'],
      ['log.img', 'mir_mlog'],
    ]) {
      ok(['copy', file(f), `${pvs}:vg0/${lv}`]);
    }
    expect(
      ok(['mirror-status', `--table`, `0 2048 mirror disk 2 ${file('log.img')} 1024 2 ${file('leg0.img')} 0 ${file('leg1.img')} 0`]),
    ).toBe(ok(['mirror-status', '--log', file('log.img'), file('leg0.img'), file('leg1.img')]));
    makeImage(file('mir-read.img'), MIB);
    ok(['copy', `${pvs}:vg0/mir`, file('mir-read.img')]);
    expect(sha256File(file('mir-read.img'))).toBe(sha256File(file('leg0.img')));

    fs.writeFileSync(file('d.bin'), patternBytes('d', 0, 16));
    ok(['copy', file('d.bin'), `${pvs}:vg0/mir`, '--dest-offset', '1020']);
    const expected = Buffer.from(fs.readFileSync(file('leg0.img')));
    patternBytes('d', 0, 16).copy(expected, 1020 * 512);
    expect(sha256(await rawLv(paths, 'mir_mimage_0'))).toBe(sha256(expected));
    expect(sha256(await rawLv(paths, 'mir_mimage_1'))).toBe(sha256(expected));
    // Every region recorded clean again once the write was flushed: the log is the in-sync log it started as.
    expect(sha256((await rawLv(paths, 'mir_mlog')).subarray(0, MIB))).toBe(sha256File(file('log.img')));
  });
});
