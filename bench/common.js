'use strict';
// Shared helpers for the benchmark scripts: temp space, timing of child
// processes with their peak RSS (GNU time), and markdown output.
const { spawnSync, execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const CLI = path.join(__dirname, '..', 'packages', 'cli', 'bin', 'dmtool.js');

function benchDir(name) {
  const base = process.env.DMTOOL_BENCH_DIR || os.tmpdir();
  return fs.mkdtempSync(path.join(base, `dmtool-bench-${name}-`));
}

/** Run a command; returns { seconds, maxRssKiB, stdout }. Throws on failure. */
function timed(cmd, args, opts = {}) {
  const t0 = process.hrtime.bigint();
  const r = spawnSync('/usr/bin/time', ['-f', '%M', cmd, ...args], { encoding: 'utf8', maxBuffer: 1 << 26, ...opts });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  const lines = r.stderr.trim().split('\n');
  const maxRssKiB = Number(lines[lines.length - 1]);
  return { seconds, maxRssKiB, stdout: r.stdout };
}

function dmtool(args, opts) {
  return timed(process.execPath, [CLI, ...args], opts);
}

function dropCaches() {
  try {
    execFileSync('sync');
    fs.writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch {
    // not root: runs measure warm caches
  }
}

function makeRandomFile(file, mib) {
  execFileSync('dd', ['if=/dev/urandom', `of=${file}`, 'bs=1M', `count=${mib}`, 'status=none']);
}

function makeSparse(file, bytes) {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, bytes);
}

function best(n, fn) {
  let top;
  for (let i = 0; i < n; i++) {
    const r = fn();
    if (!top || r.seconds < top.seconds) top = r;
  }
  return top;
}

function table(headers, rows) {
  const line = (cells) => `| ${cells.join(' | ')} |`;
  return [line(headers), line(headers.map(() => '---')), ...rows.map(line)].join('\n');
}

const mbps = (bytes, s) => (bytes / s / 1e6).toFixed(0);

module.exports = { CLI, benchDir, timed, dmtool, dropCaches, makeRandomFile, makeSparse, best, table, mbps };
