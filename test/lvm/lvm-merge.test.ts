import * as fs from 'fs';
import * as path from 'path';
import { metadataAfterMerge, parseVgMetadata, planTextWrite, readPhysicalVolume, snapshotSegmentOf, storedText } from '@dmtool/lvm';
import { FileDevice } from '@dmtool/native';
import { dmtool, startDmtool, waitFor } from '../support/cli';
import { makeImage, patternBytes, sha256File } from '../support/images';
import { detachAll, makeLoop, removeDir, tempDir } from '../support/loop';
import { describeLvm2, Lvm2, withSnapshotAndMirror } from '../support/lvm2';

const MIB = 1 << 20;
const ORIGIN_BYTES = 3 * MIB;

interface Scenario {
  dir: string;
  lvm: Lvm2;
  /** `pv1,pv2` (loop devices), the PVs of vg0. */
  pvs: string;
  lockDir: string;
  /** sha256 of the origin after the same merge on loose files. */
  mergedSha: string;
  seqno: number;
}

function ok(args: string[]): string {
  const r = dmtool(args);
  expect([r.status, r.stderr]).toEqual([0, '']);
  return r.stdout;
}

const dirs: string[] = [];

/**
 * vg0 on two loop devices: `data` (3 MiB over both PVs) with a snapshot
 * `snap` (chunk 8) holding origin and snapshot writes, and a mirror; the
 * same origin and COW as loose files, merged there to give the expected
 * origin.
 */
function scenario(opts: { merging?: boolean; metadataSize?: string } = {}): Scenario {
  const dir = tempDir('dmtool-lvmmerge-');
  dirs.push(dir);
  const loops = [makeLoop(dir, 'pv1.img', 32 * MIB), makeLoop(dir, 'pv2.img', 32 * MIB)];
  const paths = loops.map((l) => l.path);
  const lvm = new Lvm2(dir, paths);
  // A small metadata area (the data aligned close after it) makes lvm2 wrap its texts after a few changes.
  lvm.run('pvcreate', ...(opts.metadataSize ? ['--metadatasize', opts.metadataSize, '--dataalignment', '64k'] : []), ...paths);
  lvm.run('vgcreate', '--physicalextentsize', '1m', 'vg0', ...paths);
  lvm.run('lvcreate', '-an', '-Zn', '-L', '2m', '-n', 'data', 'vg0', paths[0]);
  lvm.run('lvextend', '-L', '+1m', 'vg0/data', paths[1]);
  lvm.run('lvcreate', '-an', '-Zn', '-L', '2m', '-n', 'snap', 'vg0', paths[1]);
  for (const n of ['mzero', 'mone', 'mlog']) lvm.run('lvcreate', '-an', '-Zn', '-L', '1m', '-n', n, 'vg0');
  const pvs = paths.join(',');
  const file = (n: string) => path.join(dir, n);
  makeImage(file('origin.img'), ORIGIN_BYTES, 'origin');
  makeImage(file('cow.img'), 2 * MIB);
  ok(['copy', file('origin.img'), `${pvs}:vg0/data`]);
  ok(['zero', `${pvs}:vg0/snap`]);
  lvm.restore('vg0', withSnapshotAndMirror(lvm.backup('vg0'), { merging: opts.merging }));
  fs.writeFileSync(file('b.bin'), patternBytes('b', 0, 40));
  fs.writeFileSync(file('c.bin'), patternBytes('c', 0, 12));
  for (const pair of [[file('origin.img'), file('cow.img')], [`${pvs}:vg0/snap`]]) {
    ok(['snapshot-create', ...pair, '--chunk-size', '8']);
    ok(['snapshot-write', ...pair, '--target', 'origin', '--offset', '4080', '-i', file('b.bin')]);
    ok(['snapshot-write', ...pair, '--target', 'snapshot', '--offset', '100', '-i', file('c.bin')]);
  }
  ok(['snapshot-merge', file('origin.img'), file('cow.img')]);
  const seqno = Number(lvm.run('vgs', '--noheadings', '-o', 'vg_seqno', 'vg0').trim());
  return { dir, lvm, pvs, lockDir: path.join(dir, 'lvm-lock'), mergedSha: sha256File(file('origin.img')), seqno };
}

function originSha(s: Scenario): string {
  const out = path.join(s.dir, `origin-${Date.now()}.out`);
  makeImage(out, ORIGIN_BYTES);
  ok(['copy', `${s.pvs}:vg0/data`, out]);
  return sha256File(out);
}

/** lvm2's own checks of the VG, and what it lists: the LV names of `lvs -a`. */
function lvm2Accepts(s: Scenario): string[] {
  s.lvm.run('vgck', 'vg0');
  s.lvm.run('pvck', ...s.pvs.split(','));
  return s.lvm.lvsJson('vg0').map((r) => r.lv_name);
}

/** The LV names `dmtool lvm-ls` lists. */
function dmtoolLists(s: Scenario): string[] {
  const doc = JSON.parse(ok(['lvm-ls', '--json', ...s.pvs.split(',')])) as { report: { lv: { lv_name: string }[] }[] };
  return doc.report[0].lv.map((r) => r.lv_name);
}

/** Whether lvm2's next copy of the merged metadata wraps around the end of the first PV's metadata area. */
async function mergedCopyWraps(s: Scenario): Promise<boolean> {
  const d = FileDevice.open(s.pvs.split(',')[0], { write: false });
  try {
    const pv = await readPhysicalVolume(d);
    const c = pv.copies[0];
    const after = metadataAfterMerge(c.text, c.vg, snapshotSegmentOf(c.vg, 'snap')!);
    return planTextWrite(c.header, storedText(after.text)).writes.length === 2;
  } finally {
    d.close();
  }
}

async function committedCopyWraps(s: Scenario): Promise<boolean> {
  const d = FileDevice.open(s.pvs.split(',')[0], { write: false });
  try {
    const { header } = (await readPhysicalVolume(d)).copies[0];
    return header.locations[0].byteOffset + header.locations[0].sizeBytes > header.sizeBytes;
  } finally {
    d.close();
  }
}

const WITHOUT_SNAPSHOT = ['data', 'mir', '[mir_mimage_0]', '[mir_mimage_1]', '[mir_mlog]'];

describeLvm2('snapshot-merge of an LVM snapshot, checked by lvm2', () => {
  afterAll(() => {
    detachAll();
    for (const d of dirs) removeDir(d);
  });

  test('without --update-metadata: the origin LV is merged and the vgcfgrestore-ready metadata printed; the VG is unchanged', () => {
    const s = scenario();
    const r = dmtool(['snapshot-merge', `${s.pvs}:vg0/snap`]);
    expect(r.status).toBe(0);
    expect(r.stderr).toMatch(/^merged 7 exceptions \(28\.0 KiB\) in 1 batch, .*; status 16\/4096 16\n$/);
    const printed = parseVgMetadata(r.stdout);
    expect(printed.seqno).toBe(s.seqno + 1);
    expect(printed.lvs.map((l) => l.name)).toEqual(['data', 'mir', 'mir_mimage_0', 'mir_mimage_1', 'mir_mlog']);
    expect(originSha(s)).toBe(s.mergedSha);
    // Nothing of the metadata was written: lvm2 still shows the snapshot.
    expect(lvm2Accepts(s)).toContain('snap');
    expect(Number(s.lvm.run('vgs', '--noheadings', '-o', 'vg_seqno', 'vg0').trim())).toBe(s.seqno);
    // The printed text is what vgcfgrestore takes.
    const file = path.join(s.dir, 'after.txt');
    fs.writeFileSync(file, r.stdout);
    s.lvm.run('vgcfgrestore', '-f', file, 'vg0');
    expect(lvm2Accepts(s)).toEqual(WITHOUT_SNAPSHOT);
  });

  test.each([false, true])(
    '--update-metadata (merging_store %s): merged, then every metadata copy rewritten; vgck, pvck and lvs accept it',
    (merging) => {
      const s = scenario({ merging });
      const json = JSON.parse(ok(['snapshot-merge', `${s.pvs}:vg0/snap`, '--update-metadata', '--lock-dir', s.lockDir, '--json']));
      expect(json).toMatchObject({
        ok: true,
        mergedChunks: 7,
        lvm: {
          vg: 'vg0',
          snapshot: 'snap',
          origin: 'data',
          seqno: s.seqno + 1,
          metadataAreas: 2,
          updated: true,
          output: null,
          metadata: null,
        },
      });
      expect(originSha(s)).toBe(s.mergedSha);
      expect(lvm2Accepts(s)).toEqual(WITHOUT_SNAPSHOT);
      expect(Number(s.lvm.run('vgs', '--noheadings', '-o', 'vg_seqno', 'vg0').trim())).toBe(s.seqno + 1);
      // dmtool reads back what lvm2 lists.
      expect(JSON.parse(ok(['lvm-ls', '--json', ...s.pvs.split(',')]))).toEqual({ report: [{ lv: s.lvm.lvsJson('vg0') }] });
      // A rerun finds no snapshot left to merge.
      const again = dmtool(['snapshot-merge', `${s.pvs}:vg0/snap`, '--update-metadata', '--lock-dir', s.lockDir]);
      expect([again.status, again.stderr]).toEqual([2, 'dmtool: VG vg0 has no LV "snap"\n']);
    },
  );

  test('metadata changed by another writer during the merge: the merge is kept, exit 1 naming the command that writes the metadata', async () => {
    const s = scenario();
    // A lock folder of its own, so lvm2 is not held off: a writer that ignores the VG lock.
    const merge = startDmtool(
      [
        'snapshot-merge',
        `${s.pvs}:vg0/snap`,
        '--update-metadata',
        '--lock-dir',
        path.join(s.dir, 'other-lock'),
        '--rate',
        '4k',
        '--progress',
      ],
      { timeoutMs: 60000 },
    );
    expect(await waitFor(() => /^progress /m.test(merge.stderr()), 20000)).toBe(true);
    s.lvm.run('lvchange', '--addtag', 'changed', 'vg0/data');
    const r = await merge.done;
    expect(r.status).toBe(1);
    expect(r.stderr.split('\n').filter((l) => l.startsWith('dmtool: '))).toEqual([
      expect.stringMatching(
        /^dmtool: the merge of vg0\/snap is done and durable, but its metadata was not written: the metadata area at byte 4096 changed since it was read \(.*\); run dmtool snapshot-merge \S+:vg0\/snap --update-metadata again to write it$/,
      ),
    ]);
    expect(originSha(s)).toBe(s.mergedSha);
    // The rerun the message names writes the metadata; lvm2 accepts it.
    ok(['snapshot-merge', `${s.pvs}:vg0/snap`, '--update-metadata', '--lock-dir', s.lockDir]);
    expect(originSha(s)).toBe(s.mergedSha);
    expect(lvm2Accepts(s)).toEqual(WITHOUT_SNAPSHOT);
  });

  test('the metadata wraps around the end of a small metadata area as lvm2 wraps it', async () => {
    const s = scenario({ metadataSize: '32k' });
    // lvm2 changes move the committed copy until the merged copy would cross the end of the buffer.
    for (let i = 0; i < 40 && !(await mergedCopyWraps(s)); i++) s.lvm.run('lvchange', '--addtag', `t${i}`, 'vg0/data');
    expect(await mergedCopyWraps(s)).toBe(true);
    ok(['snapshot-merge', `${s.pvs}:vg0/snap`, '--update-metadata', '--lock-dir', s.lockDir]);
    expect(await committedCopyWraps(s)).toBe(true);
    expect(lvm2Accepts(s)).toEqual(WITHOUT_SNAPSHOT);
    expect(originSha(s)).toBe(s.mergedSha);
  });

  const crashes: [string, object, 'old' | 'new' | 'mixed'][] = [
    ['kill -9 between the merge and the metadata', { crashAt: { point: 'snapshot-merge:before-metadata', hit: 1 } }, 'old'],
    ['kill -9 once the texts are written', { crashAt: { point: 'lvm-metadata:texts-written', hit: 1 } }, 'old'],
    ['kill -9 after the first header', { crashAt: { point: 'lvm-metadata:header-written', hit: 1 } }, 'mixed'],
    [
      'power cut after the first header',
      { crashAt: { point: 'lvm-metadata:header-written', hit: 1 }, volatileCache: { order: 'reverse' } },
      'mixed',
    ],
    [
      'power cut once the texts are written',
      { crashAt: { point: 'lvm-metadata:texts-written', hit: 1 }, volatileCache: { order: 'reverse' } },
      'old',
    ],
  ];

  test.each(crashes)('%s: lvm2 and dmtool read the VG, the rerun finishes', (_name, plan, expected) => {
    const s = scenario();
    const r = dmtool(['snapshot-merge', `${s.pvs}:vg0/snap`, '--update-metadata', '--lock-dir', s.lockDir], { faults: plan });
    expect(r.signal).toBe('SIGKILL');
    // The merge was durable before any metadata was written.
    expect(originSha(s)).toBe(s.mergedSha);
    const listed = s.lvm.lvsJson('vg0').map((row) => row.lv_name);
    expect(listed.includes('snap')).toBe(expected === 'old');
    expect(dmtoolLists(s)).toEqual(listed);
    if (expected !== 'old') {
      const planned = JSON.parse(
        ok(['snapshot-merge', `${s.pvs}:vg0/snap`, '--update-metadata', '--lock-dir', s.lockDir, '--dry-run', '--json']),
      );
      expect(planned.lvm).toEqual({
        vg: 'vg0',
        snapshot: 'snap',
        origin: 'data',
        seqno: s.seqno + 1,
        metadataAreas: 1,
        updated: false,
        output: null,
        metadata: null,
      });
    }
    const again = dmtool(['snapshot-merge', `${s.pvs}:vg0/snap`, '--update-metadata', '--lock-dir', s.lockDir]);
    expect([again.status, again.stderr]).toEqual([0, '']);
    expect(again.stdout).toEqual(
      expected === 'old'
        ? expect.stringMatching(/^merged 0 exceptions .*\nwrote the VG vg0 metadata without snap \(seqno \d+\) to 2 metadata areas\n$/)
        : `the merge of vg0/snap was done already; wrote seqno ${s.seqno + 1} to 1 metadata area still holding older metadata\n`,
    );
    expect(lvm2Accepts(s)).toEqual(WITHOUT_SNAPSHOT);
    expect(Number(s.lvm.run('vgs', '--noheadings', '-o', 'vg_seqno', 'vg0').trim())).toBe(s.seqno + 1);
    expect(originSha(s)).toBe(s.mergedSha);
  });

  // A power cut while the metadata writes reach the disk in the worst order
  // (each flush applies its writes last first): the merge is done by a run
  // without --update-metadata, so the writes counted are the metadata's
  // own: the two texts, then the two headers. Without the flush between
  // them a header could be durable before the text it points at.
  test.each([1, 2, 3])('power cut after %i metadata writes reached the disk: old or new metadata, never garbage', (applied) => {
    const s = scenario();
    ok(['snapshot-merge', `${s.pvs}:vg0/snap`, '-o', path.join(s.dir, 'after.txt')]);
    const r = dmtool(['snapshot-merge', `${s.pvs}:vg0/snap`, '--update-metadata', '--lock-dir', s.lockDir], {
      faults: { volatileCache: { order: 'reverse' }, crashDuringFlush: applied },
    });
    expect(r.signal).toBe('SIGKILL');
    const listed = s.lvm.lvsJson('vg0').map((row) => row.lv_name);
    expect(listed).toEqual(applied < 3 ? [...WITHOUT_SNAPSHOT, 'snap'] : WITHOUT_SNAPSHOT);
    expect(dmtoolLists(s)).toEqual(listed);
    ok(['snapshot-merge', `${s.pvs}:vg0/snap`, '--update-metadata', '--lock-dir', s.lockDir]);
    expect(lvm2Accepts(s)).toEqual(WITHOUT_SNAPSHOT);
    expect(originSha(s)).toBe(s.mergedSha);
  });
});
