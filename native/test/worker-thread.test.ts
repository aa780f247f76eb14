import * as fs from 'fs';
import * as path from 'path';
import { Worker } from 'worker_threads';
import { removeDir, tempDir } from '../../test/support/loop';

// The addon keeps no global state: it must load and work in several
// environments at once (the main thread and worker threads).
describe('native binding in worker threads', () => {
  it('loads and reads in two workers concurrently', async () => {
    const dir = tempDir();
    try {
      const file = path.join(dir, 'data.img');
      fs.writeFileSync(file, Buffer.alloc(8192, 0x5a));
      const dist = path.join(__dirname, '..', 'dist', 'index.js');
      const code = `
        const { parentPort, workerData } = require('worker_threads');
        const { FileDevice, allocBuffer } = require(workerData.dist);
        const d = FileDevice.open(workerData.file);
        const b = allocBuffer(4096);
        d.read(b, 0, 4096, 4096).then(() => { d.close(); parentPort.postMessage(b.every((x) => x === 0x5a)); });
      `;
      const run = () =>
        new Promise<boolean>((resolve, reject) => {
          const w = new Worker(code, { eval: true, workerData: { dist, file } });
          w.once('message', resolve);
          w.once('error', reject);
        });
      await expect(Promise.all([run(), run()])).resolves.toEqual([true, true]);
    } finally {
      removeDir(dir);
    }
  });
});
