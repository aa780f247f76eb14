'use strict';
// npm run bench: every benchmark script in this folder, one after another,
// each printing a markdown table (see docs/benchmarks.md).
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const only = process.argv.slice(2);
const scripts = fs
  .readdirSync(__dirname)
  .filter((f) => f.endsWith('.js') && !['run.js', 'common.js'].includes(f))
  .filter((f) => only.length === 0 || only.some((o) => f.includes(o)))
  .sort();
let failed = 0;
for (const s of scripts) {
  const r = spawnSync(process.execPath, [path.join(__dirname, s)], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
  console.log('');
}
process.exitCode = failed ? 1 : 0;
