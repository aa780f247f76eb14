'use strict';
// COW metadata for the benchmarks: exception tables written straight into
// an image in the kernel's persistent format, without copying any data.
const fs = require('fs');
const { CowGeometry, encodeEntry, encodeHeader } = require('@dmtool/dm-snapshot');

/** 0..n-1 in a shuffled order, the same for the same seed. */
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

module.exports = { shuffled, writeTable };
