import * as fs from 'fs';
import * as path from 'path';
import { z } from 'zod';
import { COMMANDS } from '../../packages/cli/src/commands';
import { failureSchema, JSON_SCHEMAS, JsonCommand, REPORT_SCHEMAS } from '../../packages/cli/src/json/schemas';
import { dmtool } from '../support/cli';
import { makeImage, patternBytes } from '../support/images';
import { makeVgImages } from '../support/lvm-images';
import { removeDir, tempDir } from '../support/loop';

/** Every command's --json document against its schema (docs/json.md), with a few exact values. */
const MiB = 1 << 20;

describe('--json documents', () => {
  let dir: string;
  const f = (name: string) => path.join(dir, name);
  beforeAll(() => {
    dir = tempDir('dmtool-json-');
    makeImage(f('src.img'), MiB, 'SRC');
    makeImage(f('dst.img'), MiB);
    makeImage(f('origin.img'), 4 * MiB, 'ORIGIN');
    makeImage(f('cow.img'), 2 * MiB);
    fs.writeFileSync(f('data.bin'), patternBytes('NEW', 0, 16));
    for (const leg of ['leg0.img', 'leg1.img']) makeImage(f(leg), 2 * MiB, 'LEG');
    makeImage(f('log.img'), 64 * 1024);
  });
  afterAll(() => removeDir(dir));

  function run<C extends JsonCommand>(command: C, args: string[], status = 0): z.infer<(typeof JSON_SCHEMAS)[C]> {
    const r = dmtool([command, ...args, '--json']);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status, stderr: expect.any(String) });
    const doc = JSON_SCHEMAS[command].parse(JSON.parse(r.stdout)) as z.infer<(typeof JSON_SCHEMAS)[C]>;
    expect(doc.command).toBe(command);
    expect(doc.ok).toBe(status === 0);
    return doc;
  }

  it('copy and zero: dry run, run', () => {
    expect(run('copy', [f('src.img'), f('dst.img'), '--dry-run'])).toMatchObject({ dryRun: true, sectors: 2048, bytes: MiB });
    const c = run('copy', [f('src.img'), f('dst.img'), '--length', '512k']);
    expect(c).toMatchObject({ dryRun: false, sectors: 1024, sectorsDone: 1024, bytesDone: 512 * 1024, percent: 100 });
    expect(c).toMatchObject({ readErr: false, writeErr: 0, interrupted: false, errors: [] });
    expect(c).toMatchObject({ created: [], sparse: 'auto', map: null, resumedSectors: 0 });
    expect(run('copy', [f('src.img'), f('new.img'), '--dry-run', '--sparse=never'])).toMatchObject({
      created: [f('new.img')],
      sparse: 'never',
      sectors: 2048,
    });
    expect(run('copy', [f('src.img'), f('new.img'), '--map', f('new.map')])).toMatchObject({
      created: [f('new.img')],
      map: f('new.map'),
      sectorsDone: 2048,
    });
    expect(run('zero', [f('dst.img'), '--dry-run'])).toMatchObject({ dryRun: true, devices: [f('dst.img')], sectors: 2048 });
    expect(run('zero', [f('dst.img'), '--length', '8'])).toMatchObject({ dryRun: false, sectorsDone: 8, percent: 100, errors: [] });
  });

  it('the snapshot commands', () => {
    const o = f('origin.img');
    const c = f('cow.img');
    expect(run('snapshot-create', [o, c, '--chunk-size', '8', '--dry-run'])).toMatchObject({ dryRun: true, table: null });
    expect(run('snapshot-create', [o, c, '--chunk-size', '8'])).toMatchObject({
      status: '16/4096 16',
      table: `0 8192 snapshot ${o} ${c} P 8`,
    });
    expect(run('snapshot-write', [o, c, '--target', 'origin', '--offset', '16', '-i', f('data.bin'), '--dry-run'])).toMatchObject({
      dryRun: true,
      newExceptions: 2,
      fits: true,
      statusAfter: '32/4096 16',
    });
    expect(run('snapshot-write', [o, c, '--target', 'origin', '--offset', '16', '-i', f('data.bin')])).toMatchObject({
      status: '32/4096 16',
      exceptions: 2,
      invalidated: false,
    });
    expect(run('snapshot-status', [c])).toMatchObject({
      status: '32/4096 16',
      allocatedSectors: 32,
      totalSectors: 4096,
      dataPercent: 0.78,
    });
    expect(run('snapshot-list', [c]).table).toEqual([
      { index: 0, oldChunk: 2, newChunk: 2, originSector: 16, cowSector: 16 },
      { index: 1, oldChunk: 3, newChunk: 3, originSector: 24, cowSector: 24 },
    ]);
    expect(run('snapshot-read', [o, c, '--length', '32', '-o', f('view.bin')])).toMatchObject({ sectors: 32, bytes: 16384 });
    const delta = f('tonight.delta');
    const exported = run('snapshot-export', [o, c, '-o', delta]);
    expect(exported).toMatchObject({ data: 'origin', chunkSectors: 8, originSectors: 8192, ranges: 1, chunks: 2, records: 1, bytes: 8192 });
    expect(exported.streamBytes).toBe(128 + 24 + 8192 + 32 + 64);
    const backup = f('backup.img');
    fs.copyFileSync(f('origin.img'), backup);
    expect(run('snapshot-apply', ['-i', delta, backup, '--dry-run'])).toMatchObject({
      dryRun: true,
      target: backup,
      digest: exported.digest,
      verifiedFirst: true,
      spooled: false,
    });
    const applied = run('snapshot-apply', ['-i', delta, backup]);
    expect(applied).toMatchObject({ dryRun: false, chunks: 2, bytes: 8192, digest: exported.digest });
    expect(applied.seconds).toBeGreaterThanOrEqual(0);
    expect(run('snapshot-merge', [o, c, '--dry-run'])).toMatchObject({ dryRun: true, exceptions: 2, status: '16/4096 16' });
    expect(run('snapshot-merge', [o, c])).toMatchObject({ dryRun: false, mergedChunks: 2, percent: 100, status: '16/4096 16' });
  });

  it('snapshot-merge of an LVM snapshot: the metadata after the merge, printed, dry-run and written', () => {
    const sub = f('lvm');
    fs.mkdirSync(sub);
    const snap = `${makeVgImages(sub).join(',')}:vg0/snap`;
    expect(dmtool(['snapshot-create', snap, '--chunk-size', '8']).status).toBe(0);
    expect(dmtool(['snapshot-write', snap, '--target', 'origin', '--offset', '16', '-i', f('data.bin')]).status).toBe(0);
    const printed = run('snapshot-merge', [snap, '--dry-run']);
    expect(printed).toMatchObject({ dryRun: true, exceptions: 2, lvm: { vg: 'vg0', snapshot: 'snap', origin: 'data', seqno: 6 } });
    expect(printed.lvm?.metadata).toMatch(/^vg0 \{\n\tid = "vg0000-.*\n\tseqno = 6\n/);
    const lock = ['--lock-dir', path.join(sub, 'lock')];
    expect(run('snapshot-merge', [snap, '--update-metadata', ...lock, '--dry-run']).lvm).toEqual({
      vg: 'vg0',
      snapshot: 'snap',
      origin: 'data',
      seqno: 6,
      metadataAreas: 2,
      updated: false,
      output: null,
      metadata: null,
    });
    expect(run('snapshot-merge', [snap, '--update-metadata', ...lock])).toMatchObject({
      mergedChunks: 2,
      lvm: { seqno: 6, metadataAreas: 2, updated: true, output: null, metadata: null },
    });
  });

  it('the mirror commands', () => {
    const legs = [f('leg0.img'), f('leg1.img')];
    const log = ['--log', f('log.img'), '--region-size', '1024'];
    expect(run('mirror-create', [...log, ...legs, '--dry-run'])).toMatchObject({ dryRun: true, replaces: null });
    const created = run('mirror-create', [...log, ...legs]);
    expect(created.mirror).toMatchObject({ regions: 4, inSyncRegions: 0, outOfSyncRegions: 4, syncPercent: 0, outOfSyncRanges: [[0, 3]] });
    expect(run('mirror-status', [...log, ...legs]).mirror.log).toEqual({
      type: 'disk',
      path: f('log.img'),
      health: 'A',
      syncMode: 'default',
    });
    expect(run('mirror-resync', [...log, ...legs, '--dry-run'])).toMatchObject({ dryRun: true, regionsToSync: 4, bytesToCopy: 2 * MiB });
    const r = run('mirror-resync', [...log, ...legs]);
    expect(r).toMatchObject({ regionsToSync: 4, regionsSynced: 4, percent: 100, interrupted: false, failedLegs: [] });
    expect(r.mirror).toMatchObject({ inSyncRegions: 4, syncPercent: 100, outOfSyncRanges: [] });
    expect(run('mirror-check', legs)).toMatchObject({ identical: true, regions: 4, differingRegions: [] });
    fs.writeSync(fs.openSync(f('leg1.img'), 'r+'), Buffer.from('X'), 0, 1, MiB);
    expect(run('mirror-check', legs, 1)).toMatchObject({ identical: false, differingRegions: [2], differingLegs: { 2: [1] } });
  });

  type ReportCommand = keyof typeof REPORT_SCHEMAS;
  function report<C extends ReportCommand>(command: C, args: string[], status = 0): z.infer<(typeof REPORT_SCHEMAS)[C]> {
    const r = dmtool([command, ...args, '--json']);
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status, stderr: '' });
    return REPORT_SCHEMAS[command].parse(JSON.parse(r.stdout)) as z.infer<(typeof REPORT_SCHEMAS)[C]>;
  }

  it('the snapshot toolbox', () => {
    makeImage(f('origin2.img'), 4 * MiB, 'ORIGIN2');
    makeImage(f('cow2.img'), 2 * MiB);
    const o = f('origin2.img');
    const c = f('cow2.img');
    run('snapshot-create', [o, c, '--chunk-size', '8']);
    run('snapshot-write', [o, c, '--target', 'origin', '--offset', '16', '-i', f('data.bin')]);
    expect(report('snapshot-check', [c, '--origin', o])).toEqual({
      cow: c,
      problems: [],
      summary: { chunkSectors: 8, valid: true, exceptions: 2, areas: 1, problems: 0, clean: true },
    });
    expect(report('snapshot-delta', [c])).toEqual({ chunkSectors: 8, ranges: [{ start: 2, count: 2 }] });
    expect(run('snapshot-dump', [c, '-o', f('cow2.json')])).toMatchObject({ dryRun: false, format: 'json', exceptions: 2 });
    expect(run('snapshot-restore', ['-i', f('cow2.json'), c, '--dry-run'])).toMatchObject({ dryRun: true, exceptions: 2, areas: 1 });
    expect(run('snapshot-restore', ['-i', f('cow2.json'), c])).toMatchObject({ dryRun: false, exceptions: 2, status: '32/4096 16' });
    expect(run('snapshot-repair', [c])).toMatchObject({ written: false, found: 2, kept: 2, dropped: 0, droppedEntries: [] });
    expect(run('snapshot-revalidate', [c, '--dry-run'])).toMatchObject({ dryRun: true, wasValid: true, written: false, exceptions: 2 });
  });

  it('the mirror log toolbox', () => {
    const legs = [f('mleg0.img'), f('mleg1.img')];
    for (const leg of legs) makeImage(leg, 2 * MiB, 'MLEG');
    makeImage(f('mlog.img'), 64 * 1024);
    run('mirror-create', ['--log', f('mlog.img'), '--region-size', '1024', ...legs]);
    expect(run('mirror-log-check', [f('mlog.img')])).toMatchObject({
      log: f('mlog.img'),
      problems: [],
      summary: { version: 2, regions: 4, inSync: 0, clean: true },
    });
    const dump = report('mirror-log-dump', [f('mlog.img')]);
    expect(dump).toEqual({
      format: 'dmtool-mirror-log-dump',
      formatVersion: 1,
      version: 2,
      regions: 4,
      inSync: 0,
      dirty: [{ start: 0, count: 4 }],
    });
    fs.writeFileSync(f('mlog.json'), JSON.stringify(dump));
    expect(run('mirror-log-restore', ['-i', f('mlog.json'), f('mlog.img'), '--dry-run'])).toMatchObject({ dryRun: true, regions: 4 });
    expect(run('mirror-log-restore', ['-i', f('mlog.json'), f('mlog.img')])).toMatchObject({ dryRun: false, regions: 4, inSync: 0 });
  });

  it('every command that takes --json has a schema here (lvm-ls is checked against lvm2 in test/lvm)', () => {
    const names = COMMANDS.map((c) => c.command.split(' ')[0]);
    const withJson = names.filter((name) => /^\s+--json\b/m.test(dmtool([name, '--help']).stdout));
    expect(withJson.length).toBeGreaterThan(20);
    expect(withJson.filter((name) => !(name in JSON_SCHEMAS) && !(name in REPORT_SCHEMAS))).toEqual([]);
    expect(names).toContain('serve');
    expect(withJson).not.toContain('serve');
  });

  it('demo', () => {
    const d = run('demo', ['--size', '4M', '--keep', f('demo')]);
    expect(d).toMatchObject({ dryRun: false, dir: f('demo'), kept: true });
    expect(d.steps.every((s) => s.ok)).toBe(true);
  });

  it('a failure is one JSON document on stdout besides the stderr line', () => {
    const r = dmtool(['copy', f('missing.img'), f('dst.img'), '--json']);
    expect(r.status).toBe(3);
    expect(r.stderr.split('\n')).toHaveLength(2);
    const doc = failureSchema.parse(JSON.parse(r.stdout));
    expect(doc).toMatchObject({
      command: 'copy',
      ok: false,
      dryRun: false,
      error: { code: 'ENOENT', kind: 'device-refused', path: f('missing.img') },
    });
    const bad = dmtool(['zero', f('dst.img'), '--offset', '4096', '--json', '--dry-run']);
    expect(bad.status).toBe(2);
    expect(failureSchema.parse(JSON.parse(bad.stdout))).toEqual({
      command: 'zero',
      ok: false,
      dryRun: true,
      error: {
        code: 'ERANGE',
        kind: 'bad-input',
        reason: 'out-of-range',
        path: null,
        sector: null,
        sectors: null,
        message: 'nothing to zero: offset 4096 is at or beyond the end (2048 sectors)',
      },
    });
    const unknown = dmtool(['copy', f('src.img'), f('dst.img'), '--json', '--no-such-option']);
    expect(unknown.status).toBe(2);
    expect(failureSchema.parse(JSON.parse(unknown.stdout)).error.kind).toBe('bad-input');
  });
});
