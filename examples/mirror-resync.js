#!/usr/bin/env node
'use strict';
// Write through a two-or-more-leg mirror with a kernel-format disk log, then
// resync a leg that fell behind and check the legs agree.
//
//   node examples/mirror-resync.js LOG LEG0 LEG1 [LEG...]
//
// The legs must be files or devices of the same size; LOG at least 64 KiB.
const { openMirror, resync, checkLegs } = require('@dmtool/dm-mirror');
const { fileResolver } = require('@dmtool/native');

async function main([logPath, ...legPaths]) {
  if (!logPath || legPaths.length < 2) {
    console.error('usage: mirror-resync.js LOG LEG0 LEG1 [LEG...]');
    return 2;
  }
  const config = { log: { type: 'disk', path: logPath }, regionSize: 1024, legs: legPaths.map((path) => ({ path })) };

  // A new log starts with every region out of sync: the first resync copies all of leg 0.
  const mirror = await openMirror(config, fileResolver, { createLog: true, writeLegs: true });
  try {
    console.log(`created: ${mirror.statusInfo()}`);
    const first = await resync(mirror, { parallel: 4 });
    console.log(`resynced ${first.regionsSynced} regions: ${mirror.statusInfo()}`);

    // A write through the mirror marks its region dirty, writes every leg, then marks it clean.
    const data = Buffer.alloc(1024 * 512, 0x5a);
    await mirror.write(data, 2048, 1024);
    await mirror.flush();
    console.log(`after a mirrored write: ${mirror.statusInfo()}`);

    const check = await checkLegs(
      mirror.legs.map((l) => l.device),
      {
        regionSize: mirror.regionSize,
        lengthSectors: mirror.lengthSectors,
      },
    );
    console.log(`check: ${check.differingRegions.length} of ${check.regions} regions differ`);
    return check.differingRegions.length === 0 ? 0 : 1;
  } finally {
    mirror.close();
  }
}

main(process.argv.slice(2)).then((code) => (process.exitCode = code));
