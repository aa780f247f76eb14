'use strict';
// LVM benchmark: (1) `dmtool snapshot-merge PV:vg0/snap` of a snapshot whose
// origin and COW LVs lie inside a PV image, against the same merge of the
// same origin and COW as loose files (the LV mapping's cost); (2) `dmtool
// lvm-ls` of a VG with 1,000 LVs. The PV is written directly in LVM2's
// format (label, one metadata area, extents of 4 MiB from 1 MiB), as
// pvcreate, vgcreate and lvcreate would lay it out.
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');
const { benchDir, dmtool, dropCaches, makeRandomFile, table } = require('./common');
const { shuffled, writeTable } = require('./cow-tables');
const { cowSectorsForOrigin } = require('@dmtool/dm-snapshot');
const { lvmCrc, MDA_MAGIC } = require('@dmtool/lvm');

const DATA_MIB = Number(process.env.DMTOOL_BENCH_LVM_MIB || 256);
const RUNS = Number(process.env.DMTOOL_BENCH_RUNS || 3);
const LV_COUNT = Number(process.env.DMTOOL_BENCH_LVM_LVS || 1000);
const MIB = 1 << 20;
const PE_START = MIB;
const MDA_BYTE = 4096;
const MDA_BYTES = PE_START - MDA_BYTE;
const UUID = 'bench'.padEnd(32, '0');
const dashed = (u) =>
  `${u.slice(0, 6)}-${u.slice(6, 10)}-${u.slice(10, 14)}-${u.slice(14, 18)}-${u.slice(18, 22)}-${u.slice(22, 26)}-${u.slice(26)}`;

function lvText(name, i, extents, pe, segment = '') {
  const id = dashed(`lv${String(i).padStart(30, '0')}`);
  const seg =
    segment ||
    `start_extent = 0\n\t\t\t\textent_count = ${extents}\n\t\t\t\ttype = "striped"\n\t\t\t\tstripe_count = 1\n\t\t\t\tstripes = [\n\t\t\t\t\t"pv0", ${pe}\n\t\t\t\t]`;
  return `\t\t${name} {\n\t\t\tid = "${id}"\n\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]\n\t\t\tflags = []\n\t\t\tsegment_count = 1\n\n\t\t\tsegment1 {\n\t\t\t\t${seg}\n\t\t\t}\n\t\t}\n`;
}

function vgText(extentSectors, peCount, lvs) {
  return (
    `vg0 {\n\tid = "${dashed('vg' + '0'.repeat(30))}"\n\tseqno = 1\n\tformat = "lvm2"\n\tstatus = ["RESIZEABLE", "READ", "WRITE"]\n\tflags = []\n\textent_size = ${extentSectors}\n\tmax_lv = 0\n\tmax_pv = 0\n\tmetadata_copies = 0\n\n` +
    `\tphysical_volumes {\n\n\t\tpv0 {\n\t\t\tid = "${dashed(UUID)}"\n\t\t\tdevice = "/dev/bench"\n\t\t\tstatus = ["ALLOCATABLE"]\n\t\t\tflags = []\n\t\t\tpe_start = ${PE_START / 512}\n\t\t\tpe_count = ${peCount}\n\t\t}\n\t}\n\n` +
    `\tlogical_volumes {\n\n${lvs.join('\n')}\t}\n}\ncontents = "Text Format Volume Group"\nversion = 1\ndescription = ""\ncreation_host = "bench"\ncreation_time = 1700000000\n`
  );
}

/** A PV image of `bytes` holding `text` in its one metadata area. */
function writePv(file, bytes, text) {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, bytes);
  const label = Buffer.alloc(512);
  label.write('LABELONE', 0, 'latin1');
  label.writeBigUInt64LE(1n, 8);
  label.writeUInt32LE(32, 20);
  label.write('LVM2 001', 24, 'latin1');
  label.write(UUID, 32, 'latin1');
  label.writeBigUInt64LE(BigInt(bytes), 64);
  [PE_START, 0, 0, 0, MDA_BYTE, MDA_BYTES, 0, 0].forEach((v, i) => label.writeBigUInt64LE(BigInt(v), 72 + i * 8));
  label.writeUInt32LE(2, 136);
  label.writeUInt32LE(lvmCrc(label.subarray(20)), 16);
  const stored = Buffer.concat([Buffer.from(text), Buffer.alloc(1)]);
  if (stored.length > MDA_BYTES / 2) throw new Error(`metadata of ${stored.length} bytes does not fit`);
  const h = Buffer.alloc(512);
  h.write(MDA_MAGIC, 4, 'latin1');
  h.writeUInt32LE(1, 20);
  h.writeBigUInt64LE(BigInt(MDA_BYTE), 24);
  h.writeBigUInt64LE(BigInt(MDA_BYTES), 32);
  h.writeBigUInt64LE(512n, 40);
  h.writeBigUInt64LE(BigInt(stored.length), 48);
  h.writeUInt32LE(lvmCrc(stored), 56);
  h.writeUInt32LE(lvmCrc(h.subarray(4)), 0);
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, label, 0, 512, 512);
    fs.writeSync(fd, h, 0, 512, MDA_BYTE);
    fs.writeSync(fd, stored, 0, stored.length, MDA_BYTE + 512);
  } finally {
    fs.closeSync(fd);
  }
}

/** A COW whose exceptions cover every origin chunk, in random or sequential order. */
function writeCow(cowFile, cs, chunks, layout) {
  const olds = layout === 'random' ? shuffled(chunks, 42) : Float64Array.from({ length: chunks }, (_, i) => i);
  writeTable(cowFile, cs, olds);
}

function ddInto(src, dst, seekMiB) {
  execFileSync('dd', [`if=${src}`, `of=${dst}`, 'bs=1M', `seek=${seekMiB}`, 'conv=notrunc', 'status=none']);
}

function mergeCase(dir, cs, layout) {
  const extentSectors = 8192;
  const extentMiB = 4;
  const origin = path.join(dir, 'origin.img');
  const cow = path.join(dir, 'cow.img');
  makeRandomFile(origin, DATA_MIB);
  const cowMiB = Math.ceil((cowSectorsForOrigin((DATA_MIB * MIB) / 512, cs) * 512) / MIB / extentMiB) * extentMiB;
  makeRandomFile(cow, cowMiB);
  writeCow(cow, cs, (DATA_MIB * MIB) / (cs * 512), layout);
  const originExtents = DATA_MIB / extentMiB;
  const cowExtents = cowMiB / extentMiB;
  const snapSeg = `start_extent = 0\n\t\t\t\textent_count = ${originExtents}\n\t\t\t\ttype = "snapshot"\n\t\t\t\tchunk_size = ${cs}\n\t\t\t\torigin = "data"\n\t\t\t\tcow_store = "snap"`;
  const text = vgText(extentSectors, originExtents + cowExtents, [
    lvText('data', 0, originExtents, 0),
    lvText('snap', 1, cowExtents, originExtents),
    lvText('snapshot0', 2, originExtents, 0, snapSeg),
  ]);
  const pv = path.join(dir, 'pv.img');
  const rows = [];
  let loose;
  let inPv;
  for (let run = 0; run < RUNS; run++) {
    const o = path.join(dir, 'run-origin.img');
    const c = path.join(dir, 'run-cow.img');
    fs.copyFileSync(origin, o);
    fs.copyFileSync(cow, c);
    dropCaches();
    const a = dmtool(['snapshot-merge', o, c, '--json']);
    if (!loose || a.seconds < loose.seconds) loose = a;
    writePv(pv, PE_START + (originExtents + cowExtents) * extentMiB * MIB, text);
    ddInto(origin, pv, PE_START / MIB);
    ddInto(cow, pv, PE_START / MIB + DATA_MIB);
    dropCaches();
    const b = dmtool(['snapshot-merge', `${pv}:vg0/snap`, '--json']);
    if (!inPv || b.seconds < inPv.seconds) inPv = b;
    const same = execFileSync('cmp', ['-n', String(DATA_MIB * MIB), o, pv, '0', String(PE_START)], { encoding: 'utf8' });
    if (same !== '') throw new Error('the merged origins differ');
  }
  const mergedBytes = JSON.parse(inPv.stdout).mergedBytes;
  if (mergedBytes !== DATA_MIB * MIB) throw new Error(`merged ${mergedBytes} bytes`);
  for (const [tool, r] of [
    ['loose files: ORIGIN COW', loose],
    ['in a PV image: PV:vg0/snap', inPv],
  ]) {
    rows.push([
      `chunk ${cs}, ${layout}`,
      tool,
      r.seconds.toFixed(2),
      (loose.seconds / r.seconds).toFixed(2),
      (r.maxRssKiB / 1024).toFixed(0),
    ]);
  }
  return rows;
}

function lvmLsCase(dir) {
  const lvs = Array.from({ length: LV_COUNT }, (_, i) => lvText(`lv${i}`, i, 1, i));
  const pv = path.join(dir, 'many.img');
  writePv(pv, PE_START + LV_COUNT * MIB, vgText(2048, LV_COUNT, lvs));
  const rows = [];
  for (const json of [false, true]) {
    let top;
    for (let run = 0; run < RUNS; run++) {
      const r = dmtool(['lvm-ls', pv, ...(json ? ['--json'] : [])]);
      if (!top || r.seconds < top.seconds) top = r;
    }
    const lines = json ? JSON.parse(top.stdout).report[0].lv.length : top.stdout.trim().split('\n').length - 1;
    if (lines !== LV_COUNT) throw new Error(`listed ${lines} LVs`);
    rows.push([`lvm-ls${json ? ' --json' : ''}`, String(LV_COUNT), top.seconds.toFixed(2), (top.maxRssKiB / 1024).toFixed(0)]);
  }
  return rows;
}

function main() {
  const dir = benchDir('lvm');
  let merges = [];
  let ls;
  try {
    for (const layout of ['random', 'sequential']) {
      merges = merges.concat(mergeCase(dir, 8, layout));
      for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f));
    }
    ls = lvmLsCase(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`## LVM: snapshot-merge of ${DATA_MIB} MiB in a PV image vs loose files, best of ${RUNS}\n`);
  console.log(table(['COW', 'origin and COW', 'seconds', 'speed vs loose', 'peak RSS MiB'], merges));
  console.log(`\n## LVM: lvm-ls of a VG with ${LV_COUNT} LVs, best of ${RUNS}\n`);
  console.log(table(['command', 'LVs', 'seconds', 'peak RSS MiB'], ls));
}

main();
