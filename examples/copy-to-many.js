#!/usr/bin/env node
'use strict';
// Copy one image to several destinations with @dmtool/kcopyd, showing progress.
//
//   node examples/copy-to-many.js SOURCE DEST [DEST...]
//
// The destinations must exist and be at least as large as the source.
const { FileDevice, KcopydClient, KcopydFlags } = require('@dmtool/kcopyd');

async function main([sourcePath, ...destPaths]) {
  if (!sourcePath || destPaths.length === 0) {
    console.error('usage: copy-to-many.js SOURCE DEST [DEST...]');
    return 2;
  }
  const source = FileDevice.open(sourcePath);
  const dests = destPaths.map((p) => FileDevice.open(p, { write: true }));
  const client = new KcopydClient();
  try {
    let lastPercent = -1;
    const result = await client.copy(
      { device: source, sector: 0, count: source.sizeSectors },
      dests.map((device) => ({ device, sector: 0 })),
      {
        flags: KcopydFlags.IGNORE_ERROR,
        onProgress: ({ doneSectors, totalSectors }) => {
          const percent = Math.floor((100 * doneSectors) / totalSectors);
          if (percent % 25 === 0 && percent !== lastPercent) console.log(`progress ${percent}%`);
          lastPercent = percent;
        },
      },
    );
    // kcopyd issues plain writes; make them durable before saying "done".
    await Promise.all(dests.map((d) => d.flush()));
    console.log(
      `copied ${result.sectorsDone} sectors to ${dests.length} destinations: readErr=${result.readErr} writeErr=${result.writeErr}`,
    );
    return result.readErr || result.writeErr ? 1 : 0;
  } finally {
    await client.destroy();
    [source, ...dests].forEach((d) => d.close());
  }
}

main(process.argv.slice(2)).then((code) => (process.exitCode = code));
