#!/usr/bin/env node
'use strict';
// Builds the prebuilt addons that ship in the @dmtool/native tarball:
// prebuilds/linux-x64 and prebuilds/linux-arm64, each one N-API build that
// serves every Node.js >= 20. Run by `prepack`; see docs/packaging.md.
//
// The builds run in a scratch copy of binding.gyp and src/, never in this
// folder: prebuildify rebuilds build/ and moves the addon out of it, which
// would take the development build away from under running tests.
const { spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const nativeDir = path.join(__dirname, '..');
const prebuildsDir = path.join(nativeDir, 'prebuilds');

// Node's arch name -> the GNU triplet of its Debian cross toolchain.
const TRIPLETS = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' };
const ARCHS = ['x64', 'arm64'];

function fail(message) {
  console.error(`build-prebuilds: ${message}`);
  process.exit(1);
}

function onPath(command) {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

// The host builds with its own compiler; other archs with the cross compiler
// (Debian: g++-aarch64-linux-gnu, g++-x86-64-linux-gnu).
function toolchainEnv(arch) {
  if (arch === os.arch()) return {};
  const triplet = TRIPLETS[arch];
  for (const tool of ['gcc', 'g++', 'strip']) {
    if (!onPath(`${triplet}-${tool}`))
      fail(`${triplet}-${tool} not found: the linux-${arch} prebuild needs the cross compiler (Debian: g++-${triplet.replace(/_/g, '-')})`);
  }
  return { CC: `${triplet}-gcc`, CXX: `${triplet}-g++`, PREBUILD_STRIP_BIN: `${triplet}-strip` };
}

function main() {
  if (process.platform !== 'linux') fail(`prebuilds are made on Linux, not ${process.platform}`);
  const envs = ARCHS.map((arch) => [arch, toolchainEnv(arch)]);

  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-prebuilds-'));
  try {
    fs.copyFileSync(path.join(nativeDir, 'package.json'), path.join(scratch, 'package.json'));
    fs.copyFileSync(path.join(nativeDir, 'binding.gyp'), path.join(scratch, 'binding.gyp'));
    fs.cpSync(path.join(nativeDir, 'src'), path.join(scratch, 'src'), { recursive: true });
    fs.rmSync(prebuildsDir, { recursive: true, force: true });

    const prebuildify = require.resolve('prebuildify/bin.js');
    // binding.gyp asks node-addon-api for its include folder from the scratch copy.
    const nodePath = path.dirname(path.dirname(require.resolve('node-addon-api/package.json')));
    for (const [arch, env] of envs) {
      const args = [prebuildify, '--napi', '--strip', '--tag-libc', `--target=node@${process.versions.node}`, `--arch=${arch}`];
      // prebuildify's node-gyp dev folder (--cache) goes with the scratch copy, not into the shared tmp.
      args.push(`--cwd=${scratch}`, `--out=${nativeDir}`, `--cache=${path.join(scratch, 'cache')}`);
      const r = spawnSync(process.execPath, args, {
        // Build output goes to stderr: `npm pack --json` prints its document on stdout.
        stdio: ['ignore', 2, 2],
        env: {
          ...process.env,
          ...env,
          NODE_PATH: [nodePath, process.env.NODE_PATH].filter(Boolean).join(path.delimiter),
          // npm names its own node-gyp here when it runs this script.
          PREBUILD_NODE_GYP: process.env.npm_config_node_gyp ?? 'node-gyp',
        },
      });
      if (r.status !== 0) fail(`the linux-${arch} build failed (exit ${r.status ?? r.signal})`);
    }
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

main();
