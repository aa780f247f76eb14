'use strict';
// NBD serving benchmark: the same file served by `dmtool serve` (a linear
// export of the whole file), `nbdkit file` and `qemu-nbd`, each on a unix
// socket, read and written by the same client (nbdcopy, sequential, its
// default request size and connections), page cache dropped before each run.
// Prints seconds, MB/s, dmtool's speed relative to each other server, and
// each server's peak RSS (VmHWM) over the whole run.
const { spawn, spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');
const { CLI, benchDir, timed, dropCaches, makeRandomFile, table, mbps } = require('./common');

const MIB = Number(process.env.DMTOOL_BENCH_NBD_MIB || 256);
const BYTES = MIB << 20;
const RUNS = Number(process.env.DMTOOL_BENCH_RUNS || 2);

function have(cmd) {
  return spawnSync(cmd, ['--version'], { stdio: 'ignore' }).status === 0;
}

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

async function waitForSocket(child, sock, what) {
  const until = Date.now() + 15000;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`${what} exited (${child.exitCode}) before listening`);
    if (fs.existsSync(sock) && spawnSync('nbdinfo', ['--size', `nbd+unix:///?socket=${sock}`], { stdio: 'ignore' }).status === 0) return;
    await sleep(50);
  }
  throw new Error(`${what} did not listen on ${sock}`);
}

function peakRssMiB(pid) {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? (Number(m[1]) / 1024).toFixed(0) : '-';
  } catch {
    return '-';
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

const servers = {
  'dmtool serve (linear)': (file, sock) => [
    process.execPath,
    [CLI, 'serve', '--dev', 'bench', `0 ${BYTES / 512} linear ${file} 0`, '--socket', sock],
  ],
  'nbdkit file': (file, sock) => ['nbdkit', ['--foreground', '--unix', sock, 'file', file]],
  'qemu-nbd': (file, sock) => ['qemu-nbd', ['--persistent', '--shared=16', '--format=raw', '--socket', sock, file]],
};

async function measure(name, file, input, dir) {
  const sock = path.join(dir, 'bench.sock');
  const [cmd, args] = servers[name](file, sock);
  const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    await waitForSocket(child, sock, name);
    const uri = `nbd+unix:///${name.startsWith('dmtool') ? 'bench' : ''}?socket=${sock}`;
    let read;
    let write;
    for (let i = 0; i < RUNS; i++) {
      dropCaches();
      const r = timed('nbdcopy', [uri, 'null:']);
      if (!read || r.seconds < read.seconds) read = r;
      dropCaches();
      const w = timed('nbdcopy', [input, uri]);
      if (!write || w.seconds < write.seconds) write = w;
    }
    return { read: read.seconds, write: write.seconds, rss: peakRssMiB(child.pid) };
  } finally {
    await stop(child);
    fs.rmSync(sock, { force: true });
  }
}

async function main() {
  const missing = ['nbdcopy', 'nbdinfo', 'nbdkit', 'qemu-nbd'].filter((c) => !have(c));
  if (missing.length) {
    console.log(`## NBD serving: skipped (${missing.join(', ')} not installed; apt-get install libnbd-bin nbdkit qemu-utils)`);
    return;
  }
  const dir = benchDir('nbd');
  const results = {};
  try {
    const file = path.join(dir, 'served.img');
    const input = path.join(dir, 'input.img');
    makeRandomFile(file, MIB);
    makeRandomFile(input, MIB);
    for (const name of Object.keys(servers)) results[name] = await measure(name, file, input, dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const d = results['dmtool serve (linear)'];
  const rows = Object.entries(results).map(([name, r]) => [
    name,
    r.read.toFixed(2),
    mbps(BYTES, r.read),
    (r.read / d.read).toFixed(2),
    r.write.toFixed(2),
    mbps(BYTES, r.write),
    (r.write / d.write).toFixed(2),
    r.rss,
  ]);
  console.log(`## NBD serving: nbdcopy of ${MIB} MiB over a unix socket, best of ${RUNS}\n`);
  console.log(
    table(
      [
        'server',
        'read s',
        'read MB/s',
        'dmtool read speed vs this',
        'write s',
        'write MB/s',
        'dmtool write speed vs this',
        'server peak RSS MiB',
      ],
      rows,
    ),
  );
  if (process.env.DMTOOL_BENCH_JSON) fs.writeFileSync(process.env.DMTOOL_BENCH_JSON, JSON.stringify({ mib: MIB, results }, null, 2));
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
