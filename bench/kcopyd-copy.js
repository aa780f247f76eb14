'use strict';
// kcopyd copy: 1 GiB with O_DIRECT, dmtool vs dd (bs=1M iflag=direct
// oflag=direct), 1 destination and 3 destinations (vs 3 dd runs in a row).
const fs = require('fs');
const path = require('path');
const { benchDir, timed, dmtool, dropCaches, makeRandomFile, makeSparse, best, table, mbps } = require('./common');

const MIB = Number(process.env.DMTOOL_BENCH_MIB || 1024);
const RUNS = Number(process.env.DMTOOL_BENCH_RUNS || 2);

function main() {
  const dir = benchDir('copy');
  try {
    const src = path.join(dir, 'src.img');
    makeRandomFile(src, MIB);
    const dests = [1, 2, 3].map((i) => path.join(dir, `dst${i}.img`));
    dests.forEach((d) => makeSparse(d, MIB << 20));
    const bytes = MIB << 20;

    const dd = (dst) =>
      timed('dd', [`if=${src}`, `of=${dst}`, 'bs=1M', 'iflag=direct', 'oflag=direct', 'conv=notrunc,fdatasync', 'status=none']);
    const run = (fn) =>
      best(RUNS, () => {
        dropCaches();
        return fn();
      });

    const dd1 = run(() => dd(dests[0]));
    const dm1 = run(() => dmtool(['copy', src, dests[0], '--direct']));
    const dd3 = run(() => {
      const rs = dests.map(dd);
      return { seconds: rs.reduce((a, r) => a + r.seconds, 0), maxRssKiB: Math.max(...rs.map((r) => r.maxRssKiB)) };
    });
    const dm3 = run(() => dmtool(['copy', src, ...dests, '--direct']));
    for (const d of dests) {
      if (!fs.readFileSync(d).equals(fs.readFileSync(src))) throw new Error(`${d} differs from the source`);
    }

    const rows = [
      ['1 destination', 'dd bs=1M direct', dd1.seconds.toFixed(2), mbps(bytes, dd1.seconds), '1.00', (dd1.maxRssKiB / 1024).toFixed(0)],
      [
        '1 destination',
        'dmtool copy --direct',
        dm1.seconds.toFixed(2),
        mbps(bytes, dm1.seconds),
        (dd1.seconds / dm1.seconds).toFixed(2),
        (dm1.maxRssKiB / 1024).toFixed(0),
      ],
      [
        '3 destinations',
        '3 × dd in a row',
        dd3.seconds.toFixed(2),
        mbps(3 * bytes, dd3.seconds),
        '1.00',
        (dd3.maxRssKiB / 1024).toFixed(0),
      ],
      [
        '3 destinations',
        'dmtool copy --direct (one job)',
        dm3.seconds.toFixed(2),
        mbps(3 * bytes, dm3.seconds),
        (dd3.seconds / dm3.seconds).toFixed(2),
        (dm3.maxRssKiB / 1024).toFixed(0),
      ],
    ];
    console.log(`### kcopyd copy, ${MIB} MiB, O_DIRECT, best of ${RUNS}\n`);
    console.log(table(['case', 'tool', 'seconds', 'MB/s written', 'speed vs dd', 'peak RSS MiB'], rows));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main();
