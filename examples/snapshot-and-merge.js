#!/usr/bin/env node
'use strict';
// Take a snapshot of an origin image, write to the origin (copy-on-write
// keeps the old data in the COW), read the snapshot's view, then merge the
// snapshot back so the origin is as it was when the snapshot was taken.
//
//   node examples/snapshot-and-merge.js ORIGIN COW
//
// ORIGIN is any image; COW must exist, be zeroed at its start, and be large
// enough for the chunks the example writes (1 MiB is plenty).
const { createHash } = require('crypto');
const { FileDevice } = require('@dmtool/kcopyd');
const { Origin, Snapshot, mergeSnapshot, snapshotBuffer } = require('@dmtool/dm-snapshot');

const sha = (buf) => createHash('sha256').update(buf).digest('hex').slice(0, 16);

async function main([originPath, cowPath]) {
  if (!originPath || !cowPath) {
    console.error('usage: snapshot-and-merge.js ORIGIN COW');
    return 2;
  }
  const originDev = FileDevice.open(originPath, { write: true });
  const cowDev = FileDevice.open(cowPath, { write: true });
  const origin = new Origin(originDev);
  try {
    const snap = await Snapshot.create(origin, cowDev, { chunkSectors: 8 });
    const before = snapshotBuffer(8 * 512);
    await origin.read(before, 0);
    console.log(`snapshot taken: status ${snap.status()}, first chunk ${sha(before)}`);

    // Overwrite the first 4 KiB of the origin: the old chunk is copied to the COW first.
    const data = snapshotBuffer(8 * 512);
    data.fill(0xee);
    await origin.write(data, 0);
    const view = snapshotBuffer(8 * 512);
    await snap.read(view, 0);
    const now = snapshotBuffer(8 * 512);
    await origin.read(now, 0);
    console.log(`origin written: status ${snap.status()}, origin ${sha(now)}, snapshot view ${sha(view)}`);
    snap.close();
  } finally {
    await origin.close();
  }

  const result = await mergeSnapshot(originDev, cowDev);
  const after = snapshotBuffer(8 * 512);
  await originDev.read(after, 0, after.length, 0);
  console.log(`merged ${result.mergedChunks} chunk(s) back: status ${result.status}, origin ${sha(after)}`);
  originDev.close();
  cowDev.close();
  return 0;
}

main(process.argv.slice(2)).then((code) => (process.exitCode = code));
