/**
 * `dmtool serve --buffer-limit`: the request data held for all clients
 * together. Two clients that ask for 32 MiB reads and do not read the
 * replies hold the default 64 MiB; a third client's read waits for them
 * (until their drain deadline cuts them). With room for them all it is
 * answered at once.
 */
import * as fs from 'fs';
import * as path from 'path';
import { NBD_CMD_READ } from '@dmtool/nbd';
import { RawClient } from '../support/nbd-client';
import { randomFile, serveSandbox } from './serve-process';

jest.setTimeout(60000);

const MiB = 1 << 20;
const IMAGE_BYTES = 64 * MiB;
const box = serveSandbox('dmtool-serve-buffer-');
const clients: RawClient[] = [];

afterEach(() => {
  for (const c of clients.splice(0)) c.destroy();
});

async function connect(socketPath: string): Promise<RawClient> {
  const c = await RawClient.connect(socketPath);
  clients.push(c);
  await c.go('disk');
  return c;
}

/** Two clients each ask for the largest read and leave it unread; then a third reads 4 KiB. */
async function thirdClientRead(extraArgs: string[]): Promise<{ answered: boolean; data?: Buffer }> {
  const image = path.join(box.dir, 'image.img');
  if (!fs.existsSync(image)) randomFile(image, IMAGE_BYTES, 11);
  const s = await box.serve(['--dev', 'disk', `0 ${IMAGE_BYTES / 512} linear ${image} 0`, ...extraArgs]);
  for (let i = 0; i < 2; i++) {
    const greedy = await connect(s.socketPath);
    greedy.socket.pause();
    greedy.request({ type: NBD_CMD_READ, cookie: 1n, offsetBytes: i * 32 * MiB, lengthBytes: 32 * MiB });
  }
  await new Promise((r) => setTimeout(r, 1000));
  const other = await connect(s.socketPath);
  other.request({ type: NBD_CMD_READ, cookie: 2n, offsetBytes: MiB, lengthBytes: 4096 });
  try {
    const r = await other.reply(4096, 3000);
    return { answered: r.error === 0, data: r.data };
  } catch {
    return { answered: false };
  }
}

test('the default 64M is held by two clients that leave 32 MiB reads unread: a third read waits', async () => {
  expect(await thirdClientRead([])).toEqual({ answered: false });
});

test('--buffer-limit 128M leaves room: the third read is answered at once with the image bytes', async () => {
  const r = await thirdClientRead(['--buffer-limit', '128M']);
  expect(r.answered).toBe(true);
  expect(r.data!.equals(fs.readFileSync(path.join(box.dir, 'image.img')).subarray(MiB, MiB + 4096))).toBe(true);
});
