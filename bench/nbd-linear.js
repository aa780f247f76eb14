'use strict';
// NBD serving benchmark, four parts in one run:
// 1. the same file served by `dmtool serve` (a linear export of the whole
//    file), `nbdkit file` and `qemu-nbd`, each on a unix socket: nbdcopy
//    sequential reads and writes (its defaults), page cache dropped first;
//    fio's nbd engine, 4 KiB random reads and writes at depth 16, file in
//    the page cache. Runs interleave the servers (a new server each time);
//    best of DMTOOL_BENCH_RUNS.
// 2. dmtool serve's snapshot-origin (one fresh snapshot, chunk size
//    DMTOOL_BENCH_CHUNK_SECTORS, every chunk a first write) and a 2-leg
//    mirror with a disk log (region 1024 sectors) written by nbdcopy,
//    against the plain linear export in the same runs.
// 3. 64 clients connected at once, each writing and reading 4 x 256 KiB
//    all at once; each server's peak RSS (VmHWM) once all are connected and
//    after the work.
// Prints seconds, MB/s or IOPS, and dmtool's speed relative to each peer.
const { spawn, spawnSync, execFileSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { CLI, benchDir, timed, dropCaches, makeRandomFile, makeSparse, table, mbps } = require('./common');

const MIB = Number(process.env.DMTOOL_BENCH_NBD_MIB || 256);
const BYTES = MIB << 20;
const RUNS = Number(process.env.DMTOOL_BENCH_RUNS || 2);
const FIO_SECONDS = Number(process.env.DMTOOL_BENCH_FIO_SECONDS || 5);
/** LVM's default snapshot chunk size (lvcreate -s: 4 KiB). */
const CHUNK_SECTORS = Number(process.env.DMTOOL_BENCH_CHUNK_SECTORS || 8);
const REGION_SECTORS = 1024;
const CLIENTS = 64;

function have(cmd, versionArg = '--version') {
  return spawnSync(cmd, [versionArg], { stdio: 'ignore' }).status === 0;
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitForSocket(child, uri, what) {
  const until = Date.now() + 15000;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}) before listening`);
    if (spawnSync('nbdinfo', ['--size', uri], { stdio: 'ignore' }).status === 0) return;
    await sleep(50);
  }
  throw new Error(`${what} did not listen on ${uri}`);
}

function peakRssMiB(pid) {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

async function stop(child) {
  if (child.exitCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15000);
  await done;
  clearTimeout(timer);
}

const dmtoolServe = (devs, sock, extra = []) => [
  process.execPath,
  [CLI, 'serve', ...devs.flatMap((d) => ['--dev', ...d]), '--socket', sock, ...extra],
];

/** A server: command line for a socket, and the export name clients ask for. */
const peers = {
  'dmtool serve (linear)': {
    argv: (f, sock, extra) => dmtoolServe([['bench', `0 ${BYTES / 512} linear ${f.served} 0`]], sock, extra),
    name: 'bench',
  },
  'nbdkit file': { argv: (f, sock) => ['nbdkit', ['--foreground', '--unix', sock, '--threads', '64', 'file', f.served]], name: '' },
  'qemu-nbd': {
    argv: (f, sock) => ['qemu-nbd', ['--persistent', `--shared=${CLIENTS}`, '--format=raw', '--socket', sock, f.served]],
    name: '',
  },
};

/** Start a server, run `work(uri)`, stop it; returns what work returned and the server's peak RSS. */
async function withServer([cmd, args], name, dir, work) {
  const sock = path.join(dir, 'bench.sock');
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b) => (stderr += b));
  try {
    const uri = `nbd+unix:///${name}?socket=${sock}`;
    await waitForSocket(child, uri, cmd);
    const result = await work(uri, child.pid);
    return { result, rssMiB: peakRssMiB(child.pid) };
  } catch (e) {
    process.stderr.write(stderr);
    throw e;
  } finally {
    await stop(child);
    fs.rmSync(sock, { force: true });
  }
}

function nbdcopy(from, to) {
  dropCaches();
  return timed('nbdcopy', [from, to]).seconds;
}

/** fio's nbd engine for FIO_SECONDS: IOPS of 4 KiB random `rw` at depth 16. */
function fio(uri, rw) {
  const r = spawnSync(
    'fio',
    [
      '--name=bench',
      '--ioengine=nbd',
      `--uri=${uri}`,
      `--rw=${rw}`,
      '--bs=4k',
      '--iodepth=16',
      `--size=${BYTES}`,
      `--runtime=${FIO_SECONDS}`,
      '--time_based',
      '--randseed=20261125',
      '--output-format=json',
    ],
    { encoding: 'utf8', maxBuffer: 1 << 24 },
  );
  if (r.status !== 0) throw new Error(`fio ${rw} failed (${r.status}): ${r.stderr}`);
  const job = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
  return rw === 'randread' ? job.read.iops : job.write.iops;
}

/** 64 connections at once, each finishing the handshake then writing and reading 4 x 256 KiB at once. */
async function manyClients(uri, pid) {
  const { NbdDevice } = require('@dmtool/nbd');
  const devices = await Promise.all(Array.from({ length: CLIENTS }, () => NbdDevice.open(uri, { write: true, connections: 1 })));
  const connectedMiB = peakRssMiB(pid);
  try {
    // Each client its own range, so that what it reads back is what it wrote.
    const piece = Math.min(256 << 10, BYTES / CLIENTS / 4);
    await Promise.all(
      devices.map(async (d, i) => {
        const data = Buffer.alloc(4 * piece, i + 1);
        const base = i * 4 * piece;
        await Promise.all([0, 1, 2, 3].map((k) => d.write(data, k * piece, piece, base + k * piece)));
        const back = Buffer.alloc(4 * piece);
        await Promise.all([0, 1, 2, 3].map((k) => d.read(back, k * piece, piece, base + k * piece)));
        if (!back.equals(data)) throw new Error(`client ${i} read back other bytes`);
      }),
    );
  } finally {
    for (const d of devices) d.close();
  }
  return connectedMiB;
}

function min(a, b) {
  return a === undefined ? b : Math.min(a, b);
}

function max(a, b) {
  return a === undefined ? b : Math.max(a, b);
}

/** Part 1: nbdcopy and fio against each peer, interleaved. */
async function peerRuns(f, dir) {
  const r = {};
  for (let run = 0; run < RUNS; run++) {
    for (const [server, p] of Object.entries(peers)) {
      const o = (r[server] ??= { rssMiB: 0 });
      const { rssMiB } = await withServer(p.argv(f, path.join(dir, 'bench.sock')), p.name, dir, async (uri) => {
        o.read = min(o.read, nbdcopy(uri, 'null:'));
        o.write = min(o.write, nbdcopy(f.input, uri));
        execFileSync('cat', [f.served], { stdio: ['ignore', 'ignore', 'inherit'] });
        o.randread = max(o.randread, fio(uri, 'randread'));
        o.randwrite = max(o.randwrite, fio(uri, 'randwrite'));
      });
      o.rssMiB = Math.max(o.rssMiB, rssMiB);
    }
  }
  return r;
}

/** Part 2: snapshot-origin first writes and 2-leg mirror writes, each against the plain linear export in the same run. */
async function targetRuns(f, dir) {
  const sectors = BYTES / 512;
  const r = { linear: undefined, origin: undefined, mirror: undefined };
  const sock = path.join(dir, 'bench.sock');
  for (let run = 0; run < RUNS; run++) {
    const linear = await withServer(dmtoolServe([['bench', `0 ${sectors} linear ${f.served} 0`]], sock), 'bench', dir, (uri) =>
      nbdcopy(f.input, uri),
    );
    r.linear = min(r.linear, linear.result);

    // A fresh snapshot each run, so that every chunk written is a first write (copied into the COW first).
    const cow = path.join(dir, 'cow.img');
    makeSparse(cow, BYTES + (BYTES >> 4) + (4 << 20));
    execFileSync(process.execPath, [CLI, 'snapshot-create', f.served, cow, '--chunk-size', String(CHUNK_SECTORS)], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const devs = [
      ['origin', `0 ${sectors} snapshot-origin ${f.served}`],
      ['snap', `0 ${sectors} snapshot ${f.served} ${cow} P ${CHUNK_SECTORS}`],
    ];
    const origin = await withServer(dmtoolServe(devs, sock), 'origin', dir, (uri) => nbdcopy(f.input, uri));
    r.origin = min(r.origin, origin.result);
    fs.rmSync(cow);

    const legs = [path.join(dir, 'leg0.img'), path.join(dir, 'leg1.img')];
    const log = path.join(dir, 'log.img');
    for (const l of legs) makeSparse(l, BYTES);
    makeSparse(log, 1 << 20);
    execFileSync(process.execPath, [CLI, 'mirror-create', '--log', log, '--region-size', String(REGION_SECTORS), '--nosync', ...legs], {
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const table = `0 ${sectors} mirror disk 2 ${log} ${REGION_SECTORS} 2 ${legs[0]} 0 ${legs[1]} 0`;
    const mirror = await withServer(dmtoolServe([['m', table]], sock), 'm', dir, (uri) => nbdcopy(f.input, uri));
    r.mirror = min(r.mirror, mirror.result);
    for (const l of [...legs, log]) fs.rmSync(l);
  }
  return r;
}

/** Part 3: each server's peak RSS with 64 clients connected and working at once. */
async function clientRuns(f, dir) {
  const r = {};
  for (const [server, p] of Object.entries(peers)) {
    const { result, rssMiB } = await withServer(
      p.argv(f, path.join(dir, 'bench.sock'), ['--max-connections', String(CLIENTS)]),
      p.name,
      dir,
      manyClients,
    );
    r[server] = { connectedMiB: result, peakMiB: rssMiB };
  }
  return r;
}

async function main() {
  const missing = ['nbdcopy', 'nbdinfo', 'nbdkit', 'qemu-nbd', 'fio'].filter((c) => !have(c));
  if (missing.length) {
    console.log(`## NBD serving: skipped (${missing.join(', ')} not installed; apt-get install libnbd-bin nbdkit qemu-utils fio)`);
    return;
  }
  const dir = benchDir('nbd');
  let peerResults;
  let targets;
  let clients;
  try {
    const f = { served: path.join(dir, 'served.img'), input: path.join(dir, 'input.img') };
    makeRandomFile(f.served, MIB);
    makeRandomFile(f.input, MIB);
    peerResults = await peerRuns(f, dir);
    targets = await targetRuns(f, dir);
    clients = await clientRuns(f, dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const d = peerResults['dmtool serve (linear)'];
  const ratio = (x) => x.toFixed(2);
  console.log(`## NBD serving: ${MIB} MiB over a unix socket, best of ${RUNS}\n`);
  console.log(`nbdcopy (sequential; "vs this" is the other server's time over dmtool's, above 1 dmtool is faster):\n`);
  console.log(
    table(
      ['server', 'read s', 'read MB/s', 'dmtool read vs this', 'write s', 'write MB/s', 'dmtool write vs this', 'peak RSS MiB'],
      Object.entries(peerResults).map(([name, r]) => [
        name,
        r.read.toFixed(2),
        mbps(BYTES, r.read),
        ratio(r.read / d.read),
        r.write.toFixed(2),
        mbps(BYTES, r.write),
        ratio(r.write / d.write),
        r.rssMiB.toFixed(0),
      ]),
    ),
  );
  console.log(`\nfio nbd engine, 4 KiB random, depth 16, ${FIO_SECONDS} s each ("vs this": dmtool's IOPS over the other's):\n`);
  console.log(
    table(
      ['server', 'randread IOPS', 'dmtool vs this', 'randwrite IOPS', 'dmtool vs this'],
      Object.entries(peerResults).map(([name, r]) => [
        name,
        r.randread.toFixed(0),
        ratio(d.randread / r.randread),
        r.randwrite.toFixed(0),
        ratio(d.randwrite / r.randwrite),
      ]),
    ),
  );
  console.log(`\ndmtool serve targets, nbdcopy writes against the plain linear export in the same runs:\n`);
  console.log(
    table(
      ['export', 'write s', 'write MB/s', 'speed vs linear'],
      [
        ['linear', targets.linear, 1],
        [`snapshot-origin, first writes (chunk ${CHUNK_SECTORS} sectors)`, targets.origin],
        [`mirror, 2 legs, disk log (region ${REGION_SECTORS} sectors)`, targets.mirror],
      ].map(([name, s]) => [name, s.toFixed(2), mbps(BYTES, s), ratio(targets.linear / s)]),
    ),
  );
  console.log(`\n${CLIENTS} clients connected at once, each writing and reading 4 x 256 KiB at once:\n`);
  console.log(
    table(
      ['server', 'peak RSS MiB, all connected', 'peak RSS MiB, after the work'],
      Object.entries(clients).map(([name, r]) => [name, r.connectedMiB.toFixed(0), r.peakMiB.toFixed(0)]),
    ),
  );
  if (process.env.DMTOOL_BENCH_JSON) {
    fs.writeFileSync(process.env.DMTOOL_BENCH_JSON, JSON.stringify({ mib: MIB, peers: peerResults, targets, clients }, null, 2));
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
