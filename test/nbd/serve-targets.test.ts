/**
 * `dmtool serve` with the snapshot and mirror targets, against real NBD
 * clients (nbdsh, nbdcopy, qemu-io) and dmtool's own: the kernel's fixture
 * write plans replayed through a served snapshot-origin give the kernel's
 * COW bytes, and the kernel's status after each write of the plan;
 * a served origin written while its snapshot is read gives the COW the
 * offline `snapshot-write --target origin` gives; a served mirror writes
 * every leg and leaves its log clean, or, with a failing leg, records the
 * failure as the kernel does.
 */
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { decodeDiskLog } from '@dmtool/dm-mirror';
import { NbdDevice } from '@dmtool/nbd';
import { dmtool, waitFor } from '../support/cli';
import { makeBaseOrigin, makeZeroFile, PlannedWrite, planPieces, unpackFixture } from '../support/fixtures';
import { havePeer, nbdUri, peer, randomFile, ServeProcess, sha256, startServe } from './serve-process';

jest.setTimeout(120000);

const MiB = 1 << 20;
const nbdsh = havePeer('nbdsh');
const nbdcopy = havePeer('nbdcopy');
const qemuIo = havePeer('qemu-io', ['--version']);
const when = (ok: boolean) => (ok ? test : test.skip);

let dir: string;
const servers: ServeProcess[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dmtool-serve-targets-'));
});

afterEach(async () => {
  try {
    for (const s of servers.splice(0)) await s.stop();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

async function serve(args: string[], env?: NodeJS.ProcessEnv): Promise<ServeProcess> {
  const s = await startServe(args, path.join(dir, 'nbd.sock'), 15000, env);
  servers.push(s);
  return s;
}

async function stop(s: ServeProcess): Promise<void> {
  servers.splice(servers.indexOf(s), 1);
  expect(await s.stop()).toEqual({ status: 0, signal: null });
}

/** A peer run in the background, bounded in time; resolves with its exit status and stderr. */
function peerAsync(cmd: string, args: string[], timeoutMs = 60000): Promise<{ status: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ''}` },
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stderr });
    });
  });
}

describe.each([8, 16])('the kernel fixture snapshot-cow-chunk%i replayed through served exports', (cs) => {
  when(nbdsh && nbdcopy)('gives the kernel origin, COW, snapshot view and status lines byte for byte', async () => {
    const { manifest } = unpackFixture(`snapshot-cow-chunk${cs}`, dir);
    const origin = path.join(dir, 'origin.img');
    const cow = path.join(dir, 'cow.img');
    makeBaseOrigin(origin, manifest.images['origin.img'].size);
    makeZeroFile(cow, manifest.images['cow.img'].size);
    expect(sha256(origin)).toBe(manifest.images['origin.img'].sha256_before);
    const sectors = manifest.images['origin.img'].size / 512;
    // As the kernel does with a COW whose magic is 0, serving it formats it.
    const s = await serve([
      '--dev',
      'origin',
      `0 ${sectors} snapshot-origin ${origin}`,
      '--dev',
      'snap',
      `0 ${sectors} snapshot ${origin} ${cow} P ${cs}`,
    ]);
    // Every piece as the guest wrote it (bs-sized, each complete before the next), in plan order.
    const planned = planPieces(manifest.writes as PlannedWrite[]);
    const pieces = planned.map((p) => [p.target === 'origin' ? 'o' : 's', p.sector * 512, p.data.length]);
    const dataFile = path.join(dir, 'pieces.bin');
    fs.writeFileSync(dataFile, Buffer.concat(planned.map((p) => p.data)));
    const script = `
import json, nbd
s = nbd.NBD()
s.connect_uri(${JSON.stringify(nbdUri(s.socketPath, 'snap'))})
pieces = json.loads(${JSON.stringify(JSON.stringify(pieces))})
with open(${JSON.stringify(dataFile)}, "rb") as f:
    for target, offset, length in pieces:
        (h if target == "o" else s).pwrite(f.read(length), offset)
s.shutdown()
print(len(pieces))
`;
    const r = peer('nbdsh', ['-u', nbdUri(s.socketPath, 'origin'), '-c', script]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(String(pieces.length));
    for (const [name, expected] of [
      ['snap', manifest.expected.snapshot_view_sha256],
      ['origin', manifest.expected.origin_after_sha256],
    ]) {
      const out = path.join(dir, `${name}.view`);
      expect(peer('nbdcopy', [nbdUri(s.socketPath, name), out]).status).toBe(0);
      expect(sha256(out)).toBe(expected);
      fs.rmSync(out);
    }
    await stop(s);
    for (const line of manifest.kernel_reported.status) expect(s.stdout()).toContain(`status ${line}\n`);
    expect(sha256(origin)).toBe(manifest.images['origin.img'].sha256_after);
    expect(sha256(cow)).toBe(manifest.images['cow.img'].sha256_after);
    const status = dmtool(['snapshot-status', cow]);
    expect(`snap: 0 ${sectors} snapshot ${status.stdout.trim()}`).toBe(manifest.kernel_reported.status[1]);
  });
});

describe.each([8, 16])("the kernel fixture snapshot-cow-chunk%i replayed with dmtool's NBD client", (cs) => {
  test("after each write of the plan the served snapshot has the status the kernel had (dmtool ctl status); the COW is the kernel's", async () => {
    const { dir: fx, manifest } = unpackFixture(`snapshot-cow-chunk${cs}`, dir);
    const progress = fs.readFileSync(path.join(fx, 'guest/status-progress.txt'), 'utf8').trim().split('\n');
    const origin = path.join(dir, 'origin.img');
    const cow = path.join(dir, 'cow.img');
    makeBaseOrigin(origin, manifest.images['origin.img'].size);
    makeZeroFile(cow, manifest.images['cow.img'].size);
    expect(sha256(origin)).toBe(manifest.images['origin.img'].sha256_before);
    const sectors = manifest.images['origin.img'].size / 512;
    const s = await serve([
      '--dev',
      'origin',
      `0 ${sectors} snapshot-origin ${origin}`,
      '--dev',
      'snap',
      `0 ${sectors} snapshot ${origin} ${cow} P ${cs}`,
    ]);
    const devices = {
      origin: await NbdDevice.open(nbdUri(s.socketPath, 'origin'), { write: true }),
      snap: await NbdDevice.open(nbdUri(s.socketPath, 'snap'), { write: true }),
    };
    const seen: string[] = [];
    try {
      const pieces = planPieces(manifest.writes as PlannedWrite[]);
      for (const [i, p] of pieces.entries()) {
        await devices[p.target].write(p.data, 0, p.data.length, p.sector * 512);
        if (pieces[i + 1]?.writeIndex === p.writeIndex) continue;
        const st = dmtool(['ctl', `${s.socketPath}.ctl`, 'status', 'snap']);
        expect(st.stderr).toBe('');
        seen.push(`${p.write.name} ${st.stdout.trim()}`);
      }
    } finally {
      devices.origin.close();
      devices.snap.close();
    }
    // dmtool ctl names the device as dmsetup status does for several devices.
    expect(seen).toEqual(progress.map((l) => l.replace(/^(\S+) /, '$1 snap: ')));
    await stop(s);
    expect(sha256(origin)).toBe(manifest.images['origin.img'].sha256_after);
    expect(sha256(cow)).toBe(manifest.images['cow.img'].sha256_after);
  });
});

when(nbdcopy && qemuIo)(
  'origin writes while the snapshot is read: the view stays the old origin; the COW is the offline snapshot-write COW',
  async () => {
    const originBytes = 32 * MiB;
    const origin = path.join(dir, 'origin.img');
    const cow = path.join(dir, 'cow.img');
    randomFile(origin, originBytes, 7);
    makeZeroFile(cow, 8 * MiB);
    const offline = { origin: path.join(dir, 'offline-origin.img'), cow: path.join(dir, 'offline-cow.img') };
    fs.copyFileSync(origin, offline.origin);
    makeZeroFile(offline.cow, 8 * MiB);
    const before = sha256(origin);
    const sectors = originBytes / 512;
    const s = await serve([
      '--dev',
      'data',
      `0 ${sectors} snapshot-origin ${origin}`,
      '--dev',
      'snap',
      `0 ${sectors} snapshot ${origin} ${cow} P 8`,
      '--read-only',
      'snap',
    ]);
    const during = path.join(dir, 'during.img');
    const reading = peerAsync('nbdcopy', ['--connections=1', nbdUri(s.socketPath, 'snap'), during]);
    const w = peer('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -P 0xa5 20M 512k', nbdUri(s.socketPath, 'data')]);
    expect(w.stderr).toBe('');
    expect(w.status).toBe(0);
    const r = await reading;
    expect(r).toEqual({ status: 0, stderr: '' });
    expect(sha256(during)).toBe(before);
    const after = path.join(dir, 'after.img');
    expect(peer('nbdcopy', [nbdUri(s.socketPath, 'snap'), after]).status).toBe(0);
    expect(sha256(after)).toBe(before);
    await stop(s);
    expect(s.stdout()).toContain(`status snap: 0 ${sectors} snapshot 7208/16384 40\n`);

    // The same writes offline.
    const input5a = path.join(dir, '5a.bin');
    const inputA5 = path.join(dir, 'a5.bin');
    fs.writeFileSync(input5a, Buffer.alloc(3 * MiB, 0x5a));
    fs.writeFileSync(inputA5, Buffer.alloc(512 * 1024, 0xa5));
    expect(dmtool(['snapshot-create', offline.origin, offline.cow, '--chunk-size', '8']).status).toBe(0);
    for (const [offset, input] of [
      ['1M', input5a],
      ['20M', inputA5],
    ]) {
      const o = dmtool(['snapshot-write', offline.origin, offline.cow, '--target', 'origin', '--offset', offset, '-i', input]);
      expect(o.stderr).toBe('');
      expect(o.status).toBe(0);
    }
    expect(sha256(cow)).toBe(sha256(offline.cow));
    expect(sha256(origin)).toBe(sha256(offline.origin));
    const served = dmtool(['snapshot-status', cow]);
    expect(served.stdout).toBe(dmtool(['snapshot-status', offline.cow]).stdout);
    expect(served.stdout).toBe('7208/16384 40\n');
  },
);

describe.each([2, 9, 20])('a power cut while a served origin is written (after %i cached writes reach the disk)', (appliedWrites) => {
  when(nbdcopy)('leaves a valid COW whose snapshot view is still the origin as it was', async () => {
    const origin = path.join(dir, 'origin.img');
    const cow = path.join(dir, 'cow.img');
    randomFile(origin, 8 * MiB, 31);
    makeZeroFile(cow, 8 * MiB);
    expect(dmtool(['snapshot-create', origin, cow, '--chunk-size', '8']).status).toBe(0);
    const before = sha256(origin);
    const input = path.join(dir, 'input.img');
    randomFile(input, 4 * MiB, 32);
    // Writes stay in a volatile cache until a flush, which applies them in reverse order; the process is
    // killed once that many of them reached the disk: a power cut in the middle of a commit.
    const faults = { volatileCache: { order: 'reverse' }, crashDuringFlush: appliedWrites };
    const s = await serve(
      ['--dev', 'data', `0 16384 snapshot-origin ${origin}`, '--dev', 'snap', `0 16384 snapshot ${origin} ${cow} P 8`],
      { ...process.env, DMTOOL_FAULTS: JSON.stringify(faults) },
    );
    peer('nbdcopy', [input, nbdUri(s.socketPath, 'data')]);
    servers.splice(servers.indexOf(s), 1);
    expect(await s.stop()).toEqual({ status: null, signal: 'SIGKILL' });
    const view = path.join(dir, 'view.img');
    const r = dmtool(['snapshot-read', origin, cow, '-o', view]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(sha256(view)).toBe(before);
  });
});

describe('a served mirror', () => {
  function makeMirror(): { legs: string[]; log: string; table: string } {
    const legs = [path.join(dir, 'leg0.img'), path.join(dir, 'leg1.img')];
    const log = path.join(dir, 'log.img');
    for (const f of legs) makeZeroFile(f, 16 * MiB);
    makeZeroFile(log, MiB);
    expect(dmtool(['mirror-create', '--log', log, '--region-size', '1024', '--nosync', ...legs]).status).toBe(0);
    return { legs, log, table: `0 32768 mirror disk 2 ${log} 1024 2 ${legs[0]} 0 ${legs[1]} 0` };
  }

  when(nbdcopy)('from --config: nbdcopy writes reach every leg; after a clean stop the log is all in sync', async () => {
    const m = makeMirror();
    const config = path.join(dir, 'devices.json');
    fs.writeFileSync(config, JSON.stringify({ devices: [{ name: 'm', table: m.table }] }));
    const input = path.join(dir, 'input.img');
    randomFile(input, 16 * MiB, 11);
    const s = await serve(['--config', config]);
    const info = peer('nbdinfo', ['--json', nbdUri(s.socketPath, 'm')]);
    expect(JSON.parse(info.stdout).exports[0]).toMatchObject({ 'export-size': 16 * MiB, block_size_preferred: 512 * 1024 });
    const r = peer('nbdcopy', [input, nbdUri(s.socketPath, 'm')]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    await stop(s);
    expect(s.stdout()).toContain(`status m: 0 32768 mirror 2 ${m.legs[0]} ${m.legs[1]} 32/32 1 AA 3 disk ${m.log} A\n`);
    expect(sha256(m.legs[0])).toBe(sha256(input));
    expect(sha256(m.legs[1])).toBe(sha256(input));
    const st = dmtool(['mirror-status', '--table', m.table]);
    expect(st.stdout).toBe(
      `0 32768 mirror 2 ${m.legs[0]} ${m.legs[1]} 32/32 1 AA 3 disk ${m.log} A\n${m.table}\n32/32 regions in sync (region 1024 sectors = 512.0 KiB)\n`,
    );
  });

  when(nbdsh)('a write while a leg fails: the leg is D in the status, its region stays out of sync in the log', async () => {
    const m = makeMirror();
    const faults = { rules: [{ op: 'write', code: 'EIO', path: 'leg1.img' }] };
    const s = await serve(['--dev', 'm', m.table], { ...process.env, DMTOOL_FAULTS: JSON.stringify(faults) });
    const script = `
h.pwrite(b"\\x77" * 65536, ${MiB})
h.flush()
assert h.pread(65536, ${MiB}) == b"\\x77" * 65536
print("ok")
`;
    const r = peer('nbdsh', ['-u', nbdUri(s.socketPath, 'm'), '-c', script]);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('ok');
    await stop(s);
    // Without handle_errors the kernel completes the write on the legs that took it, and marks the leg.
    expect(s.stdout()).toContain(`status m: 0 32768 mirror 2 ${m.legs[0]} ${m.legs[1]} 31/32 1 AD 3 disk ${m.log} A\n`);
    expect(sha256(m.legs[0], MiB, 65536)).toBe(sha256(writeOf(0x77, 65536)));
    expect(sha256(m.legs[1], MiB, 65536)).toBe(sha256(writeOf(0, 65536)));
    const st = dmtool(['mirror-status', '--table', m.table]);
    expect(st.stdout).toContain(`0 32768 mirror 2 ${m.legs[0]} ${m.legs[1]} 31/32 1 AA 3 disk ${m.log} A\n`);
    expect(st.stdout).toContain('31/32 regions in sync (region 1024 sectors = 512.0 KiB); dirty: 2\n');
  });

  when(nbdcopy)('an out-of-sync mirror is resynced in the background while it is served and read', async () => {
    const legs = [path.join(dir, 'leg0.img'), path.join(dir, 'leg1.img')];
    const log = path.join(dir, 'log.img');
    randomFile(legs[0], 16 * MiB, 21);
    randomFile(legs[1], 16 * MiB, 22);
    makeZeroFile(log, MiB);
    // A new log: every region out of sync, to be copied from leg 0.
    expect(dmtool(['mirror-create', '--log', log, '--region-size', '1024', ...legs]).status).toBe(0);
    const primary = sha256(legs[0]);
    const table = `0 32768 mirror disk 2 ${log} 1024 2 ${legs[0]} 0 ${legs[1]} 0`;
    const s = await serve(['--dev', 'm', table]);
    const view = path.join(dir, 'view.img');
    expect(peer('nbdcopy', [nbdUri(s.socketPath, 'm'), view]).status).toBe(0);
    expect(sha256(view)).toBe(primary);
    // The server holds the log's lock; its bytes on disk show the progress (bounded wait).
    const inSync = () => {
      const image = decodeDiskLog(fs.readFileSync(log), { path: log });
      return Array.from({ length: 32 }, (_, r) => image.clean.get(r)).every(Boolean);
    };
    expect(await waitFor(inSync, 30000)).toBe(true);
    await stop(s);
    expect(s.stdout()).toContain(`status m: 0 32768 mirror 2 ${legs[0]} ${legs[1]} 32/32 1 AA 3 disk ${log} A\n`);
    expect(sha256(legs[1])).toBe(primary);
    expect(sha256(legs[0])).toBe(primary);
  });

  test('SIGTERM during the background resync: the status printed is what the log records; a restart finishes it', async () => {
    const legs = [path.join(dir, 'leg0.img'), path.join(dir, 'leg1.img')];
    const log = path.join(dir, 'log.img');
    for (const f of legs) makeZeroFile(f, 256 * MiB);
    makeZeroFile(log, MiB);
    expect(dmtool(['mirror-create', '--log', log, '--region-size', '1024', ...legs]).status).toBe(0);
    const table = `0 524288 mirror disk 2 ${log} 1024 2 ${legs[0]} 0 ${legs[1]} 0`;
    const first = await serve(['--dev', 'm', table]);
    await stop(first);
    const synced = /status m: 0 524288 mirror 2 \S+ \S+ (\d+)\/512 1 AA 3 disk \S+ A\n/.exec(first.stdout());
    expect(synced).not.toBeNull();
    const st = dmtool(['mirror-status', '--table', table]);
    expect(st.stdout).toContain(`${synced![1]}/512 regions in sync`);
    const second = await serve(['--dev', 'm', table]);
    const inSync = () => decodeDiskLog(fs.readFileSync(log), { path: log }).clean.count() === 512;
    expect(await waitFor(inSync, 60000)).toBe(true);
    await stop(second);
    expect(second.stdout()).toContain(`status m: 0 524288 mirror 2 ${legs[0]} ${legs[1]} 512/512 1 AA 3 disk ${log} A\n`);
  });

  function writeOf(byte: number, bytes: number): string {
    const f = path.join(dir, `fill-${byte}.bin`);
    fs.writeFileSync(f, Buffer.alloc(bytes, byte));
    return f;
  }
});

test('bad --config and bad table lines: one error line, exit 2, nothing written', () => {
  const origin = path.join(dir, 'origin.img');
  const cow = path.join(dir, 'cow.img');
  makeZeroFile(origin, MiB);
  makeZeroFile(cow, MiB);
  const socket = path.join(dir, 'bad.sock');
  const cases: [string, string[], string][] = [
    ['not JSON', ['--config', 'bad.json'], 'dmtool: --config bad.json: not JSON: '],
    ['no devices', ['--config', 'empty.json'], 'dmtool: --config empty.json: devices: '],
    ['unknown key', ['--config', 'extra.json'], "dmtool: --config extra.json: devices.0: Unrecognized key(s) in object: 'size'"],
    [
      'bad chunk',
      ['--dev', 's', `0 2048 snapshot ${origin} ${cow} P 3`],
      'dmtool: device s: chunk size must be a power of two number of sectors, got 3\n',
    ],
    ['no device', [], 'dmtool: give at least one device: --dev NAME "TABLE LINE" or --config FILE\n'],
  ];
  fs.writeFileSync(path.join(dir, 'bad.json'), '{"devices": [');
  fs.writeFileSync(path.join(dir, 'empty.json'), '{"devices": []}');
  fs.writeFileSync(path.join(dir, 'extra.json'), JSON.stringify({ devices: [{ name: 'a', table: `0 2048 linear ${origin} 0`, size: 1 }] }));
  for (const [, args, message] of cases) {
    const r = dmtool(['serve', ...args, '--socket', socket], { cwd: dir, timeoutMs: 20000 });
    expect(r.stderr.startsWith(message)).toBe(true);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.status).toBe(2);
  }
  expect(fs.readFileSync(cow).every((b) => b === 0)).toBe(true);
  expect(fs.existsSync(socket)).toBe(false);
});
