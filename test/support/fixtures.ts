import { execFileSync } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { Snapshot } from '@dmtool/dm-snapshot';

export const FIXTURE_DIR = path.resolve(__dirname, '../fixtures/kernel');

export interface PlannedWrite {
  name: string;
  target: 'origin' | 'snap';
  start_sector: number;
  sectors: number;
  bs_bytes: number;
  tag: string;
}

/** Untar a kernel fixture into `dir`; returns the folder holding its images and manifest. */
export function unpackFixture(name: string, dir: string): { dir: string; manifest: any } {
  execFileSync('tar', ['xzf', path.join(FIXTURE_DIR, `${name}.tar.gz`), '-C', dir]);
  const root = path.join(dir, name);
  return { dir: root, manifest: JSON.parse(fs.readFileSync(path.join(root, 'manifest.json'), 'utf8')) };
}

function labelled(label: string, fill: number, bytes: number): Buffer {
  const out = Buffer.alloc(bytes, fill);
  const head = Buffer.from(label.padEnd(31, '.') + '\n', 'latin1');
  head.copy(out, 0);
  return out;
}

/** content_spec base_block: label padded with '.' to 31 bytes, '\n', then 4064 bytes of (b & 0xff). */
export function baseBlock(tag: string, b: number): Buffer {
  return labelled(`${tag} blk=${String(b).padStart(8, '0')}`, b & 0xff, 4096);
}

/** content_spec write_sector: label padded to 31 bytes, '\n', then 480 bytes of ((s + 0x80) & 0xff). */
export function writeSector(tag: string, s: number): Buffer {
  return labelled(`${tag} sec=${String(s).padStart(10, '0')}`, (s + 0x80) & 0xff, 512);
}

export function writeData(tag: string, firstSector: number, sectors: number): Buffer {
  return Buffer.concat(Array.from({ length: sectors }, (_, i) => writeSector(tag, firstSector + i)));
}

/** One bs-sized piece of a planned write, as the guest's dd wrote it (each complete before the next). */
export interface PlannedPiece {
  /** The plan's write this piece belongs to, and its index in the plan. */
  write: PlannedWrite;
  writeIndex: number;
  target: 'origin' | 'snap';
  sector: number;
  data: Buffer;
}

/** Every piece of a fixture's write plan, in plan order, with its write_sector bytes. */
export function planPieces(writes: PlannedWrite[]): PlannedPiece[] {
  const pieces: PlannedPiece[] = [];
  writes.forEach((write, writeIndex) => {
    const perPiece = write.bs_bytes / 512;
    const end = write.start_sector + write.sectors;
    for (let sector = write.start_sector; sector < end; sector += perPiece) {
      const data = writeData(write.tag, sector, Math.min(perPiece, end - sector));
      pieces.push({ write, writeIndex, target: write.target, sector, data });
    }
  });
  return pieces;
}

/** The origin before any write: base_block('BASE', b) for every 4 KiB block. */
export function makeBaseOrigin(file: string, bytes: number): void {
  const fd = fs.openSync(file, 'w');
  try {
    const step = 256;
    for (let b = 0; b < bytes / 4096; b += step) {
      const n = Math.min(step, bytes / 4096 - b);
      const buf = Buffer.concat(Array.from({ length: n }, (_, i) => baseBlock('BASE', b + i)));
      fs.writeSync(fd, buf, 0, buf.length, b * 4096);
    }
  } finally {
    fs.closeSync(fd);
  }
}

export function makeZeroFile(file: string, bytes: number): void {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, bytes);
}

/** sha256 of a snapshot's whole view, read through the exception table. */
export async function snapshotViewSha(snap: Snapshot): Promise<string> {
  const h = createHash('sha256');
  const step = 2048;
  const buf = Buffer.alloc(step * 512);
  for (let s = 0; s < snap.sizeSectors; s += step) {
    const n = Math.min(step, snap.sizeSectors - s);
    const part = n === step ? buf : Buffer.alloc(n * 512);
    await snap.read(part, s);
    h.update(part);
  }
  return h.digest('hex');
}
