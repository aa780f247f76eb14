'use strict';
// dm-snapshot merge benchmark: merge 256 MiB of exceptions (chunk 8 and 128
// sectors) back into the origin with `dmtool snapshot-merge`, in dmtool's
// batches and in the kernel's (one run of consecutive chunks per origin
// flush + table write), against dd copying the same number of bytes and fio
// writing 4 KiB blocks in random order (depth 32, O_DIRECT) on the same disk,
// in the same run. Peak RSS is also shown above Node's own baseline (a `node`
// that loads the same modules and exits, measured in the same run). Also the
// memory the exception table takes for one million exceptions, and status and
// list of a large sparse COW (10M exceptions by default).
//
// The COWs are written directly in the kernel's format (header, areas, data
// chunks in allocation order), for two layouts: "random" (origin chunks
// overwritten in random order: every run is one chunk) and "sequential"
// (origin overwritten front to back: runs as long as a metadata area).
const fs = require('fs');
const path = require('path');
const v8 = require('v8');
const vm = require('vm');
const { CLI, benchDir, dmtool, timed, dropCaches, makeRandomFile, table, mbps } = require('./common');
const { shuffled, writeTable } = require('./cow-tables');
const { CowGeometry, ExceptionTable, cowSectorsForOrigin } = require('@dmtool/dm-snapshot');

const DATA_MIB = Number(process.env.DMTOOL_BENCH_SNAP_MIB || 256);
const DATA_BYTES = DATA_MIB << 20;
const CHUNKS = (process.env.DMTOOL_BENCH_SNAP_CHUNKS || '8,128').split(',').map(Number);
const KERNEL_MODE_MAX_BATCHES = Number(process.env.DMTOOL_BENCH_KERNEL_MAX ?? 1e9);
const LARGE_EXCEPTIONS = Number(process.env.DMTOOL_BENCH_LARGE_EXCEPTIONS || 10_000_000);
const LAYOUTS = (process.env.DMTOOL_BENCH_SNAP_LAYOUTS || 'random,sequential').split(',');

function oldsFor(cs, layout) {
  const chunks = DATA_BYTES / (cs * 512);
  return layout === 'random' ? shuffled(chunks, 42 + cs) : Float64Array.from({ length: chunks }, (_, i) => i);
}

/** What the origin holds after the merge: every origin chunk from its COW data chunk. */
function expectedOrigin(src, cs, layout) {
  const olds = oldsFor(cs, layout);
  const g = new CowGeometry(cs, 0);
  const cow = fs.readFileSync(src.cow);
  const out = Buffer.alloc(DATA_BYTES);
  for (let j = 0; j < olds.length; j++)
    cow.copy(out, olds[j] * g.chunkBytes, g.chunkToByte(g.dataChunkOfIndex(j)), g.chunkToByte(g.dataChunkOfIndex(j) + 1));
  return out;
}

function prepare(dir, cs, layout) {
  const origin = path.join(dir, `origin-${cs}-${layout}.img`);
  const cow = path.join(dir, `cow-${cs}-${layout}.img`);
  makeRandomFile(origin, DATA_MIB);
  const cowMiB = Math.ceil((cowSectorsForOrigin(DATA_BYTES / 512, cs) * 512) / (1 << 20));
  makeRandomFile(cow, cowMiB);
  writeTable(cow, cs, oldsFor(cs, layout));
  return { origin, cow };
}

/** fio: 4 KiB writes in random order over the whole file, 32 in flight, O_DIRECT, fsync at the end; bytes per second. */
function fioRandWrite(file) {
  const r = timed('fio', [
    '--name=randwrite',
    `--filename=${file}`,
    `--size=${DATA_MIB}M`,
    '--rw=randwrite',
    '--bs=4k',
    '--iodepth=32',
    '--direct=1',
    '--ioengine=libaio',
    '--end_fsync=1',
    '--randrepeat=0',
    '--norandommap=0',
    '--output-format=json',
  ]);
  const job = JSON.parse(r.stdout).jobs[0];
  if (job.write.io_bytes !== DATA_BYTES) throw new Error(`fio wrote ${job.write.io_bytes} bytes, expected ${DATA_BYTES}`);
  // The whole process, as for dd and dmtool (fio's start is a few ms; the final fsync is included).
  return { seconds: r.seconds, maxRssKiB: r.maxRssKiB };
}

/** Node's own footprint with the CLI's modules loaded: what every RSS figure is compared with. */
function nodeBaseline() {
  const main = path.join(__dirname, '..', 'packages', 'cli', 'dist', 'main.js');
  return timed(process.execPath, ['-e', `require(${JSON.stringify(main)}); require('@dmtool/dm-snapshot'); require('@dmtool/kcopyd')`], {
    cwd: path.join(__dirname, '..'),
  });
}

function copyPair(src, dir, tag) {
  const dst = { origin: path.join(dir, `run-origin-${tag}.img`), cow: path.join(dir, `run-cow-${tag}.img`) };
  fs.copyFileSync(src.origin, dst.origin);
  fs.copyFileSync(src.cow, dst.cow);
  return dst;
}

function measureTable(n) {
  v8.setFlagsFromString('--expose_gc');
  const gc = vm.runInNewContext('gc');
  gc();
  const before = process.memoryUsage();
  const t = new ExceptionTable();
  for (let i = 0; i < n; i++) t.append(i * 3 + 1, 2 + i + Math.floor(i / 256));
  gc();
  const after = process.memoryUsage();
  const extra = after.heapUsed + after.arrayBuffers - (before.heapUsed + before.arrayBuffers);
  return { extra, typed: t.memoryBytes, size: t.size };
}

/** A sparse COW holding n exceptions at chunk 8 (only the metadata areas are written; the data chunks are holes). */
function largeSparseCow(dir, n) {
  const cs = 8;
  const cow = path.join(dir, 'cow-large.img');
  const origin = path.join(dir, 'origin-large.img');
  const g = new CowGeometry(cs, 0);
  const cowBytes = (g.dataChunkOfIndex(n) + 2) * 4096;
  fs.writeFileSync(cow, '');
  fs.truncateSync(cow, cowBytes);
  fs.writeFileSync(origin, '');
  fs.truncateSync(origin, n * 4096);
  const olds = new Float64Array(n);
  for (let i = 0; i < n; i++) olds[i] = (i * 7919) % n;
  writeTable(cow, cs, olds);
  return { cow, origin };
}

function statusOfLargeTable(large, n) {
  dropCaches();
  const r = dmtool(['snapshot-status', large.cow, '--origin', large.origin, '--json']);
  const out = JSON.parse(r.stdout);
  if (out.exceptions !== n) throw new Error(`read ${out.exceptions} exceptions, wrote ${n}`);
  return { seconds: r.seconds, maxRssKiB: r.maxRssKiB, status: out.status };
}

function listOfLargeTable(large, n) {
  dropCaches();
  const r = timed('sh', [
    '-c',
    `${JSON.stringify(process.execPath)} ${JSON.stringify(CLI)} snapshot-list "$1" --origin "$2" | wc -l`,
    'sh',
    large.cow,
    large.origin,
  ]);
  // /usr/bin/time measures sh and its children together: the peak of the largest one, here dmtool.
  const lines = Number(r.stdout.trim());
  if (lines !== n + 2) throw new Error(`listed ${lines} lines, expected ${n + 2}`);
  return { seconds: r.seconds, maxRssKiB: r.maxRssKiB };
}

const mib = (kib) => (kib / 1024).toFixed(0);
const ratio = (a, b) => (a / b).toFixed(2);

function main() {
  const dir = benchDir('snapmerge');
  const rows = [];
  const json = [];
  const base = nodeBaseline();
  // Before anything else allocates: the heap delta is the table's alone.
  const m = measureTable(1_000_000);
  const aboveBase = (kib) => mib(kib - base.maxRssKiB);
  let large;
  try {
    for (const cs of CHUNKS) {
      for (const layout of LAYOUTS) {
        const src = prepare(dir, cs, layout);
        const exceptions = DATA_BYTES / (cs * 512);
        // dd: the same bytes, one sequential stream.
        let p = copyPair(src, dir, 'dd');
        dropCaches();
        const dd = timed('dd', [`if=${p.cow}`, `of=${p.origin}`, 'bs=1M', `count=${DATA_MIB}`, 'conv=notrunc,fdatasync', 'status=none']);
        // fio: as many 4 KiB writes in random order, on a file of the same size on the same disk.
        dropCaches();
        const fio = fioRandWrite(p.origin);
        const label = `chunk ${cs}, ${layout}`;
        rows.push([
          label,
          'dd bs=1M conv=fdatasync',
          dd.seconds.toFixed(2),
          '-',
          mbps(DATA_BYTES, dd.seconds),
          '1.00',
          ratio(fio.seconds, dd.seconds),
          '-',
          mib(dd.maxRssKiB),
          '-',
        ]);
        rows.push([
          label,
          'fio 4k randwrite, depth 32, direct',
          fio.seconds.toFixed(2),
          '-',
          mbps(DATA_BYTES, fio.seconds),
          ratio(dd.seconds, fio.seconds),
          '1.00',
          '-',
          mib(fio.maxRssKiB),
          '-',
        ]);
        for (const mode of ['dmtool', 'kernel']) {
          const batchesIfKernel = layout === 'random' ? exceptions : Math.ceil(exceptions / (cs * 32));
          if (mode === 'kernel' && batchesIfKernel > KERNEL_MODE_MAX_BATCHES) continue;
          p = copyPair(src, dir, mode);
          dropCaches();
          const args = ['snapshot-merge', p.origin, p.cow, '--json', ...(mode === 'kernel' ? ['--kernel-batches'] : [])];
          const r = dmtool(args);
          const out = JSON.parse(r.stdout);
          if (out.mergedBytes !== DATA_BYTES || out.status !== `${2 * cs}/${fs.statSync(p.cow).size / 512} ${2 * cs}`) {
            throw new Error(`unexpected merge result ${r.stdout}`);
          }
          if (!fs.readFileSync(p.origin).equals(expectedOrigin(src, cs, layout))) throw new Error(`${label}: merged origin differs`);
          rows.push([
            label,
            mode === 'kernel' ? 'dmtool --kernel-batches (kernel order)' : 'dmtool snapshot-merge',
            r.seconds.toFixed(2),
            out.seconds.toFixed(2),
            mbps(DATA_BYTES, r.seconds),
            ratio(dd.seconds, r.seconds),
            ratio(fio.seconds, r.seconds),
            String(out.batches),
            mib(r.maxRssKiB),
            aboveBase(r.maxRssKiB),
          ]);
          json.push({
            cs,
            layout,
            mode,
            seconds: r.seconds,
            mergeSeconds: out.seconds,
            ddSeconds: dd.seconds,
            fioSeconds: fio.seconds,
            batches: out.batches,
            runs: out.runs,
            exceptions,
            maxRssKiB: r.maxRssKiB,
            baselineKiB: base.maxRssKiB,
          });
        }
        for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f));
      }
    }
    if (LARGE_EXCEPTIONS > 0) {
      const cow = largeSparseCow(dir, LARGE_EXCEPTIONS);
      large = { status: statusOfLargeTable(cow, LARGE_EXCEPTIONS), list: listOfLargeTable(cow, LARGE_EXCEPTIONS) };
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`## dm-snapshot merge: ${DATA_MIB} MiB of exceptions\n`);
  console.log(`Node baseline (node loading the CLI's modules): ${mib(base.maxRssKiB)} MiB peak RSS\n`);
  console.log(
    table(
      ['COW', 'tool', 'seconds', 'merge seconds', 'MB/s', 'speed vs dd', 'speed vs fio', 'batches', 'peak RSS MiB', 'RSS above Node MiB'],
      rows,
    ),
  );
  console.log('\n## dm-snapshot exception table memory\n');
  console.log(
    table(
      ['exceptions', 'typed arrays MiB', 'extra heap + array buffers MiB', 'bytes per exception'],
      [[String(m.size), (m.typed / 2 ** 20).toFixed(1), (m.extra / 2 ** 20).toFixed(1), (m.extra / m.size).toFixed(1)]],
    ),
  );
  if (large) {
    const n = LARGE_EXCEPTIONS;
    const bound = (kib) => `${mib(kib - base.maxRssKiB)} (bound ${(32 + (8 * n) / 2 ** 20).toFixed(0)})`;
    console.log('');
    console.log(
      table(
        ['command', 'seconds', 'peak RSS MiB', 'RSS above Node MiB'],
        [
          [
            `snapshot-status --origin (${n} exceptions, chunk 8, validated): ${large.status.status}`,
            large.status.seconds.toFixed(2),
            mib(large.status.maxRssKiB),
            bound(large.status.maxRssKiB),
          ],
          [
            `snapshot-list --origin (${n} exceptions) \\| wc -l`,
            large.list.seconds.toFixed(2),
            mib(large.list.maxRssKiB),
            bound(large.list.maxRssKiB),
          ],
        ],
      ),
    );
  }
  if (process.env.DMTOOL_BENCH_JSON)
    fs.writeFileSync(
      process.env.DMTOOL_BENCH_JSON,
      JSON.stringify({ baselineKiB: base.maxRssKiB, merges: json, table: m, large }, null, 2),
    );
}

main();
