/**
 * `dmtool ctl` against a running `dmtool serve`: status and table lines as
 * dmsetup prints them, suspend holding a real client's write until resume,
 * a mirror resync's rate changed while it runs, remove refused while a
 * client is connected and done with --force.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as path from 'path';
import { decodeDiskLog } from '@dmtool/dm-mirror';
import { JSON_SCHEMAS } from '../../packages/cli/src/json/schemas';
import { dmtool, waitFor } from '../support/cli';
import { makeZeroFile } from '../support/fixtures';
import { havePeer, nbdUri, peer, randomFile, ServeProcess, sha256, serveSandbox } from './serve-process';

jest.setTimeout(120000);

const MiB = 1 << 20;
const nbdsh = havePeer('nbdsh');
const when = (ok: boolean) => (ok ? test : test.skip);

const sandbox = serveSandbox('dmtool-serve-ctl-');
const serve = sandbox.serve;

async function stop(s: ServeProcess): Promise<void> {
  sandbox.forget(s);
  expect(await s.stop()).toEqual({ status: 0, signal: null });
}

const ctlPath = () => path.join(sandbox.dir, 'nbd.sock.ctl');
const ctl = (...words: string[]) => dmtool(['ctl', ctlPath(), ...words]);

/** nbdsh running a script in the background, bounded in time. */
function nbdshAsync(script: string, timeoutMs = 60000): { done: Promise<{ status: number | null; stdout: string; stderr: string }> } {
  const child = spawn('nbdsh', ['-c', script], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}`, LIBNBD_DEBUG: '0' },
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => (stdout += d));
  child.stderr.on('data', (d) => (stderr += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return {
    done: new Promise((resolve) =>
      child.on('close', (status) => {
        clearTimeout(timer);
        resolve({ status, stdout, stderr });
      }),
    ),
  };
}

test('status and table print the kernel lines of every device, or of one; --json carries them', async () => {
  const origin = path.join(sandbox.dir, 'origin.img');
  const cow = path.join(sandbox.dir, 'cow.img');
  const base = path.join(sandbox.dir, 'base.img');
  randomFile(origin, 4 * MiB, 1);
  makeZeroFile(cow, MiB);
  randomFile(base, MiB, 2);
  await serve([
    '--dev',
    'data',
    `0 8192 snapshot-origin ${origin}`,
    '--dev',
    'snap',
    `0 8192 snapshot ${origin} ${cow} P 8`,
    '--dev',
    'lin',
    `0 1024 linear ${base} 1024`,
  ]);
  const st = ctl('status');
  expect(st).toMatchObject({ status: 0, stderr: '' });
  expect(st.stdout).toBe('data: 0 8192 snapshot-origin \nsnap: 0 8192 snapshot 16/2048 16\nlin: 0 1024 linear \n');
  const one = ctl('table', 'snap');
  expect(one).toMatchObject({ status: 0, stdout: `snap: 0 8192 snapshot ${origin} ${cow} P 8\n` });
  const all = dmtool(['ctl', ctlPath(), 'table', '--json']);
  expect(all.status).toBe(0);
  const doc = JSON_SCHEMAS.ctl.parse(JSON.parse(all.stdout));
  expect(doc).toEqual({
    command: 'ctl',
    ok: true,
    dryRun: false,
    request: ['table'],
    lines: [`data: 0 8192 snapshot-origin ${origin}`, `snap: 0 8192 snapshot ${origin} ${cow} P 8`, `lin: 0 1024 linear ${base} 1024`],
  });
  expect(fs.statSync(ctlPath()).mode & 0o777).toBe(0o600);
});

when(nbdsh)('suspend holds a client write until resume; the write then lands', async () => {
  const disk = path.join(sandbox.dir, 'disk.img');
  makeZeroFile(disk, 4 * MiB);
  const s = await serve(['--dev', 'd', `0 8192 linear ${disk} 0`]);
  expect(ctl('suspend', 'd')).toMatchObject({ status: 0, stdout: 'd: suspended\n' });
  const w = nbdshAsync(
    `h.connect_uri(${JSON.stringify(nbdUri(s.socketPath, 'd'))})\nh.pwrite(b"\\xab" * 65536, 1048576)\nh.flush()\nprint("written")`,
  );
  // The client is connected and its write sent; the device holds it.
  await new Promise((r) => setTimeout(r, 1500));
  expect(
    fs
      .readFileSync(disk)
      .subarray(MiB, MiB + 65536)
      .equals(Buffer.alloc(65536)),
  ).toBe(true);
  expect(ctl('status', 'd')).toMatchObject({ status: 0, stdout: 'd: 0 8192 linear \n' });
  expect(ctl('resume', 'd')).toMatchObject({ status: 0, stdout: 'd: resumed\n' });
  expect(await w.done).toMatchObject({ status: 0, stdout: 'written\n' });
  expect(
    fs
      .readFileSync(disk)
      .subarray(MiB, MiB + 65536)
      .equals(Buffer.alloc(65536, 0xab)),
  ).toBe(true);
  await stop(s);
});

test("message m rate changes a running resync's rate; it is refused once the resync ended", async () => {
  const legs = [path.join(sandbox.dir, 'leg0.img'), path.join(sandbox.dir, 'leg1.img')];
  const log = path.join(sandbox.dir, 'log.img');
  randomFile(legs[0], 32 * MiB, 3);
  makeZeroFile(legs[1], 32 * MiB);
  makeZeroFile(log, MiB);
  expect(dmtool(['mirror-create', '--log', log, '--region-size', '1024', ...legs]).status).toBe(0);
  const table = `0 65536 mirror disk 2 ${log} 1024 2 ${legs[0]} 0 ${legs[1]} 0`;
  // 64 KiB/s: one 512 KiB region every 8 s.
  const s = await serve(['--dev', 'm', table, '--resync-rate', '64k']);
  await new Promise((r) => setTimeout(r, 1000));
  expect(ctl('status', 'm').stdout).toBe(`m: 0 65536 mirror 2 ${legs[0]} ${legs[1]} 0/64 1 AA 3 disk ${log} A\n`);
  expect(ctl('message', 'm', 'rate', '0')).toMatchObject({ status: 0, stdout: 'm: rate unlimited\n' });
  const inSync = () => decodeDiskLog(fs.readFileSync(log), { path: log }).clean.count() === 64;
  expect(await waitFor(inSync, 30000)).toBe(true);
  expect(ctl('status', 'm').stdout).toBe(`m: 0 65536 mirror 2 ${legs[0]} ${legs[1]} 64/64 1 AA 3 disk ${log} A\n`);
  expect(ctl('message', 'm', 'rate', '10M')).toMatchObject({ status: 2, stderr: 'dmtool: m: no resync is running\n' });
  expect(ctl('message', 'm', 'frob')).toMatchObject({
    status: 2,
    stderr: 'dmtool: m: unknown message "frob" (messages: rate BYTES_PER_SECOND)\n',
  });
  await stop(s);
  expect(sha256(legs[1])).toBe(sha256(legs[0]));
});

when(nbdsh)('remove is refused while a client is connected; --force disconnects it, flushes and drops the export', async () => {
  const a = path.join(sandbox.dir, 'a.img');
  const b = path.join(sandbox.dir, 'b.img');
  makeZeroFile(a, MiB);
  makeZeroFile(b, MiB);
  const s = await serve(['--dev', 'a', `0 2048 linear ${a} 0`, '--dev', 'b', `0 2048 linear ${b} 0`]);
  const client = nbdshAsync(
    [
      `h.connect_uri(${JSON.stringify(nbdUri(s.socketPath, 'a'))})`,
      'h.pwrite(b"\\xcd" * 4096, 8192)',
      'print("written", flush=True)',
      'import time',
      'try:',
      '    for i in range(600):',
      '        h.pread(512, 0)',
      '        time.sleep(0.05)',
      'except nbd.Error as e:',
      '    print("cut", flush=True)',
    ].join('\n'),
  );
  expect(await waitFor(() => ctl('status').status === 0, 5000)).toBe(true);
  await new Promise((r) => setTimeout(r, 1000));
  const refused = ctl('remove', 'a');
  expect(refused).toMatchObject({ status: 3, stdout: '', stderr: 'dmtool: a: 1 client(s) connected; give --force to disconnect them\n' });
  expect(ctl('remove', 'a', '--force')).toMatchObject({ status: 0, stdout: 'a: removed\n' });
  expect(await client.done).toMatchObject({ status: 0, stdout: 'written\ncut\n' });
  expect(
    fs
      .readFileSync(a)
      .subarray(8192, 8192 + 4096)
      .equals(Buffer.alloc(4096, 0xcd)),
  ).toBe(true);
  const list = peer('nbdinfo', ['--list', '--json', `nbd+unix:///?socket=${s.socketPath}`]);
  expect((JSON.parse(list.stdout) as { exports: { 'export-name': string }[] }).exports.map((e) => e['export-name'])).toEqual(['b']);
  expect(ctl('status')).toMatchObject({ status: 0, stdout: 'b: 0 2048 linear \n' });
  expect(ctl('status', 'a')).toMatchObject({ status: 2, stderr: 'dmtool: no device named a\n' });
  await stop(s);
});

test('remove closes the files no remaining device uses: they are unlocked at once, shared ones stay locked until their last device goes', async () => {
  const origin = path.join(sandbox.dir, 'origin.img');
  const cow = path.join(sandbox.dir, 'cow.img');
  randomFile(origin, MiB, 3);
  makeZeroFile(cow, MiB);
  const s = await serve(['--dev', 'o', `0 2048 snapshot-origin ${origin}`, '--dev', 's', `0 2048 snapshot ${origin} ${cow} P 8`]);
  const zero = (file: string) => dmtool(['zero', file, '--length', '8', '--quiet']);
  expect(zero(cow)).toMatchObject({ status: 3 });
  expect(ctl('remove', 's')).toMatchObject({ status: 0, stdout: 's: removed\n' });
  expect(zero(cow)).toMatchObject({ status: 0, stderr: '' });
  const lockedOrigin = zero(origin);
  expect(lockedOrigin.status).toBe(3);
  expect(lockedOrigin.stderr).toContain('locked by');
  expect(ctl('remove', 'o')).toMatchObject({ status: 0, stdout: 'o: removed\n' });
  expect(zero(origin)).toMatchObject({ status: 0, stderr: '' });
  expect(fs.readFileSync(origin).subarray(0, 4096).equals(Buffer.alloc(4096))).toBe(true);
  expect(ctl('status')).toMatchObject({ status: 0, stdout: '' });
  await stop(s);
});

when(nbdsh)(
  'remove of a snapshot while its origin is being written: every origin write succeeds, the COW left is clean and holds the old data',
  async () => {
    const origin = path.join(sandbox.dir, 'origin.img');
    const cow = path.join(sandbox.dir, 'cow.img');
    randomFile(origin, 4 * MiB, 4);
    const before = fs.readFileSync(origin);
    makeZeroFile(cow, 8 * MiB);
    const s = await serve(['--dev', 'o', `0 8192 snapshot-origin ${origin}`, '--dev', 's', `0 8192 snapshot ${origin} ${cow} P 8`]);
    // A first write to every 4 KiB chunk, one after another.
    const writer = nbdshAsync(
      [
        `h.connect_uri(${JSON.stringify(nbdUri(s.socketPath, 'o'))})`,
        'buf = b"\\x5a" * 4096',
        'for i in range(1024):',
        '    h.pwrite(buf, i * 4096)',
        'h.flush()',
        'print("done", flush=True)',
      ].join('\n'),
    );
    await new Promise((r) => setTimeout(r, 300));
    expect(ctl('remove', 's')).toMatchObject({ status: 0, stdout: 's: removed\n' });
    expect(await writer.done).toMatchObject({ status: 0, stdout: 'done\n' });
    await stop(s);
    expect(fs.readFileSync(origin).equals(Buffer.alloc(4 * MiB, 0x5a))).toBe(true);
    const check = dmtool(['snapshot-check', cow, '--origin', origin]);
    expect(check.status).toBe(0);
    // Every exception the COW records holds the origin chunk as it was before the writes.
    const listed = dmtool(['snapshot-list', cow, '--json']);
    const table = (JSON.parse(listed.stdout) as { table: { oldChunk: number; newChunk: number }[] }).table;
    const cowBytes = fs.readFileSync(cow);
    for (const e of table) {
      expect(
        cowBytes.subarray(e.newChunk * 4096, (e.newChunk + 1) * 4096).equals(before.subarray(e.oldChunk * 4096, (e.oldChunk + 1) * 4096)),
      ).toBe(true);
    }
  },
);

/** Send raw bytes to the control socket; resolve with all it answered once it closed (bounded). */
function rawExchange(socketPath: string, send: string, endAfterSend: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ path: socketPath });
    let got = '';
    const timer = setTimeout(() => {
      c.destroy();
      reject(new Error(`no close within 10 s; got ${JSON.stringify(got)}`));
    }, 10000);
    c.setEncoding('utf8');
    c.on('data', (d: string) => (got += d));
    c.on('close', () => {
      clearTimeout(timer);
      resolve(got);
    });
    c.on('error', () => undefined);
    c.write(send, () => {
      if (endAfterSend) c.end();
    });
  });
}

test('the protocol: pipelined requests answered in order, a bad line refused, an oversized one closes the connection', async () => {
  const disk = path.join(sandbox.dir, 'disk.img');
  makeZeroFile(disk, MiB);
  await serve(['--dev', 'd', `0 2048 linear ${disk} 0`]);
  const answers = await rawExchange(
    ctlPath(),
    ['{"command":"status"}', 'not json', '{"command":"table","device":"d"}', '{"command":"status","device":"x"}', ''].join('\n'),
    true,
  );
  expect(answers.split('\n')).toEqual([
    '{"ok":true,"lines":["d: 0 2048 linear "]}',
    '{"ok":false,"error":{"kind":"bad-input","message":"not a request: one JSON object per line, see docs/serve-ctl.md"}}',
    `{"ok":true,"lines":["d: 0 2048 linear ${disk} 0"]}`,
    '{"ok":false,"error":{"kind":"bad-input","message":"no device named x"}}',
    '',
  ]);
  const oversized = await rawExchange(ctlPath(), `{"command":"status","device":"${'x'.repeat(5000)}"}\n`, false);
  expect(oversized).toBe('{"ok":false,"error":{"kind":"bad-input","message":"a request is at most 4096 bytes"}}\n');
  // The server still answers.
  expect(ctl('status')).toMatchObject({ status: 0, stdout: 'd: 0 2048 linear \n' });
});
