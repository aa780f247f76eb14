/**
 * NBD_FLAG_CAN_MULTI_CONN on `dmtool serve`'s exports: for each target, a
 * write answered on one connection is read back on another, and a flush
 * on that other connection makes it durable. The server runs with a
 * volatile write cache (DMTOOL_FAULTS) and is killed with SIGKILL after the
 * flush, so only what the flush made durable is in the files afterwards.
 */
import * as fs from 'fs';
import * as path from 'path';
import { NbdDevice } from '@dmtool/nbd';
import { dmtool } from '../support/cli';
import { makeZeroFile } from '../support/fixtures';
import { sha256 as sha256Of, sha256File, sha256Range } from '../support/images';
import { nbdUri, randomFile, ServeProcess, serveSandbox } from './serve-process';

jest.setTimeout(60000);

const MiB = 1 << 20;
const SECTORS = 16384;
/** Bytes 1 MiB to 2 MiB of the export. */
const AT_BYTES = MiB;
const box = serveSandbox('dmtool-serve-multi-');
const VOLATILE = { ...process.env, DMTOOL_FAULTS: JSON.stringify({ volatileCache: { order: 'fifo' } }) };

interface Case {
  /** `--dev` pairs; the first is the export written. */
  devs: [string, string][];
  /** After the kill: the sha256 the written range must have now, where it is read from. */
  check(data: Buffer): void;
}

function created(args: string[]): void {
  const r = dmtool(args);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
}

/** An origin of random data, a fresh COW (chunk 8 sectors) and the view's sha256 before any write. */
function originAndCow(): { origin: string; cow: string; before: string } {
  const origin = path.join(box.dir, 'origin.img');
  const cow = path.join(box.dir, 'cow.img');
  randomFile(origin, SECTORS * 512, 41);
  makeZeroFile(cow, 8 * MiB);
  created(['snapshot-create', origin, cow, '--chunk-size', '8']);
  return { origin, cow, before: sha256File(origin) };
}

function snapshotView(origin: string, cow: string): string {
  const view = path.join(box.dir, 'view.img');
  created(['snapshot-read', origin, cow, '-o', view]);
  return view;
}

const cases: Record<string, () => Case> = {
  linear: () => {
    const image = path.join(box.dir, 'image.img');
    makeZeroFile(image, SECTORS * 512);
    return {
      devs: [['d', `0 ${SECTORS} linear ${image} 0`]],
      check: (data) => expect(sha256Range(image, AT_BYTES, data.length)).toBe(sha256Of(data)),
    };
  },
  'snapshot-origin (with its snapshot)': () => {
    const { origin, cow, before } = originAndCow();
    return {
      devs: [
        ['data', `0 ${SECTORS} snapshot-origin ${origin}`],
        ['snap', `0 ${SECTORS} snapshot ${origin} ${cow} P 8`],
      ],
      check: (data) => {
        expect(sha256Range(origin, AT_BYTES, data.length)).toBe(sha256Of(data));
        // The chunks copied before the write are durable too: the snapshot still shows the origin as it was.
        expect(sha256File(snapshotView(origin, cow))).toBe(before);
      },
    };
  },
  snapshot: () => {
    const { origin, cow, before } = originAndCow();
    return {
      devs: [['snap', `0 ${SECTORS} snapshot ${origin} ${cow} P 8`]],
      check: (data) => {
        expect(sha256Range(snapshotView(origin, cow), AT_BYTES, data.length)).toBe(sha256Of(data));
        expect(sha256File(origin)).toBe(before);
      },
    };
  },
  'mirror (2 legs, disk log)': () => {
    const legs = [path.join(box.dir, 'leg0.img'), path.join(box.dir, 'leg1.img')];
    const log = path.join(box.dir, 'log.img');
    for (const l of legs) makeZeroFile(l, SECTORS * 512);
    makeZeroFile(log, MiB);
    created(['mirror-create', '--log', log, '--region-size', '1024', '--nosync', ...legs]);
    return {
      devs: [['m', `0 ${SECTORS} mirror disk 2 ${log} 1024 2 ${legs[0]} 0 ${legs[1]} 0`]],
      check: (data) => {
        for (const l of legs) expect(sha256Range(l, AT_BYTES, data.length)).toBe(sha256Of(data));
      },
    };
  },
};

async function kill(s: ServeProcess): Promise<void> {
  box.forget(s);
  process.kill(s.pid, 'SIGKILL');
  expect(await s.stop()).toEqual({ status: null, signal: 'SIGKILL' });
}

function randomData(): Buffer {
  const source = path.join(box.dir, 'data.bin');
  randomFile(source, MiB, 43);
  return fs.readFileSync(source);
}

describe.each(Object.keys(cases))('%s export', (name) => {
  test('offers multi-conn; a write answered on one connection is read on another, and a flush there makes it durable', async () => {
    const c = cases[name]();
    const s = await box.serve(
      c.devs.flatMap(([n, t]) => ['--dev', n, t]),
      VOLATILE,
    );
    const uri = nbdUri(s.socketPath, c.devs[0][0]);
    const data = randomData();
    const probe = await NbdDevice.open(uri, { write: true, connections: 2 });
    const [writer, other] = [await NbdDevice.open(uri, { write: true }), await NbdDevice.open(uri, { write: true })];
    try {
      expect(probe.connectionCount).toBe(2);
      await writer.write(data, 0, data.length, AT_BYTES);
      const back = Buffer.alloc(data.length);
      await other.read(back, 0, back.length, AT_BYTES);
      expect(back.equals(data)).toBe(true);
      await other.flush();
    } finally {
      for (const d of [probe, writer, other]) d.close();
    }
    await kill(s);
    c.check(data);
  });
});

test('without the flush the volatile cache loses the write: the flushes above are what made the bytes durable', async () => {
  const c = cases.linear();
  const s = await box.serve(['--dev', ...c.devs[0]], VOLATILE);
  const data = randomData();
  const writer = await NbdDevice.open(nbdUri(s.socketPath, 'd'), { write: true });
  try {
    await writer.write(data, 0, data.length, AT_BYTES);
  } finally {
    writer.close();
  }
  await kill(s);
  expect(() => c.check(data)).toThrow();
  expect(sha256Range(path.join(box.dir, 'image.img'), AT_BYTES, data.length)).toBe(sha256Of(Buffer.alloc(MiB)));
});
