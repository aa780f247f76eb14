import { ChildProcess, spawn, spawnSync } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import {
  CowGeometry,
  encodeEntry,
  encodeExportHeader,
  encodeHeader,
  encodeRecordHead,
  encodeTrailer,
  EXPORT_HEADER_BYTES,
  EXPORT_VERSION,
  recordChunksFor,
  RECORD_DIGEST_BYTES,
  RECORD_HEAD_BYTES,
  streamBytesFor,
} from '@dmtool/dm-snapshot';
import { dmtool, DMTOOL, waitFor } from '../support/cli';
import { makeBaseOrigin, unpackFixture } from '../support/fixtures';
import { makeImage, readRange, sha256, sha256File } from '../support/images';
import { attachLoop, describeLoop, detachAll, removeDir, tempDir } from '../support/loop';
import { startNbdkit } from '../support/nbd-servers';

/** snapshot-export and snapshot-apply (docs/snapshot-export.md) on the kernel-made fixtures. */
let dir: string;
beforeAll(() => {
  dir = tempDir('dmtool-export-');
});
afterAll(() => removeDir(dir));

function ok(args: string[], input?: Buffer): string {
  const r = dmtool(args, { input });
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
  return r.stdout;
}

/** Run a shell pipeline with $DMTOOL set; its status is the pipeline's (pipefail). */
function sh(script: string): { status: number | null; stderr: string } {
  const r = spawnSync('bash', ['-c', `set -o pipefail; ${script}`], {
    encoding: 'utf8',
    env: { ...process.env, DMTOOL: `${process.execPath} ${DMTOOL}` },
    timeout: 120000,
  });
  return { status: r.status, stderr: r.stderr };
}

function copy(from: string, name: string): string {
  const to = path.join(dir, name);
  fs.copyFileSync(from, to);
  return to;
}

/** The snapshot view's sha256, as snapshot-read gives it. */
function viewSha(origin: string, cow: string, name: string): string {
  const view = path.join(dir, name);
  ok(['snapshot-read', origin, cow, '-o', view]);
  return sha256File(view);
}

describe.each([8, 16])('the kernel fixture snapshot-cow-chunk%i', (cs) => {
  let fx: string;
  let base: string;
  let manifest: any;
  beforeAll(() => {
    const sub = fs.mkdtempSync(path.join(dir, `cow${cs}-`));
    ({ dir: fx, manifest } = unpackFixture(`snapshot-cow-chunk${cs}`, sub));
    base = path.join(sub, 'base.img');
    makeBaseOrigin(base, manifest.images['origin.img'].size);
    expect(sha256File(base)).toBe(manifest.images['origin.img'].sha256_before);
  });

  test('--data origin brings the pre-snapshot origin up to the current origin', () => {
    const stream = path.join(dir, `origin-${cs}.delta`);
    const origin = path.join(fx, 'origin.img');
    const out = ok(['snapshot-export', origin, path.join(fx, 'cow.img'), '-o', stream]);
    const doc = JSON.parse(ok(['snapshot-apply', '-i', stream, copy(base, `dry-${cs}.img`), '--dry-run', '--json']));
    const chunks = manifest.exceptions_in_table_order.length;
    expect(doc).toMatchObject({ ok: true, dryRun: true, data: 'origin', chunkSectors: cs, originSectors: 131072, chunks });
    expect(doc.bytes).toBe(chunks * cs * 512);
    const delta = JSON.parse(ok(['snapshot-delta', path.join(fx, 'cow.img'), '--json']));
    expect(doc.ranges).toBe(delta.ranges.length);
    // A record holds at most 4 MiB: longer ranges are split.
    const perRecord = (4 << 20) / (cs * 512);
    expect(doc.records).toBe(delta.ranges.reduce((n: number, r: { count: number }) => n + Math.ceil(r.count / perRecord), 0));
    expect(doc.streamBytes).toBe(fs.statSync(stream).size);
    expect(doc.streamBytes).toBe(128 + doc.records * 56 + doc.bytes + 64);
    expect(out).toMatch(
      new RegExp(
        `^exported ${chunks} chunks in ${doc.ranges} ranges \\(\\d\\.\\d MiB of origin data, chunk ${cs} sectors\\) to ${stream} \\(\\d\\.\\d MiB, [\\d.]+ [KMG]?i?B/s\\); digest ${doc.digest}\n$`,
      ),
    );
    expect(sha256File(path.join(dir, `dry-${cs}.img`))).toBe(manifest.images['origin.img'].sha256_before);
    const target = copy(base, `backup-${cs}.img`);
    const applied = ok(['snapshot-apply', '-i', stream, target]);
    expect(applied).toMatch(
      new RegExp(`^applied ${chunks} chunks in ${doc.ranges} ranges .* to ${target} and flushed it .*; digest ${doc.digest}\n$`),
    );
    expect(sha256File(target)).toBe(sha256File(origin));
    expect(sha256File(target)).toBe(manifest.images['origin.img'].sha256_after);
  });

  test('--data snapshot rolls a copy of the current origin back to the snapshot view', () => {
    const stream = path.join(dir, `snap-${cs}.delta`);
    const origin = path.join(fx, 'origin.img');
    const cow = path.join(fx, 'cow.img');
    ok(['snapshot-export', origin, cow, '--data', 'snapshot', '-o', stream]);
    const target = copy(origin, `rollback-${cs}.img`);
    ok(['snapshot-apply', '-i', stream, target]);
    expect(sha256File(target)).toBe(viewSha(origin, cow, `view-${cs}.img`));
    expect(sha256File(target)).toBe(manifest.expected.snapshot_view_sha256);
  });

  test('a round trip through a pipe: -o - | -i -, spooled next to the target, is the same stream as a file', () => {
    const origin = path.join(fx, 'origin.img');
    const cow = path.join(fx, 'cow.img');
    const target = copy(base, `piped-${cs}.img`);
    const r = sh(`$DMTOOL snapshot-export ${origin} ${cow} -o - | $DMTOOL snapshot-apply -i - ${target} --json > ${dir}/piped-${cs}.json`);
    expect(r).toEqual({ status: 0, stderr: '' });
    const doc = JSON.parse(fs.readFileSync(path.join(dir, `piped-${cs}.json`), 'utf8'));
    expect(doc).toMatchObject({ verifiedFirst: true, spooled: true, input: '-' });
    expect(sha256File(target)).toBe(sha256File(origin));
    expect(fs.readdirSync(dir).filter((f) => f.includes('spool'))).toEqual([]);
    const stream = path.join(dir, `file-${cs}.delta`);
    const e = JSON.parse(ok(['snapshot-export', origin, cow, '-o', stream, '--json']));
    expect(e.digest).toBe(doc.digest);
    const again = spawnSync(
      'bash',
      ['-c', `set -o pipefail; ${process.execPath} ${DMTOOL} snapshot-export ${origin} ${cow} -o - | sha256sum`],
      {
        encoding: 'utf8',
      },
    );
    expect(again.status).toBe(0);
    expect(again.stdout.split(' ')[0]).toBe(sha256File(stream));
  });
});

describe.each([8, 16])('the kernel fixture snapshot-merge-chunk%i (a merged, empty COW)', (cs) => {
  test.each(['origin', 'snapshot'])('--data %s: no chunks; applying it leaves the target as it was', (data) => {
    const sub = fs.mkdtempSync(path.join(dir, `merge${cs}-`));
    const { dir: fx } = unpackFixture(`snapshot-merge-chunk${cs}`, sub);
    const origin = path.join(fx, 'origin.img');
    const stream = path.join(sub, 'empty.delta');
    const e = JSON.parse(ok(['snapshot-export', origin, path.join(fx, 'cow.img'), '--data', data, '-o', stream, '--json']));
    expect(e).toMatchObject({ ranges: 0, chunks: 0, records: 0, bytes: 0, streamBytes: 192 });
    const target = copy(origin, `merged-${cs}-${data}.img`);
    const before = sha256File(target);
    expect(ok(['snapshot-apply', '-i', stream, target])).toMatch(
      new RegExp(
        `^applied 0 chunks in 0 ranges \\(0 B of ${data} data, chunk ${cs} sectors\\) to ${target} and flushed it \\(.*\\); digest ${e.digest}\n$`,
      ),
    );
    expect(sha256File(target)).toBe(before);
    expect(before).toBe(viewSha(origin, path.join(fx, 'cow.img'), `merged-view-${cs}-${data}.img`));
  });
});

/** A stream built here from the format's encoders, with any records (right digests): to test apply's structure checks. */
function craftStream(records: { start: number; count: number; index?: number }[], originSectors = 131072, cs = 8): Buffer {
  const chunkBytes = cs * 512;
  const dataBytes = records.reduce((n, r) => n + r.count * chunkBytes, 0);
  const header = encodeExportHeader({
    version: EXPORT_VERSION,
    chunkSectors: cs,
    data: 'origin',
    originSectors,
    rangeCount: records.length,
    chunkCount: records.reduce((n, r) => n + r.count, 0),
    recordCount: records.length,
    recordChunks: recordChunksFor(cs),
    streamBytes: streamBytesFor(records.length, dataBytes),
    dataBytes,
    cowSectors: 32768,
    cowVersion: 1,
  });
  const streamHash = createHash('sha256').update(header);
  const parts = [header];
  records.forEach((r, i) => {
    const head = encodeRecordHead({ start: r.start, count: r.count, index: r.index ?? i });
    const data = Buffer.alloc(r.count * chunkBytes, 0xa5);
    const digest = createHash('sha256').update(head).update(data).digest();
    streamHash.update(digest);
    parts.push(head, data, digest);
  });
  const before = parts.reduce((n, p) => n + p.length, 0);
  parts.push(
    encodeTrailer({
      recordCount: records.length,
      chunkCount: records.reduce((n, r) => n + r.count, 0),
      bytesBefore: before,
      digest: streamHash.digest('hex'),
    }),
  );
  return Buffer.concat(parts);
}

describe('broken streams are refused whole: one line, exit 2, the target unchanged', () => {
  let fx: string;
  let good: Buffer;
  let target: string;
  let targetSha: string;
  beforeAll(() => {
    const sub = fs.mkdtempSync(path.join(dir, 'broken-'));
    fx = unpackFixture('snapshot-cow-chunk8', sub).dir;
    const stream = path.join(sub, 'good.delta');
    ok(['snapshot-export', path.join(fx, 'origin.img'), path.join(fx, 'cow.img'), '-o', stream]);
    good = fs.readFileSync(stream);
    target = path.join(sub, 'base.img');
    makeBaseOrigin(target, 64 << 20);
    targetSha = sha256File(target);
  });

  /** Record 5 of the kernel fixture's stream: chunks 39..40, after records of 1, 1, 3, 1 and 1 chunks. */
  const RECORD5_DATA = EXPORT_HEADER_BYTES + 5 * (RECORD_HEAD_BYTES + RECORD_DIGEST_BYTES) + 7 * 4096 + RECORD_HEAD_BYTES;

  function flipped(at: number): Buffer {
    const b = Buffer.from(good);
    b[at] ^= 0x01;
    return b;
  }

  const cases: [string, () => Buffer, RegExp][] = [
    [
      'a byte flipped in a record',
      () => flipped(RECORD5_DATA + 100),
      /^dmtool: EINVAL: record 5 \(chunks 39\.\.40\): checksum mismatch, its head or data is damaged$/,
    ],
    [
      'a byte flipped in a record head',
      () => flipped(RECORD5_DATA - RECORD_HEAD_BYTES + 16),
      /^dmtool: EINVAL: record 5 says it is record 4: records are missing, repeated or out of order$/,
    ],
    [
      'the trailer cut off',
      () => good.subarray(0, good.length - 64),
      /^dmtool: EINVAL: the stream ends inside the trailer \(1270336 bytes of 1270400\): it was cut short$/,
    ],
    [
      'cut inside a record',
      () => good.subarray(0, 1000000),
      /^dmtool: EINVAL: the stream ends inside the data of record 6 \(chunks 100\.\.399\) \(1000000 bytes of 1270400\): it was cut short$/,
    ],
    [
      'a byte flipped in the trailer digest',
      () => flipped(good.length - 1),
      /^dmtool: EINVAL: trailer: stream digest mismatch \([0-9a-f]{64}, the records give [0-9a-f]{64}\)$/,
    ],
    [
      'bytes after the trailer',
      () => Buffer.concat([good, Buffer.alloc(512)]),
      /^dmtool: EINVAL: bytes follow the trailer at byte 1270400: not one whole stream$/,
    ],
    [
      'wrong magic',
      () => Buffer.concat([Buffer.from('DMTEXPRX'), good.subarray(8)]),
      /^dmtool: EINVAL: not a snapshot-export stream: bad magic "DMTEXPRX" \(expected "DMTEXPRT"\)$/,
    ],
    ['a damaged header', () => flipped(30), /^dmtool: EINVAL: header checksum mismatch: the header is damaged$/],
    ['an empty input', () => Buffer.alloc(0), /^dmtool: EINVAL: the stream ends inside its header \(0 of 128 bytes\)$/],
    [
      'a range past the origin end',
      () =>
        craftStream([
          { start: 10, count: 2 },
          { start: 16383, count: 2 },
        ]),
      /^dmtool: EINVAL: record 1 \(chunks 16383\.\.16384\) lies past the origin end \(16384 chunks of 8 sectors, 131072 sectors\)$/,
    ],
    [
      'overlapping ranges',
      () =>
        craftStream([
          { start: 10, count: 4 },
          { start: 12, count: 4 },
        ]),
      /^dmtool: EINVAL: record 1 \(chunks 12\.\.15\) overlaps or precedes the record before it, which ends at chunk 13: ranges must ascend$/,
    ],
    [
      'descending ranges',
      () =>
        craftStream([
          { start: 100, count: 1 },
          { start: 50, count: 1 },
        ]),
      /^dmtool: EINVAL: record 1 \(chunk 50\) overlaps or precedes the record before it, which ends at chunk 100: ranges must ascend$/,
    ],
    [
      'a record repeated',
      () =>
        craftStream([
          { start: 100, count: 1 },
          { start: 200, count: 1, index: 0 },
        ]),
      /^dmtool: EINVAL: record 1 says it is record 0: records are missing, repeated or out of order$/,
    ],
    [
      'a stream for another origin size',
      () => craftStream([{ start: 1, count: 1 }], 131080),
      /^dmtool: EINVAL: target .*base\.img is 131072 sectors, the stream's origin 131080: a stream applies only to a device of its origin's size$/,
    ],
  ];

  test.each(cases)('%s: from a file and from a pipe', (name, make, message) => {
    const bad = make();
    const file = path.join(dir, `bad-${name.replace(/\W+/g, '-')}.delta`);
    fs.writeFileSync(file, bad);
    for (const args of [
      ['-i', file],
      ['-i', '-'],
    ]) {
      const r = dmtool(['snapshot-apply', ...args, target], { input: args[1] === '-' ? bad : undefined });
      expect(r.status).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr.split('\n').filter((l) => l)).toHaveLength(1);
      expect(r.stderr.trimEnd()).toMatch(message);
      expect(sha256File(target)).toBe(targetSha);
    }
  });

  test('--no-verify-first from a pipe: stops at the first bad record, exit 1, and says which chunks it wrote (those, flushed)', () => {
    const model = readRange(target, 0, 64 << 20);
    for (const c of [3, 5, 7, 8, 9, 20, 30]) readRange(path.join(fx, 'origin.img'), c * 4096, 4096).copy(model, c * 4096);
    expect(sha256(model)).not.toBe(targetSha);
    const r = dmtool(['snapshot-apply', '-i', '-', target, '--no-verify-first'], { input: flipped(RECORD5_DATA + 100) });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(
      `dmtool: EINVAL: record 5 (chunks 39..40): checksum mismatch, its head or data is damaged; records 0..4 were written and flushed: 7 chunks in 5 ranges (chunks 3, 5, 7..9, 20, 30); no later chunk was written (${target})\n`,
    );
    expect(sha256File(target)).toBe(sha256(model));
    makeBaseOrigin(target, 64 << 20);
  });

  test('SIGINT while a pipe has gone quiet: stops between records, flushes, says what it wrote (exit 130); running it again finishes', async () => {
    const model = readRange(target, 0, 64 << 20);
    for (const c of [3, 5, 7, 8, 9, 20, 30]) readRange(path.join(fx, 'origin.img'), c * 4096, 4096).copy(model, c * 4096);
    const child = spawn(process.execPath, [DMTOOL, 'snapshot-apply', '-i', '-', target, '--no-verify-first'], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30000);
    try {
      child.stdin.write(good.subarray(0, RECORD5_DATA - RECORD_HEAD_BYTES));
      // The five records are written (not yet flushed) once the file reads as the model.
      expect(await waitFor(() => sha256File(target) === sha256(model), 20000)).toBe(true);
      child.kill('SIGINT');
      expect(await exited).toBe(130);
    } finally {
      clearTimeout(timer);
      child.stdin.destroy();
    }
    expect(stderr).toBe(
      'dmtool: interrupted by SIGINT: records 0..4 were written and flushed: 7 chunks in 5 ranges (chunks 3, 5, 7..9, 20, 30); no later chunk was written; run the command again to apply the stream (records written already are written again with the same data)\n',
    );
    expect(sha256File(target)).toBe(sha256(model));
    ok(['snapshot-apply', '-i', '-', target], good);
    expect(sha256File(target)).toBe(sha256File(path.join(fx, 'origin.img')));
    makeBaseOrigin(target, 64 << 20);
  });

  test('an I/O error on the target: exit 1, flushed, and the line says which chunks were written', () => {
    const stream = path.join(dir, 'io-error.delta');
    fs.writeFileSync(stream, good);
    const r = dmtool(['snapshot-apply', '-i', stream, target], {
      faults: { rules: [{ op: 'write', code: 'EIO', path: 'base.img', fromByte: 100 * 4096, toByte: 100 * 4096 + 1 }] },
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /^dmtool: EIO: write failed on .*base\.img.*; records 0\.\.5 were written and flushed: 9 chunks in 6 ranges \(chunks 3, 5, 7\.\.9, 20, 30, 39\.\.40\); no later chunk was written \(.*base\.img\)\n$/,
    );
    makeBaseOrigin(target, 64 << 20);
  });

  test('--help: examples, the size rule, the exit codes', () => {
    for (const command of ['snapshot-export', 'snapshot-apply']) {
      const r = dmtool([command, '--help']);
      expect(r.status).toBe(0);
      expect(r.stdout).toContain(`dmtool ${command}`);
      expect(r.stdout).toContain('Exit codes: 0 ok, 1 I/O error during the operation, 2 bad input (nothing written)');
    }
    expect(dmtool(['snapshot-apply', '--help']).stdout).toContain("Its size must be the stream's origin size (no option overrides this)");
    expect(dmtool(['snapshot-export', '--help']).stdout).toContain('| ssh backup dmtool snapshot-apply -i - /backup/data.img');
  });

  test('--progress=FD: lines of data bytes, from 0 to the whole', () => {
    const stream = path.join(dir, 'progress.delta');
    const r = spawnSync(
      'bash',
      [
        '-c',
        `${process.execPath} ${DMTOOL} snapshot-export ${path.join(fx, 'origin.img')} ${path.join(fx, 'cow.img')} -o ${stream} --progress=3 3>&2 2>/dev/null`,
      ],
      { encoding: 'utf8' },
    );
    expect(r.status).toBe(0);
    const lines = r.stderr.trim().split('\n');
    expect(lines[0]).toBe('progress 0 1269760 0');
    expect(lines.at(-1)).toBe('progress 1269760 1269760 100');
    const a = spawnSync(
      'bash',
      ['-c', `${process.execPath} ${DMTOOL} snapshot-apply -i ${stream} ${target} --dry-run --progress=3 3>&2 2>/dev/null >/dev/null`],
      {
        encoding: 'utf8',
      },
    );
    expect(a.status).toBe(0);
    expect(a.stderr.trim().split('\n').at(-1)).toBe('progress 1270400 1270400 100');
    expect(sha256File(target)).toBe(targetSha);
  });

  test('a spool folder without room for the stream is refused before anything is read further', () => {
    const mnt = fs.mkdtempSync(path.join(dir, 'small-tmpfs-'));
    spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=256k', 'tmpfs', mnt]);
    try {
      const r = dmtool(['snapshot-apply', '-i', '-', target, '--spool-dir', mnt], { input: good });
      expect(r.status).toBe(2);
      expect(r.stderr).toMatch(
        /^dmtool: not enough space to spool the stream in .*small-tmpfs-\w+: it needs 1\.2 MiB \(1270400 bytes\), 256\.0 KiB are free; give --spool-dir DIR with room, or --no-verify-first\n$/,
      );
      expect(sha256File(target)).toBe(targetSha);
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
});

test('NBD: export an origin served read-only by nbdkit, apply to a copy served by nbdkit', async () => {
  const sub = fs.mkdtempSync(path.join(dir, 'nbd-'));
  const fx = unpackFixture('snapshot-cow-chunk8', sub).dir;
  const backup = path.join(sub, 'backup.img');
  makeBaseOrigin(backup, 64 << 20);
  const originSock = path.join(sub, 'origin.sock');
  const backupSock = path.join(sub, 'backup.sock');
  const originServer = await startNbdkit(['-r', 'file', `file=${path.join(fx, 'origin.img')}`], originSock);
  try {
    const backupServer = await startNbdkit(['file', `file=${backup}`], backupSock);
    try {
      const stream = path.join(sub, 'nbd.delta');
      ok(['snapshot-export', `nbd+unix:///?socket=${originSock}`, path.join(fx, 'cow.img'), '-o', stream]);
      const doc = JSON.parse(ok(['snapshot-apply', '-i', stream, `nbd+unix:///?socket=${backupSock}`, '--json']));
      expect(doc).toMatchObject({ chunks: 310, target: `nbd+unix:///?socket=${backupSock}` });
    } finally {
      await backupServer.stop();
    }
  } finally {
    await originServer.stop();
  }
  expect(sha256File(backup)).toBe(sha256File(path.join(fx, 'origin.img')));
});

describeLoop('a loop device as the target', () => {
  afterAll(() => detachAll());

  test('export --data origin applied to a loop device holding the pre-snapshot origin: the current origin', () => {
    const sub = fs.mkdtempSync(path.join(dir, 'loop-'));
    const fx = unpackFixture('snapshot-cow-chunk8', sub).dir;
    const backing = path.join(sub, 'backup.img');
    makeBaseOrigin(backing, 64 << 20);
    const stream = path.join(sub, 'tonight.delta');
    ok(['snapshot-export', path.join(fx, 'origin.img'), path.join(fx, 'cow.img'), '-o', stream]);
    const loop = attachLoop(backing);
    try {
      const doc = JSON.parse(ok(['snapshot-apply', '-i', stream, loop.path, '--json']));
      expect(doc).toMatchObject({ ok: true, target: loop.path, chunks: 310, verifiedFirst: true, spooled: false });
      expect(sha256File(loop.path)).toBe(sha256File(path.join(fx, 'origin.img')));
    } finally {
      loop.detach();
    }
    expect(sha256File(backing)).toBe(sha256File(path.join(fx, 'origin.img')));
  });
});

test('an origin that is not a whole number of chunks: the last chunk travels cut at the origin end', () => {
  const sub = fs.mkdtempSync(path.join(dir, 'partial-'));
  const origin = path.join(sub, 'origin.img');
  const cow = path.join(sub, 'cow.img');
  makeImage(origin, (8192 + 3) * 512, 'ORIGIN');
  makeImage(cow, 1 << 20);
  const before = copy(origin, 'partial-before.img');
  ok(['snapshot-create', origin, cow, '--chunk-size', '8']);
  const data = path.join(sub, 'new.bin');
  fs.writeFileSync(data, Buffer.alloc(2 * 512, 0x5a));
  ok(['snapshot-write', origin, cow, '--target', 'origin', '--offset', '8193', '-i', data]);
  ok(['snapshot-write', origin, cow, '--target', 'snapshot', '--offset', '16', '-i', data]);
  const stream = path.join(sub, 'partial.delta');
  const doc = JSON.parse(ok(['snapshot-export', origin, cow, '-o', stream, '--json']));
  expect(doc).toMatchObject({ originSectors: 8195, ranges: 2, chunks: 2, records: 2, bytes: 8 * 512 + 3 * 512 });
  ok(['snapshot-apply', '-i', stream, before]);
  expect(sha256File(before)).toBe(sha256File(origin));
  const back = path.join(sub, 'partial.snap.delta');
  ok(['snapshot-export', origin, cow, '--data', 'snapshot', '-o', back]);
  const now = copy(origin, 'partial-now.img');
  ok(['snapshot-apply', '-i', back, now]);
  expect(sha256File(now)).toBe(viewSha(origin, cow, 'partial-view.img'));
});

describe('a COW of 100,000 exceptions', () => {
  /**
   * Written here in the kernel's layout: chunk 4 KiB, 391 areas, the origin
   * chunks scattered (i · 7919 mod 2^18, so the table is far from origin
   * order) over a sparse 1 GiB origin.
   */
  function bigCow(sub: string): { origin: string; cow: string; olds: number[] } {
    const n = 100_000;
    const g = new CowGeometry(8, 0);
    const E = g.exceptionsPerArea;
    const areas = Math.ceil(n / E);
    const origin = path.join(sub, 'origin.img');
    const cow = path.join(sub, 'cow.img');
    makeImage(origin, 1 << 30);
    makeImage(cow, (1 + areas * g.stride) * 4096);
    const olds = Array.from({ length: n }, (_, i) => (i * 7919) % 262144);
    const fd = fs.openSync(cow, 'r+');
    try {
      const header = Buffer.alloc(4096);
      encodeHeader(header, { valid: true, chunkSectors: 8 });
      fs.writeSync(fd, header, 0, 4096, 0);
      for (let a = 0; a < areas; a++) {
        const area = Buffer.alloc(4096);
        for (let j = a * E; j < Math.min(n, (a + 1) * E); j++) encodeEntry(area, j - a * E, olds[j], g.dataChunkOfIndex(j));
        fs.writeSync(fd, area, 0, 4096, g.areaChunk(a) * 4096);
      }
    } finally {
      fs.closeSync(fd);
    }
    return { origin, cow, olds };
  }

  /** Polls the peak resident memory (VmHWM) of running processes until they end. */
  async function peaksWhileRunning(children: ChildProcess[]): Promise<number[]> {
    const peaks = children.map(() => 0);
    const ended = children.map((c) => new Promise<void>((resolve) => c.on('close', () => resolve())));
    let running = children.length;
    ended.forEach((e) => void e.then(() => running--));
    const timer = setTimeout(() => children.forEach((c) => c.kill('SIGKILL')), 120000);
    while (running > 0) {
      children.forEach((c, i) => {
        try {
          const m = /VmHWM:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${c.pid}/status`, 'utf8'));
          if (m) peaks[i] = Math.max(peaks[i], Number(m[1]) * 1024);
        } catch {
          // ended between the check and the read
        }
      });
      await new Promise((r) => setTimeout(r, 10));
    }
    clearTimeout(timer);
    return peaks;
  }

  async function peakRssBytes(args: string[]): Promise<{ peak: number; stdout: string; status: number | null }> {
    const child = spawn(process.execPath, [DMTOOL, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let stdout = '';
    child.stdout.on('data', (d) => (stdout += d));
    const status = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const [peak] = await peaksWhileRunning([child]);
    return { peak, stdout, status: await status };
  }

  test('export reads the table area by area and streams 400 MiB of data in bounded memory', async () => {
    const sub = fs.mkdtempSync(path.join(dir, 'big-'));
    const { origin, cow, olds } = bigCow(sub);
    const sorted = [...olds].sort((a, b) => a - b);
    let ranges = 0;
    sorted.forEach((c, i) => (ranges += i === 0 || sorted[i - 1] + 1 !== c ? 1 : 0));
    for (const data of ['origin', 'snapshot']) {
      const r = await peakRssBytes(['snapshot-export', origin, cow, '--data', data, '-o', '/dev/null', '--json']);
      expect(r.status).toBe(0);
      const doc = JSON.parse(r.stdout);
      expect(doc).toMatchObject({ chunks: 100_000, ranges, bytes: 100_000 * 4096 });
      // The data alone is 391 MiB: a stream held in memory would show here.
      expect(r.peak).toBeLessThan(160 << 20);
      expect(r.peak).toBeGreaterThan(0);
    }
  });

  test('SIGTERM during an export to a file: exit 143, the temporary file removed, the output never appears', async () => {
    const sub = fs.mkdtempSync(path.join(dir, 'big-term-'));
    const { origin, cow } = bigCow(sub);
    const out = path.join(sub, 'out.delta');
    const child = spawn(process.execPath, [DMTOOL, 'snapshot-export', origin, cow, '-o', out], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const status = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    const partial = path.join(sub, `.out.delta.${child.pid}.partial`);
    const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
    try {
      expect(await waitFor(() => fs.existsSync(partial) && fs.statSync(partial).size > 1 << 20, 30000)).toBe(true);
      child.kill('SIGTERM');
      expect(await status).toBe(143);
    } finally {
      clearTimeout(timer);
    }
    expect(stderr).toBe(
      `dmtool: interrupted by SIGTERM: export stopped, ${out} left as it was; run the command again to export the whole stream\n`,
    );
    expect(fs.readdirSync(sub).sort()).toEqual(['cow.img', 'origin.img']);
  });

  test('export -o - piped into apply --dry-run -i -: both in bounded memory', async () => {
    const sub = fs.mkdtempSync(path.join(dir, 'big-pipe-'));
    const { origin, cow } = bigCow(sub);
    const exporter = spawn(process.execPath, [DMTOOL, 'snapshot-export', origin, cow, '-o', '-'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const target = path.join(sub, 'copy.img');
    makeImage(target, 1 << 30);
    const applier = spawn(process.execPath, [DMTOOL, 'snapshot-apply', '-i', '-', target, '--dry-run', '--json'], {
      stdio: [exporter.stdout, 'pipe', 'inherit'],
    });
    // Only the two children hold the pipe: if the reader ends, the writer is not left blocked.
    exporter.stdout!.destroy();
    let stdout = '';
    applier.stdout!.on('data', (d) => (stdout += d));
    const statuses = Promise.all([exporter, applier].map((c) => new Promise((resolve) => c.on('close', (code) => resolve(code)))));
    const peaks = await peaksWhileRunning([exporter, applier]);
    expect(await statuses).toEqual([0, 0]);
    expect(JSON.parse(stdout)).toMatchObject({ dryRun: true, chunks: 100_000, bytes: 100_000 * 4096, spooled: false });
    // 391 MiB went through the pipe: a reader that kept what it read would show here.
    for (const peak of peaks) expect(peak).toBeLessThan(160 << 20);
  });
});
