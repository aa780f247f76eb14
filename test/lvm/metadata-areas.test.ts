import { execFileSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { findVolumeGroup, lvmCrc, parseVgMetadata, PhysicalVolume, readPhysicalVolume, scanVolumeGroups } from '@dmtool/lvm';
import { FileDevice } from '@dmtool/native';
import { dmtool } from '../support/cli';
import { detachAll, LoopDevice, makeLoop, removeDir, tempDir } from '../support/loop';
import { describeLvm2, Lvm2 } from '../support/lvm2';

const MIB = 1 << 20;

async function readPv(file: string): Promise<PhysicalVolume> {
  const d = FileDevice.open(file, { write: false });
  try {
    return await readPhysicalVolume(d);
  } finally {
    d.close();
  }
}

function sha256(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function patch(file: string, byteOffset: number, bytes: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, byteOffset);
  } finally {
    fs.closeSync(fd);
  }
}

function readAt(file: string, byteOffset: number, bytes: number): Buffer {
  const b = Buffer.alloc(bytes);
  const fd = fs.openSync(file, 'r');
  try {
    fs.readSync(fd, b, 0, bytes, byteOffset);
  } finally {
    fs.closeSync(fd);
  }
  return b;
}

describeLvm2('metadata areas written by lvm2', () => {
  let dir: string;
  let loops: LoopDevice[];
  let lvm: Lvm2;

  beforeAll(() => {
    dir = tempDir('dmtool-lvm2-mda-');
    loops = [
      makeLoop(dir, 'small.img', 64 * MIB),
      makeLoop(dir, 'pv1.img', 32 * MIB),
      makeLoop(dir, 'pv2.img', 32 * MIB),
      makeLoop(dir, 'orphan.img', 8 * MIB),
    ];
    lvm = new Lvm2(
      dir,
      loops.map((l) => l.path),
    );
    // A small metadata area, so that a few changes make the text wrap around the end of its buffer.
    lvm.run('pvcreate', '--metadatasize', '32k', '--dataalignment', '64k', loops[0].path);
    lvm.run('vgcreate', '--physicalextentsize', '1m', 'vgw', loops[0].path);
    lvm.run('pvcreate', '--metadatacopies', '2', loops[1].path, loops[2].path);
    lvm.run('vgcreate', '--physicalextentsize', '1m', 'vg0', loops[1].path, loops[2].path);
    lvm.run('lvcreate', '-an', '-Zn', '-L', '2m', '-n', 'data', 'vg0', loops[1].path);
    lvm.run('lvcreate', '-an', '-Zn', '-i', '2', '-I', '8k', '-L', '4m', '-n', 'striped', 'vg0');
    lvm.run('pvcreate', loops[3].path);
  });

  test('a PV in no VG: lvm-ls leaves it out as lvs does, a volume operand refuses it', () => {
    const [pv1, pv2, orphan] = [loops[1].path, loops[2].path, loops[3].path];
    const ls = dmtool(['lvm-ls', '--json', orphan, pv1, pv2]);
    expect([ls.status, ls.stderr]).toEqual([0, '']);
    expect(JSON.parse(ls.stdout)).toEqual({ report: [{ lv: lvm.lvsJson('vg0') }] });
    const out = path.join(dir, 'orphan-out.bin');
    fs.writeFileSync(out, Buffer.alloc(2 * MIB));
    const copy = dmtool(['copy', `${orphan},${pv1},${pv2}:vg0/data`, out]);
    expect(copy.stderr).toMatch(
      new RegExp(`^dmtool: PV [\\w-]+ belongs to no VG whose metadata was found on the given devices \\(${orphan}\\)\\n$`),
    );
    expect(copy.status).toBe(2);
  });

  afterAll(() => {
    detachAll();
    removeDir(dir);
  });

  test('a committed text that wraps around the end of the circular buffer is read whole', async () => {
    const pv = loops[0].path;
    let wrapped = false;
    for (let i = 0; i < 40 && !wrapped; i++) {
      lvm.run('lvcreate', '-an', '-Zn', '-L', '1m', '-n', `lv${i}`, 'vgw');
      const copy = (await readPv(pv)).copies[0];
      const loc = copy.header.locations[0];
      wrapped = loc.byteOffset + loc.sizeBytes > copy.header.sizeBytes;
    }
    expect(wrapped).toBe(true);
    const copy = (await readPv(pv)).copies[0];
    expect(parseVgMetadata(copy.text)).toEqual(parseVgMetadata(lvm.backup('vgw')));
    const r = dmtool(['lvm-ls', '--json', pv]);
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ report: [{ lv: lvm.lvsJson('vgw') }] });
  });

  test('two metadata areas per PV: every copy is read, and the highest seqno wins whichever PV holds it', async () => {
    const [pv1, pv2] = [loops[1].path, loops[2].path];
    const first = await readPv(pv1);
    expect(first.label.metadataAreas).toHaveLength(2);
    expect(first.copies.map((c) => c.vg.seqno)).toEqual([first.copies[0].vg.seqno, first.copies[0].vg.seqno]);
    // Keep pv1's areas as they are now, let lvm2 commit a change, then put the old areas back on pv1.
    const saved = first.label.metadataAreas.map((a) => ({ at: a.byteOffset, bytes: readAt(pv1, a.byteOffset, a.sizeBytes) }));
    lvm.run('lvcreate', '-an', '-Zn', '-L', '1m', '-n', 'newer', 'vg0');
    const newest = Number(lvm.run('vgs', '--noheadings', '-o', 'vg_seqno', 'vg0').trim());
    for (const s of saved) patch(pv1, s.at, s.bytes);
    for (const order of [
      [pv1, pv2],
      [pv2, pv1],
    ]) {
      const devices = order.map((p) => FileDevice.open(p, { write: false }));
      try {
        const vg = findVolumeGroup(await scanVolumeGroups(devices), 'vg0');
        expect([vg.metadata.seqno, vg.copies, vg.currentCopies, vg.source.path]).toEqual([newest, 4, 2, pv2]);
        expect(vg.metadata.lvs.map((l) => l.name)).toContain('newer');
      } finally {
        for (const d of devices) d.close();
      }
    }
    // lvm2 agrees, and rewrites the stale copies when asked; then every copy is current.
    expect(lvm.lvsJson('vg0').map((r) => r.lv_name)).toEqual(['data', 'newer', 'striped']);
    lvm.run('vgck', '--updatemetadata', 'vg0');
    const devices = [pv1, pv2].map((p) => FileDevice.open(p, { write: false }));
    try {
      const vg = findVolumeGroup(await scanVolumeGroups(devices), 'vg0');
      expect([vg.copies, vg.currentCopies]).toEqual([4, 4]);
      expect(vg.metadata.seqno).toBeGreaterThanOrEqual(newest);
    } finally {
      for (const d of devices) d.close();
    }
  });

  describe('bad metadata on copies of real PVs: one error line, exit 2, nothing written', () => {
    let good1: string;
    let good2: string;
    let input: string;

    beforeAll(() => {
      good1 = path.join(dir, 'good1.img');
      good2 = path.join(dir, 'good2.img');
      execFileSync('cp', ['--sparse=always', loops[1].backingFile, good1]);
      execFileSync('cp', ['--sparse=always', loops[2].backingFile, good2]);
      input = path.join(dir, 'input.bin');
      fs.writeFileSync(input, Buffer.alloc(MIB, 0x5a));
    });

    /** A copy of pv1 broken by `change`, and the error lvm-ls and copy give for it. */
    async function broken(name: string, change: (file: string, pv: PhysicalVolume) => void): Promise<{ file: string; lines: string[] }> {
      const file = path.join(dir, `${name}.img`);
      execFileSync('cp', ['--sparse=always', good1, file]);
      change(file, await readPv(good1));
      const before = [sha256(file), sha256(good2)];
      const ls = dmtool(['lvm-ls', file, good2]);
      const copy = dmtool(['copy', input, `${file},${good2}:vg0/data`]);
      expect([ls.status, ls.stdout, copy.status, copy.stdout]).toEqual([2, '', 2, '']);
      expect([sha256(file), sha256(good2)]).toEqual(before);
      return { file, lines: [ls.stderr, copy.stderr] };
    }

    /** Rewrite the committed text of pv1's first metadata area, with a correct checksum. */
    function rewriteText(file: string, pv: PhysicalVolume, edit: (text: Buffer) => Buffer): void {
      const copy = pv.copies[0];
      const loc = copy.header.locations[0];
      const at = copy.areaByte + loc.byteOffset;
      const text = edit(readAt(file, at, loc.sizeBytes));
      patch(file, at, text);
      const header = readAt(file, copy.areaByte, 512);
      header.writeBigUInt64LE(BigInt(text.length), 48);
      header.writeUInt32LE(lvmCrc(text), 56);
      header.writeUInt32LE(lvmCrc(header.subarray(4)), 0);
      patch(file, copy.areaByte, header);
    }

    test('a label whose checksum is wrong', async () => {
      const { file, lines } = await broken('label-crc', (f, pv) => patch(f, pv.label.labelSector * 512 + 40, Buffer.from('x')));
      const line = new RegExp(
        `^dmtool: label checksum 0x[0-9a-f]+ does not match its contents \\(0x[0-9a-f]+\\) \\(${file} sectors 1\\.\\.1\\)\\n$`,
      );
      expect(lines[0]).toMatch(line);
      expect(lines[1]).toMatch(line);
    });

    test('a metadata text whose checksum is wrong', async () => {
      const { file, lines } = await broken('text-crc', (f, pv) => {
        const c = pv.copies[0];
        patch(f, c.areaByte + c.header.locations[0].byteOffset + 10, Buffer.from('#'));
      });
      expect(lines[0]).toMatch(
        new RegExp(
          `^dmtool: metadata text checksum 0x[0-9a-f]+ does not match its \\d+ bytes \\(0x[0-9a-f]+\\) \\(${file} sectors \\d+\\.\\.\\d+\\)\\n$`,
        ),
      );
      expect(lines[1]).toBe(lines[0]);
    });

    test('a truncated metadata text', async () => {
      const { file, lines } = await broken('truncated', (f, pv) => rewriteText(f, pv, (t) => t.subarray(0, t.lastIndexOf('\n', 400) + 1)));
      expect(lines[0]).toMatch(
        new RegExp(`^dmtool: ${file} metadata at byte \\d+ line \\d+ column \\d+: expected a name or '}', found the end of the text\\n$`),
      );
      expect(lines[1]).toBe(lines[0]);
    });

    test('an unknown segment type', async () => {
      const { lines } = await broken('segment-type', (f, pv) =>
        rewriteText(f, pv, (t) => Buffer.from(t.toString('latin1').replace('type = "striped"', 'type = "stripex"'), 'latin1')),
      );
      expect(lines[0]).toBe('dmtool: VG vg0 LV data segment1: unknown segment type "stripex"\n');
      expect(lines[1]).toBe(lines[0]);
    });

    test('a missing PV', () => {
      const before = sha256(good1);
      const copy = dmtool(['copy', input, `${good1}:vg0/striped`]);
      expect(copy.stderr).toMatch(/^dmtool: VG vg0 is missing PV pv1 \([\w-]+, last seen as \/dev\/loop\d+\): give every PV of the VG\n$/);
      expect(copy.status).toBe(2);
      expect(sha256(good1)).toBe(before);
      const ls = dmtool(['lvm-ls', '--json', good1]);
      expect(ls.stderr).toBe('dmtool: warning: VG vg0 is missing pv1; its LVs on them are partial (p)\n');
      expect(ls.status).toBe(0);
      const rows = (JSON.parse(ls.stdout) as { report: { lv: { lv_name: string; lv_attr: string }[] }[] }).report[0].lv;
      expect(rows.map((r) => [r.lv_name, r.lv_attr])).toEqual([
        ['data', '-wi-XX----'],
        ['newer', '-wi-XX----'],
        ['striped', '-wi-XX--p-'],
      ]);
    });

    test('a read error on a metadata area: one line, exit 1, through the fault plan as any device read', () => {
      const faults = { rules: [{ op: 'read', code: 'EIO', path: 'good1.img', fromByte: 4096, toByte: 4608 }] };
      const line = `dmtool: EIO: read failed on ${good1} at sector 8 (+1 sectors): injected fault\n`;
      const ls = dmtool(['lvm-ls', good1, good2], { faults });
      expect([ls.status, ls.stderr, ls.stdout]).toEqual([1, line, '']);
      // The volume operand reads the metadata synchronously (the resolver opens devices synchronously): the same rule applies.
      const out = path.join(dir, 'out.bin');
      fs.writeFileSync(out, Buffer.alloc(MIB));
      const copy = dmtool(['copy', `${good1},${good2}:vg0/data`, out], { faults });
      expect([copy.status, copy.stderr, copy.stdout]).toEqual([1, line, '']);
    });

    test('a file that is not a PV', () => {
      const r = dmtool(['lvm-ls', input]);
      expect(r.stderr).toBe(`dmtool: no LVM2 label (LABELONE) in sectors 0-3: not a physical volume (${input} sectors 0..3)\n`);
      expect(r.status).toBe(2);
    });
  });
});
