import { createHash } from 'crypto';
import * as fs from 'fs';

export function sha256File(file: string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(1 << 20);
  try {
    for (;;) {
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

export function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

/** sha256 of `bytes` bytes of a file (or block device) starting at `byteOffset`. */
export function sha256Range(file: string, byteOffset: number, bytes: number): string {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    fs.readSync(fd, buf, 0, bytes, byteOffset);
    return sha256(buf);
  } finally {
    fs.closeSync(fd);
  }
}

/** Deterministic, position-dependent content: each 512-byte sector names its seed and sector. */
export function patternBytes(seed: string, firstSector: number, sectors: number): Buffer {
  const out = Buffer.alloc(sectors * 512);
  for (let s = 0; s < sectors; s++) {
    const sector = firstSector + s;
    const label = Buffer.from(`${seed}:${sector}:`);
    const base = s * 512;
    for (let i = 0; i < 512; i++) out[base + i] = label[i % label.length] ^ ((sector * 31 + i) & 0xff);
  }
  return out;
}

/** Write a sparse image file of `bytes`, filled with patternBytes(seed) if a seed is given. */
export function makeImage(file: string, bytes: number, seed?: string): void {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, bytes);
  if (seed === undefined) return;
  const fd = fs.openSync(file, 'r+');
  try {
    const stepSectors = 2048;
    for (let sector = 0; sector < bytes / 512; sector += stepSectors) {
      const n = Math.min(stepSectors, bytes / 512 - sector);
      fs.writeSync(fd, patternBytes(seed, sector, n), 0, n * 512, sector * 512);
    }
  } finally {
    fs.closeSync(fd);
  }
}

export function readRange(file: string, byteOffset: number, bytes: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(bytes);
    fs.readSync(fd, buf, 0, bytes, byteOffset);
    return buf;
  } finally {
    fs.closeSync(fd);
  }
}

/** sha256 of `bytes` zero bytes. */
export function sha256Zeros(bytes: number): string {
  const h = createHash('sha256');
  const chunk = Buffer.alloc(Math.min(bytes, 1 << 20));
  for (let done = 0; done < bytes; done += chunk.length) h.update(chunk.subarray(0, Math.min(chunk.length, bytes - done)));
  return h.digest('hex');
}
