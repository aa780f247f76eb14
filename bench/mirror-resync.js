'use strict';
// dm-mirror resync: 1 GiB legs, O_DIRECT, `dmtool mirror-resync` vs dd
// (bs=1M direct) in the same run: 2 legs (vs one dd), 3 legs (vs two dd in a
// row); then resync time against the dirty fraction of the log (10/50/100 %),
// and the kernel's one-region-at-a-time pace (--parallel 1) for reference.
const fs = require('fs');
const path = require('path');
const { Bitmap, encodeDiskLog } = require('@dmtool/dm-mirror');
const { benchDir, timed, dmtool, dropCaches, makeRandomFile, makeSparse, best, table, mbps } = require('./common');

const MIB = Number(process.env.DMTOOL_BENCH_MIB || 1024);
const RUNS = Number(process.env.DMTOOL_BENCH_RUNS || 2);
const REGION = 1024; // sectors: LVM's default 512 KiB

function writeLog(file, regions, dirtyEvery) {
  const clean = new Bitmap(regions);
  clean.fill(true);
  let dirty = 0;
  for (let r = 0; r < regions; r++) {
    if (dirtyEvery > 0 && r % dirtyEvery === 0) {
      clean.clear(r);
      dirty++;
    }
  }
  const fd = fs.openSync(file, 'r+');
  fs.writeSync(fd, encodeDiskLog(regions, clean, 512), 0, undefined, 0);
  fs.closeSync(fd);
  return dirty;
}

function sameContent(a, b) {
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  const ba = Buffer.alloc(1 << 24);
  const bb = Buffer.alloc(1 << 24);
  try {
    for (let pos = 0; ; pos += ba.length) {
      const na = fs.readSync(fa, ba, 0, ba.length, pos);
      const nb = fs.readSync(fb, bb, 0, bb.length, pos);
      if (na !== nb || ba.compare(bb, 0, nb, 0, na) !== 0) return false;
      if (na === 0) return true;
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
  }
}

function main() {
  const dir = benchDir('mirror');
  try {
    const bytes = MIB << 20;
    const regions = Math.ceil(bytes / 512 / REGION);
    const legs = [0, 1, 2].map((i) => path.join(dir, `leg${i}.img`));
    makeRandomFile(legs[0], MIB);
    const log = path.join(dir, 'log.img');
    makeSparse(log, 1 << 20);
    const resetLegs = () => legs.slice(1).forEach((l) => makeSparse(l, bytes));

    const run = (prepare, fn) =>
      best(RUNS, () => {
        prepare();
        dropCaches();
        return fn();
      });
    const dd = (dst) =>
      timed('dd', [`if=${legs[0]}`, `of=${dst}`, 'bs=1M', 'iflag=direct', 'oflag=direct', 'conv=notrunc,fdatasync', 'status=none']);
    const resync = (n, extra = []) => dmtool(['mirror-resync', '--log', log, '--direct', ...legs.slice(0, n), ...extra]);
    const check = (n) => {
      for (const l of legs.slice(1, n)) if (!sameContent(legs[0], l)) throw new Error(`${l} differs from ${legs[0]} after resync`);
    };

    const dd2 = run(resetLegs, () => dd(legs[1]));
    const m2 = run(
      () => {
        resetLegs();
        writeLog(log, regions, 1);
      },
      () => resync(2),
    );
    check(2);
    const dd3 = run(resetLegs, () => {
      const rs = [dd(legs[1]), dd(legs[2])];
      return { seconds: rs[0].seconds + rs[1].seconds, maxRssKiB: Math.max(rs[0].maxRssKiB, rs[1].maxRssKiB) };
    });
    const m3 = run(
      () => {
        resetLegs();
        writeLog(log, regions, 1);
      },
      () => resync(3),
    );
    check(3);
    const m1p = run(
      () => {
        resetLegs();
        writeLog(log, regions, 1);
      },
      () => resync(2, ['--parallel', '1']),
    );
    check(2);

    const rows = [
      ['2 legs', 'dd bs=1M direct', dd2.seconds.toFixed(2), mbps(bytes, dd2.seconds), '1.00', (dd2.maxRssKiB / 1024).toFixed(0)],
      [
        '2 legs',
        'dmtool mirror-resync --direct',
        m2.seconds.toFixed(2),
        mbps(bytes, m2.seconds),
        (dd2.seconds / m2.seconds).toFixed(2),
        (m2.maxRssKiB / 1024).toFixed(0),
      ],
      [
        '2 legs',
        'dmtool mirror-resync --direct --parallel 1',
        m1p.seconds.toFixed(2),
        mbps(bytes, m1p.seconds),
        (dd2.seconds / m1p.seconds).toFixed(2),
        (m1p.maxRssKiB / 1024).toFixed(0),
      ],
      ['3 legs', '2 × dd in a row', dd3.seconds.toFixed(2), mbps(2 * bytes, dd3.seconds), '1.00', (dd3.maxRssKiB / 1024).toFixed(0)],
      [
        '3 legs',
        'dmtool mirror-resync --direct (one job per region)',
        m3.seconds.toFixed(2),
        mbps(2 * bytes, m3.seconds),
        (dd3.seconds / m3.seconds).toFixed(2),
        (m3.maxRssKiB / 1024).toFixed(0),
      ],
    ];
    console.log(`### dm-mirror resync, ${MIB} MiB legs, region ${REGION} sectors, O_DIRECT, best of ${RUNS}\n`);
    console.log(table(['case', 'tool', 'seconds', 'MB/s written', 'speed vs dd', 'peak RSS MiB'], rows));

    const frac = [];
    for (const [label, every] of [
      ['10 %', 10],
      ['50 %', 2],
      ['100 %', 1],
    ]) {
      let dirty = 0;
      const r = run(
        () => {
          resetLegs();
          dirty = writeLog(log, regions, every);
        },
        () => resync(2, ['--json']),
      );
      const j = JSON.parse(r.stdout);
      if (j.regionsSynced !== dirty) throw new Error(`expected ${dirty} regions resynced, got ${j.regionsSynced}`);
      frac.push({ label, dirty, seconds: r.seconds, resyncSeconds: j.elapsedMs / 1000 });
    }
    const full = frac[frac.length - 1];
    console.log(`\n### resync time vs dirty fraction, 2 legs, ${regions} regions\n`);
    console.log(
      table(
        ['dirty', 'regions copied', 'process seconds', 'resync seconds', 'resync time vs 100 %'],
        frac.map((f) => [
          f.label,
          String(f.dirty),
          f.seconds.toFixed(2),
          f.resyncSeconds.toFixed(2),
          `${((f.resyncSeconds / full.resyncSeconds) * 100).toFixed(0)} %`,
        ]),
      ),
    );
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main();
