'use strict';
// dm-snapshot merge benchmark: merge 256 MiB of exceptions (chunk 8 and 128
// sectors) back into the origin with `dmtool snapshot-merge`, in dmtool's
// batches and in the kernel's (one run of consecutive chunks per origin
// flush + table write), against dd copying the same number of bytes. Also the
// memory the exception table takes for one million exceptions.
//
// The COWs are written directly in the kernel's format (header, areas, data
// chunks in allocation order), for two layouts: "random" (origin chunks
// overwritten in random order: every run is one chunk) and "sequential"
// (origin overwritten front to back: runs as long as a metadata area).
const fs = require('fs');
const path = require('path');
const v8 = require('v8');
const vm = require('vm');
const { benchDir, dmtool, timed, dropCaches, makeRandomFile, table, mbps } = require('./common');
const { CowGeometry, ExceptionTable, encodeEntry, encodeHeader, cowSectorsForOrigin } = require('@dmtool/dm-snapshot');

const DATA_MIB = Number(process.env.DMTOOL_BENCH_SNAP_MIB || 256);
const DATA_BYTES = DATA_MIB << 20;
const CHUNKS = (process.env.DMTOOL_BENCH_SNAP_CHUNKS || '8,128').split(',').map(Number);
const KERNEL_MODE_MAX_BATCHES = Number(process.env.DMTOOL_BENCH_KERNEL_MAX || 1e9);

function shuffled(n, seed) {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  let s = seed >>> 0;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    const t = a[i];
    a[i] = a[j];
    a[j] = t;
  }
  return a;
}

/** Write header + areas of a COW whose j-th exception maps origin chunk olds[j] to the kernel's j-th data chunk. */
function writeTable(cowFile, cs, olds) {
  const g = new CowGeometry(cs, fs.statSync(cowFile).size / 512);
  const fd = fs.openSync(cowFile, 'r+');
  try {
    const chunk = Buffer.alloc(g.chunkBytes);
    encodeHeader(chunk, { valid: true, chunkSectors: cs });
    fs.writeSync(fd, chunk, 0, chunk.length, 0);
    const E = g.exceptionsPerArea;
    for (let area = 0; area * E <= olds.length; area++) {
      chunk.fill(0);
      for (let j = area * E; j < Math.min(olds.length, (area + 1) * E); j++)
        encodeEntry(chunk, j - area * E, olds[j], g.dataChunkOfIndex(j));
      fs.writeSync(fd, chunk, 0, chunk.length, g.chunkToByte(g.areaChunk(area)));
    }
  } finally {
    fs.closeSync(fd);
  }
}

function prepare(dir, cs, layout) {
  const origin = path.join(dir, `origin-${cs}-${layout}.img`);
  const cow = path.join(dir, `cow-${cs}-${layout}.img`);
  const chunks = DATA_BYTES / (cs * 512);
  makeRandomFile(origin, DATA_MIB);
  const cowMiB = Math.ceil((cowSectorsForOrigin(DATA_BYTES / 512, cs) * 512) / (1 << 20));
  makeRandomFile(cow, cowMiB);
  const olds = layout === 'random' ? shuffled(chunks, 42 + cs) : Float64Array.from({ length: chunks }, (_, i) => i);
  writeTable(cow, cs, olds);
  return { origin, cow };
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

/** A sparse COW holding n exceptions at chunk 8 (only the metadata areas are written). */
function statusOfLargeTable(dir, n) {
  const cs = 8;
  const cow = path.join(dir, 'cow-1m.img');
  const origin = path.join(dir, 'origin-1m.img');
  const g = new CowGeometry(cs, 0);
  const cowBytes = (g.dataChunkOfIndex(n) + 2) * 4096;
  fs.writeFileSync(cow, '');
  fs.truncateSync(cow, cowBytes);
  fs.writeFileSync(origin, '');
  fs.truncateSync(origin, n * 4096);
  writeTable(
    cow,
    cs,
    Float64Array.from({ length: n }, (_, i) => (i * 7919) % n),
  );
  dropCaches();
  const r = dmtool(['snapshot-status', cow, '--origin', origin, '--json']);
  const out = JSON.parse(r.stdout);
  if (out.exceptions !== n) throw new Error(`read ${out.exceptions} exceptions, wrote ${n}`);
  return { seconds: r.seconds, maxRssKiB: r.maxRssKiB, status: out.status };
}

function main() {
  const dir = benchDir('snapmerge');
  const rows = [];
  const json = [];
  try {
    for (const cs of CHUNKS) {
      for (const layout of ['random', 'sequential']) {
        const src = prepare(dir, cs, layout);
        const exceptions = DATA_BYTES / (cs * 512);
        // dd: the same bytes, one sequential stream.
        let p = copyPair(src, dir, 'dd');
        dropCaches();
        const dd = timed('dd', [`if=${p.cow}`, `of=${p.origin}`, 'bs=1M', `count=${DATA_MIB}`, 'conv=notrunc,fdatasync', 'status=none']);
        rows.push([
          `chunk ${cs}, ${layout}`,
          'dd bs=1M conv=fdatasync',
          dd.seconds.toFixed(2),
          mbps(DATA_BYTES, dd.seconds),
          '1.00',
          '-',
          (dd.maxRssKiB / 1024).toFixed(0),
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
          rows.push([
            `chunk ${cs}, ${layout}`,
            mode === 'kernel' ? 'dmtool --kernel-batches (kernel order)' : 'dmtool snapshot-merge',
            r.seconds.toFixed(2),
            mbps(DATA_BYTES, r.seconds),
            (dd.seconds / r.seconds).toFixed(2),
            String(out.batches),
            (r.maxRssKiB / 1024).toFixed(0),
          ]);
          json.push({ cs, layout, mode, seconds: r.seconds, ddSeconds: dd.seconds, batches: out.batches, runs: out.runs, exceptions });
        }
        for (const f of fs.readdirSync(dir)) fs.rmSync(path.join(dir, f));
      }
    }
    var large = statusOfLargeTable(dir, 1_000_000);
    var baseline = dmtool(['--version']);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  console.log(`## dm-snapshot merge: ${DATA_MIB} MiB of exceptions\n`);
  console.log(table(['COW', 'tool', 'seconds', 'MB/s', 'speed vs dd', 'batches', 'peak RSS MiB'], rows));
  const m = measureTable(1_000_000);
  console.log('\n## dm-snapshot exception table memory\n');
  console.log(
    table(
      ['exceptions', 'typed arrays MiB', 'extra heap + array buffers MiB', 'bytes per exception'],
      [[String(m.size), (m.typed / 2 ** 20).toFixed(1), (m.extra / 2 ** 20).toFixed(1), (m.extra / m.size).toFixed(1)]],
    ),
  );
  console.log('');
  console.log(
    table(
      ['command', 'seconds', 'peak RSS MiB', 'dmtool --version peak RSS MiB'],
      [
        [
          `snapshot-status --origin (1M exceptions, chunk 8, validated): ${large.status}`,
          large.seconds.toFixed(2),
          (large.maxRssKiB / 1024).toFixed(0),
          (baseline.maxRssKiB / 1024).toFixed(0),
        ],
      ],
    ),
  );
  if (process.env.DMTOOL_BENCH_JSON) fs.writeFileSync(process.env.DMTOOL_BENCH_JSON, JSON.stringify({ merges: json, table: m }, null, 2));
}

main();
