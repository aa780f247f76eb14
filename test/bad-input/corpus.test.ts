import { execFileSync, spawn } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { makeImage, sha256File } from '../support/images';
import { removeDir, tempDir } from '../support/loop';
import { DMTOOL, dmtool } from '../support/cli';
import { FIXTURE_DIR } from '../support/fixtures';
import { makeCerts } from '../support/tls-certs';
import { makeVgImages, VG_IMAGE_MDA_BYTE, vg0Text } from '../support/lvm-images';
import { BlockDevice } from '@dmtool/devices';
import { FileDevice } from '@dmtool/native';

/**
 * Bad input, each refused with one clear line on stderr, a non-zero exit,
 * and every image in the folder unchanged (sha256 before == after).
 */
const MiB = 1 << 20;

interface Case {
  name: string;
  /** Make the inputs for this case in `dir`; return the command line. */
  args: (dir: string) => string[];
  status: number;
  message: RegExp;
  /** Undo what `args` set up outside the folder's files (e.g. release a lock it holds). */
  after?: () => void;
}

function patch(file: string, byteOffset: number, bytes: Buffer): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, byteOffset);
  } finally {
    fs.closeSync(fd);
  }
}

function u32(v: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v);
  return b;
}

function u64(v: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(BigInt(v));
  return b;
}

/** The identity dmtool gives a regular file (as a copy map records it). */
function fileIdentity(file: string): string {
  const st = fs.statSync(file, { bigint: true });
  return `file:${st.dev}:${st.ino}`;
}

function run(args: string[]) {
  return dmtool(args);
}

function mustRun(args: string[]): void {
  const r = run(args);
  if (r.status !== 0) throw new Error(`setup failed: dmtool ${args.join(' ')}: ${r.stderr}`);
}

/** Kernel-made COW (chunk 8, 310 exceptions) and its 64 MiB origin. */
function kernelCow(dir: string): { origin: string; cow: string } {
  execFileSync('tar', ['xzf', path.join(FIXTURE_DIR, 'snapshot-cow-chunk8.tar.gz'), '-C', dir]);
  const src = path.join(dir, 'snapshot-cow-chunk8');
  const origin = path.join(dir, 'origin.img');
  const cow = path.join(dir, 'cow.img');
  fs.renameSync(path.join(src, 'origin.img'), origin);
  fs.renameSync(path.join(src, 'cow.img'), cow);
  fs.rmSync(src, { recursive: true });
  return { origin, cow };
}

/** Two 8 MiB legs and a valid disk log (region 1024 sectors → 16 regions). */
function mirror(dir: string, legs = 2): { log: string; legs: string[] } {
  const legPaths = Array.from({ length: legs }, (_, i) => path.join(dir, `leg${i}.img`));
  legPaths.forEach((p, i) => makeImage(p, 8 * MiB, `LEG${i}`));
  const log = path.join(dir, 'log.img');
  makeImage(log, 64 * 1024);
  mustRun(['mirror-create', '--log', log, '--region-size', '1024', ...legPaths]);
  return { log, legs: legPaths };
}

/** Two sparse 4 TiB legs (in a subfolder) and an empty log: a mirror large enough for any 32-bit region size. */
function hugeMirror(dir: string): { log: string; legs: string[] } {
  const sub = path.join(dir, 'huge');
  fs.mkdirSync(sub);
  const legs = [0, 1].map((i) => path.join(sub, `leg${i}.img`));
  for (const leg of legs) makeImage(leg, 4 * 1024 * 1024 * MiB);
  const log = path.join(dir, 'log.img');
  makeImage(log, 64 * 1024);
  return { log, legs };
}

function source(dir: string): string {
  const p = path.join(dir, 'src.img');
  makeImage(p, 4 * MiB, 'SRC');
  return p;
}

function dest(dir: string, name = 'dst.img', bytes = 4 * MiB): string {
  const p = path.join(dir, name);
  makeImage(p, bytes, 'DST');
  return p;
}

const copyCases: Case[] = [
  {
    name: 'unknown command',
    args: () => ['frobnicate'],
    status: 2,
    message: /^dmtool: unknown command: frobnicate \(dmtool --help lists the commands\)$/,
  },
  { name: 'no command', args: () => [], status: 2, message: /^dmtool: name a command/ },
  {
    name: 'unknown option',
    args: (d) => ['copy', source(d), dest(d), '--bogus'],
    status: 2,
    message: /^dmtool: Unknown arguments?: bogus/,
  },
  {
    name: 'copy: nine destinations',
    args: (d) => ['copy', source(d), ...Array.from({ length: 9 }, (_, i) => dest(d, `d${i}.img`))],
    status: 2,
    message: /^dmtool: <destinations>: at most 8 destinations$/,
  },
  {
    name: 'copy: offset not a number',
    args: (d) => ['copy', source(d), dest(d), '--offset', 'abc'],
    status: 2,
    message: /^dmtool: --offset: "abc" is not a size/,
  },
  {
    name: 'copy: length not whole sectors',
    args: (d) => ['copy', source(d), dest(d), '--length', '1000b'],
    status: 2,
    message: /^dmtool: --length: "1000b" is not a size|^dmtool: --length: 1000b is not a whole number of 512-byte sectors$/,
  },
  {
    name: 'copy: zero rate',
    args: (d) => ['copy', source(d), dest(d), '--rate', '0'],
    status: 2,
    message: /^dmtool: --rate: rate must be above zero$/,
  },
  {
    name: 'copy: throttle 0 percent',
    args: (d) => ['copy', source(d), dest(d), '--throttle', '0'],
    status: 2,
    message: /^dmtool: --throttle: Number must be greater than or equal to 1$/,
  },
  {
    name: 'copy: destination too small',
    args: (d) => ['copy', source(d), dest(d, 'small.img', 2 * MiB)],
    status: 2,
    message: /^dmtool: destination .*small\.img is too small: needs sectors 0\.\.8191, has 4096 sectors$/,
  },
  {
    name: 'copy: same file twice',
    args: (d) => {
      const x = dest(d);
      return ['copy', source(d), x, x];
    },
    status: 2,
    message: /^dmtool: destination 1 .* is the same device as destination 0/,
  },
  {
    name: 'copy: source as destination',
    args: (d) => {
      const s = source(d);
      return ['copy', s, s];
    },
    status: 2,
    message: /^dmtool: destination 0 .* is the same device as source/,
  },
  {
    name: 'copy: TLS NBD URI with a bad tls-verify-peer, password not shown',
    args: (d) => ['copy', source(d), 'nbds://alice:secret@127.0.0.1/disk?tls-verify-peer=maybe'],
    status: 2,
    message: /^dmtool: nbds:\/\/127\.0\.0\.1\/disk\?tls-verify-peer=maybe: tls-verify-peer=maybe is not 0, 1, false or true$/,
  },
  {
    name: 'copy: nbd+unix URI without a socket',
    args: (d) => ['copy', source(d), 'nbd+unix:///disk'],
    status: 2,
    message: /^dmtool: nbd\+unix:\/\/\/disk: nbd\+unix:\/\/ needs \?socket=PATH$/,
  },
  {
    name: 'copy: the same NBD export twice (refused without connecting)',
    args: (d) => ['copy', source(d), `nbd+unix:///x?socket=${d}/none.sock`, `nbd+unix:///x?socket=${d}/./none.sock`],
    status: 2,
    message:
      /^dmtool: destination 1 nbd\+unix:\/\/\/x\?socket=.*\/\.\/none\.sock is the same device as destination 0 nbd\+unix:\/\/\/x\?socket=.*\/none\.sock$/,
  },
  {
    name: 'copy: range past the source end',
    args: (d) => ['copy', source(d), dest(d), '--offset', '8000', '--length', '1000'],
    status: 2,
    message: /^dmtool: source .* sectors 8000\.\.8999 end beyond the device end \(8192 sectors\)$/,
  },
  {
    name: 'copy: missing source',
    args: (d) => ['copy', path.join(d, 'nope.img'), dest(d)],
    status: 3,
    message: /^dmtool: ENOENT: open failed on .*nope\.img: no such file or device$/,
  },
  {
    name: 'copy: a directory as destination',
    args: (d) => ['copy', source(d), d],
    status: 3,
    message: /^dmtool: ENODEV: open failed on .*: not a regular file or block device$/,
  },
  {
    name: 'copy: --sparse with a value cp does not have',
    args: (d) => ['copy', source(d), dest(d), '--sparse', 'sometimes'],
    status: 2,
    message: /^dmtool: --sparse: takes auto, always or never$/,
  },
  {
    name: 'copy: --resume without --map',
    args: (d) => ['copy', source(d), dest(d), '--resume'],
    status: 2,
    message: /^dmtool: --resume needs --map FILE: the map of the copy to resume$/,
  },
  {
    name: 'copy: --resume with a map that does not exist',
    args: (d) => ['copy', source(d), dest(d), '--map', path.join(d, 'none.map'), '--resume'],
    status: 2,
    message: /^dmtool: --resume: map .*none\.map does not exist; leave out --resume to start the copy$/,
  },
  {
    name: 'copy: --map naming an existing file without --resume',
    args: (d) => {
      fs.writeFileSync(path.join(d, 'old.map'), 'dmtool-copy-map 1\n');
      return ['copy', source(d), dest(d), '--map', path.join(d, 'old.map')];
    },
    status: 2,
    message: /^dmtool: map .*old\.map exists: add --resume to continue the copy it records, or remove it to start again$/,
  },
  {
    name: 'copy: --resume with a file that is not a map',
    args: (d) => {
      fs.writeFileSync(path.join(d, 'notes.txt'), 'remember the milk\n');
      return ['copy', source(d), dest(d), '--map', path.join(d, 'notes.txt'), '--resume'];
    },
    status: 2,
    message: /^dmtool: map .*notes\.txt is not a dmtool copy map \(no "dmtool-copy-map 1" line\)$/,
  },
  {
    name: 'copy: --resume with a map of another destination',
    args: (d) => {
      const src = source(d);
      const other = dest(d, 'other.img');
      const dst = dest(d);
      const map = path.join(d, 'copy.map');
      fs.writeFileSync(
        map,
        [
          'dmtool-copy-map 1',
          `source "${fileIdentity(src)}" ${4 * MiB} "${src}"`,
          `destination "${fileIdentity(other)}" ${4 * MiB} "${other}"`,
          'range 0 0 8192',
          'done 0 1024',
          '',
        ].join('\n'),
      );
      return ['copy', source(d), dst, '--map', map, '--resume'];
    },
    status: 2,
    message:
      /^dmtool: map .*copy\.map belongs to another copy: its destination 0 is .*other\.img \(4194304 bytes\), not .*dst\.img \(4194304 bytes\); give the copy it records, or remove the map$/,
  },
  {
    name: 'copy: --resume after the destination was deleted',
    args: (d) => {
      const src = source(d);
      const gone = path.join(d, 'gone.img');
      const map = path.join(d, 'copy.map');
      fs.writeFileSync(
        map,
        [
          'dmtool-copy-map 1',
          `source "${fileIdentity(src)}" ${4 * MiB} "${src}"`,
          `destination "file:1:2" ${4 * MiB} "${gone}"`,
          'range 0 0 8192',
          'done 0 1024',
          '',
        ].join('\n'),
      );
      return ['copy', src, gone, '--map', map, '--resume'];
    },
    status: 2,
    message: /^dmtool: map .*copy\.map records a copy to .*gone\.img, which no longer exists: remove the map to copy again from the start$/,
  },
  {
    name: 'copy: --resume with a map of another range',
    args: (d) => {
      const src = source(d);
      const dst = dest(d);
      const map = path.join(d, 'copy.map');
      fs.writeFileSync(
        map,
        [
          'dmtool-copy-map 1',
          `source "${fileIdentity(src)}" ${4 * MiB} "${src}"`,
          `destination "${fileIdentity(dst)}" ${4 * MiB} "${dst}"`,
          'range 0 0 8192',
          '',
        ].join('\n'),
      );
      return ['copy', src, dst, '--map', map, '--resume', '--length', '4096'];
    },
    status: 2,
    message:
      /^dmtool: map .* belongs to another copy: its range is --offset 0 --dest-offset 0 --length 8192, not --offset 0 --dest-offset 0 --length 4096; give the copy it records, or remove the map$/,
  },
  {
    name: 'copy: --map naming the destination',
    args: (d) => ['copy', source(d), path.join(d, 'new.img'), '--map', path.join(d, 'new.img')],
    status: 2,
    message: /^dmtool: --map .*new\.img names a device of the copy; give the map its own file$/,
  },
  {
    name: 'copy: --map in a folder that does not exist (nothing created)',
    args: (d) => ['copy', source(d), path.join(d, 'new.img'), '--map', path.join(d, 'gone', 'copy.map')],
    status: 2,
    message: /^dmtool: --map .*copy\.map: folder .*gone does not exist; create it first$/,
  },
  {
    name: 'copy: --map and a range past the source end (nothing created, no map)',
    args: (d) => ['copy', source(d), path.join(d, 'new.img'), '--map', path.join(d, 'copy.map'), '--offset', '8000', '--length', '1000'],
    status: 2,
    message: /^dmtool: source .* sectors 8000\.\.8999 end beyond the device end \(8192 sectors\)$/,
  },
  {
    name: 'copy: a new destination in a folder that does not exist',
    args: (d) => ['copy', source(d), path.join(d, 'no-such-folder', 'new.img')],
    status: 2,
    message: /^dmtool: destination 0 .*new\.img: folder .*no-such-folder does not exist; create it first$/,
  },
  {
    name: 'copy: a new destination and a range past the source end (nothing created)',
    args: (d) => ['copy', source(d), path.join(d, 'new.img'), '--offset', '8000', '--length', '1000'],
    status: 2,
    message: /^dmtool: source .* sectors 8000\.\.8999 end beyond the device end \(8192 sectors\)$/,
  },
  { name: 'zero: zero length', args: (d) => ['zero', dest(d), '--length', '0'], status: 2, message: /^dmtool: nothing to zero/ },
  {
    name: 'zero: past the end',
    args: (d) => ['zero', dest(d), '--offset', '8000', '--length', '500'],
    status: 2,
    message: /^dmtool: .*dst\.img sectors 8000\.\.8499 end beyond the device end \(8192 sectors\)$/,
  },
  // Rate limits: below 4k (4096 bytes per second) a rate cannot be paced in whole 4 KiB pieces.
  {
    name: 'copy: rate of 1 byte per second',
    args: (d) => ['copy', source(d), dest(d), '--rate', '1', '--length', '8'],
    status: 2,
    message: /^dmtool: --rate: 1 bytes per second is below the slowest rate dmtool paces, 4k \(4096 bytes per second\)$/,
  },
  {
    name: 'copy: rate just below 4k',
    args: (d) => ['copy', source(d), dest(d), '--rate', '4095', '--length', '8'],
    status: 2,
    message: /^dmtool: --rate: 4095 bytes per second is below the slowest rate dmtool paces, 4k \(4096 bytes per second\)$/,
  },
  {
    name: 'merge: rate of 1k',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-merge', k.origin, k.cow, '--rate', '1k', '--dry-run'];
    },
    status: 2,
    message: /^dmtool: --rate: 1024 bytes per second is below the slowest rate dmtool paces, 4k \(4096 bytes per second\)$/,
  },
  {
    name: 'mirror-resync: rate of 100',
    args: (d) => {
      const m = mirror(d);
      return ['mirror-resync', '--log', m.log, ...m.legs, '--rate', '100', '--dry-run'];
    },
    status: 2,
    message: /^dmtool: --rate: 100 bytes per second is below the slowest rate dmtool paces, 4k \(4096 bytes per second\)$/,
  },
  // Limits: paths that cannot name a device are refused devices (3); numbers beyond 2^53 are not rounded
  {
    name: 'copy: destination is a symlink loop',
    args: (d) => {
      const l = path.join(d, 'links');
      fs.mkdirSync(l);
      fs.symlinkSync('loop-b', path.join(l, 'loop-a'));
      fs.symlinkSync('loop-a', path.join(l, 'loop-b'));
      return ['copy', source(d), path.join(l, 'loop-a')];
    },
    status: 3,
    message: /^dmtool: ELOOP: open failed on .*loop-a: too many levels of symbolic links$/,
  },
  {
    name: 'copy: destination below a regular file',
    args: (d) => {
      const s = source(d);
      return ['copy', s, path.join(s, 'x')];
    },
    status: 3,
    message: /^dmtool: ENOTDIR: open failed on .*src\.img\/x: a path component is not a directory$/,
  },
  {
    name: 'copy: destination name too long',
    args: (d) => ['copy', source(d), path.join(d, 'n'.repeat(300))],
    status: 3,
    message: /^dmtool: ENAMETOOLONG: open failed on .*nnnn: file name too long$/,
  },
  {
    name: 'copy: offset above 2^53',
    args: (d) => ['copy', source(d), dest(d), '--offset', '9007199254740993'],
    status: 2,
    message: /^dmtool: --offset: 9007199254740993 is too large: sectors and bytes above 2\^53 - 1 cannot be held exactly$/,
  },
  {
    name: 'zero: length above 2^53',
    args: (d) => ['zero', dest(d), '--length', '18446744073709551616'],
    status: 2,
    message: /^dmtool: --length: 18446744073709551616 is too large: sectors and bytes above 2\^53 - 1 cannot be held exactly$/,
  },
];

const mirrorCases: Case[] = [
  {
    name: 'mirror log: bad magic',
    args: (d) => {
      const m = mirror(d);
      patch(m.log, 0, Buffer.from('MiRx'));
      return ['mirror-resync', '--log', m.log, ...m.legs];
    },
    status: 2,
    message:
      /^dmtool: dirty log .*log\.img has bad magic 0x7852694d at sector 0 \(expected 0x4d695272, "MiRr"\): not a dm-mirror disk log$/,
  },
  {
    name: 'mirror log: version 3',
    args: (d) => {
      const m = mirror(d);
      patch(m.log, 4, u32(3));
      return ['mirror-resync', '--log', m.log, ...m.legs];
    },
    status: 2,
    message: /^dmtool: dirty log .*log\.img has unsupported version 3 at sector 0 \(expected 2\)$/,
  },
  {
    name: 'mirror log: nr_regions wrong for the legs',
    args: (d) => {
      const m = mirror(d);
      patch(m.log, 8, u64(17));
      return ['mirror-resync', '--log', m.log, ...m.legs];
    },
    status: 2,
    message:
      /^dmtool: dirty log .*log\.img records 17 regions at sector 0, which no power-of-two region size gives for a mirror of 16384 sectors/,
  },
  {
    name: 'mirror log: truncated',
    args: (d) => {
      const m = mirror(d);
      fs.truncateSync(m.log, 512);
      return ['mirror-resync', '--log', m.log, ...m.legs];
    },
    status: 2,
    message: /^dmtool: dirty log .*log\.img is truncated: 512 bytes, a disk log needs at least 1028 \(sectors 0\.\.2\)$/,
  },
  {
    name: 'mirror log: status of a truncated log',
    args: (d) => {
      const m = mirror(d);
      fs.truncateSync(m.log, 1024);
      return ['mirror-status', '--log', m.log, ...m.legs];
    },
    status: 2,
    message: /^dmtool: dirty log .*log\.img is too small: 1024 bytes, 16 regions need sectors 0\.\.2 \(1536 bytes\)$/,
  },
  {
    name: 'mirror: region size not a power of two',
    args: (d) => {
      const m = mirror(d);
      return ['mirror-resync', '--log', m.log, '--region-size', '1000', ...m.legs];
    },
    status: 2,
    message: /power of two/,
  },
  {
    name: 'mirror: region size 1',
    args: (d) => {
      const m = mirror(d);
      return ['mirror-create', '--log', m.log, '--force', '--region-size', '1', ...m.legs];
    },
    status: 2,
    message: /^dmtool: region size must be a power of two of at least 2 and at most 2147483648 sectors \(got 1\)$/,
  },
  {
    name: 'mirror: legs of different sizes',
    args: (d) => {
      const m = mirror(d);
      fs.truncateSync(m.legs[1], 4 * MiB);
      return ['mirror-resync', '--log', m.log, ...m.legs];
    },
    status: 2,
    message: /^dmtool: legs differ in size: .*leg0\.img has 16384 sectors, .*leg1\.img has 8192/,
  },
  {
    name: 'mirror: same leg twice',
    args: (d) => {
      const m = mirror(d);
      return ['mirror-resync', '--log', m.log, m.legs[0], m.legs[0]];
    },
    status: 2,
    message: /leg0\.img is given twice \(as leg 0 and as leg 1\)$/,
  },
  {
    name: 'mirror: log is a leg',
    args: (d) => {
      const m = mirror(d);
      return ['mirror-resync', '--log', m.legs[1], ...m.legs];
    },
    status: 2,
    message: /leg1\.img is given twice \(as leg 1 and as the log\)$/,
  },
  {
    name: 'mirror: a single leg',
    args: (d) => {
      const m = mirror(d);
      return ['mirror-resync', '--log', m.log, m.legs[0]];
    },
    status: 2,
    message: /^dmtool: a mirror needs at least 2 legs \(got 1\)$/,
  },
  {
    name: 'mirror: ten legs',
    args: (d) => {
      const m = mirror(d);
      const more = Array.from({ length: 8 }, (_, i) => dest(d, `x${i}.img`, 8 * MiB));
      return ['mirror-create', '--log', m.log, '--force', ...m.legs, ...more];
    },
    status: 2,
    message: /^dmtool: a mirror needs 2\.\.9 legs \(got 10\)$/,
  },
  {
    name: 'mirror: table line of another target',
    args: (d) => {
      const m = mirror(d);
      return ['mirror-resync', '--table', `0 16384 linear ${m.legs[0]} 0`];
    },
    status: 2,
    message: /^dmtool: mirror table: target must be "mirror" \(got "linear"\)$/,
  },
  {
    name: 'mirror: table line with a wrong log argument count',
    args: (d) => {
      const m = mirror(d);
      return ['mirror-resync', '--table', `0 16384 mirror disk 5 ${m.log} 1024 2 ${m.legs[0]} 0 ${m.legs[1]} 0`];
    },
    status: 2,
    message: /^dmtool: mirror table: a disk log takes 2\.\.3 arguments \(got 5\)$/,
  },
  {
    name: 'mirror: missing leg',
    args: (d) => {
      const m = mirror(d);
      return ['mirror-resync', '--log', m.log, m.legs[0], path.join(d, 'gone.img')];
    },
    status: 3,
    message: /^dmtool: ENOENT: open failed on .*gone\.img: leg 1: no such file or device$/,
  },
  {
    name: 'mirror-check: a single leg',
    args: (d) => {
      const m = mirror(d);
      return ['mirror-check', m.legs[0]];
    },
    status: 2,
    message: /^dmtool: <legs>: give at least 2 legs$/,
  },
  // mirror-create over a device that holds a recognised format (without --force)
  {
    name: 'mirror-create: log device holds a snapshot COW',
    args: (d) => {
      const m = mirror(d);
      const k = kernelCow(d);
      return ['mirror-create', '--log', k.cow, ...m.legs];
    },
    status: 2,
    message: /^dmtool: .*cow\.img holds a snapshot COW \(SnAp header\) at sector 0; give --force to overwrite it$/,
  },
  {
    name: 'mirror-create: log device holds an ext4 filesystem',
    args: (d) => {
      const m = mirror(d);
      const x = formatted(d, 1080, '53ef');
      return ['mirror-create', '--log', x, ...m.legs];
    },
    status: 2,
    message: /^dmtool: .*fmt\.img holds an ext2\/3\/4 filesystem \(magic 0xEF53\) at sector 2; give --force to overwrite it$/,
  },
  {
    name: 'mirror-create: log device holds an XFS filesystem',
    args: (d) => {
      const m = mirror(d);
      const x = formatted(d, 0, Buffer.from('XFSB').toString('hex'));
      return ['mirror-create', '--log', x, ...m.legs];
    },
    status: 2,
    message: /^dmtool: .*fmt\.img holds an XFS filesystem \(XFSB\) at sector 0; give --force to overwrite it$/,
  },
  {
    name: 'mirror-create: log device holds a btrfs filesystem',
    args: (d) => {
      const m = mirror(d);
      const x = formatted(d, 65600, Buffer.from('_BHRfS_M').toString('hex'));
      return ['mirror-create', '--log', x, ...m.legs];
    },
    status: 2,
    message: /^dmtool: .*fmt\.img holds a btrfs filesystem \(_BHRfS_M\) at sector 128; give --force to overwrite it$/,
  },
  {
    name: 'mirror-create: log device holds swap',
    args: (d) => {
      const m = mirror(d);
      const x = formatted(d, 4086, Buffer.from('SWAPSPACE2').toString('hex'));
      return ['mirror-create', '--log', x, ...m.legs];
    },
    status: 2,
    message: /^dmtool: .*fmt\.img holds a swap area \(SWAPSPACE2\) at sector 7; give --force to overwrite it$/,
  },
  {
    name: 'mirror-create: log device holds an LVM2 label',
    args: (d) => {
      const m = mirror(d);
      const x = formatted(d, 512, Buffer.from('LABELONE').toString('hex'));
      return ['mirror-create', '--log', x, ...m.legs];
    },
    status: 2,
    message: /^dmtool: .*fmt\.img holds an LVM2 physical volume label \(LABELONE\) at sector 1; give --force to overwrite it$/,
  },
  {
    name: 'mirror-create: log device holds an MBR partition table',
    args: (d) => {
      const m = mirror(d);
      const x = formatted(d, 510, '55aa');
      patch(x, 446 + 4, Buffer.from([0x83]));
      return ['mirror-create', '--log', x, ...m.legs];
    },
    status: 2,
    message: /^dmtool: .*fmt\.img holds an MBR partition table \(0x55AA, a non-empty entry\) at sector 0; give --force to overwrite it$/,
  },
  {
    name: 'mirror-create: log device holds a GPT',
    args: (d) => {
      const m = mirror(d);
      const x = formatted(d, 512, Buffer.from('EFI PART').toString('hex'));
      return ['mirror-create', '--log', x, ...m.legs];
    },
    status: 2,
    message: /^dmtool: .*fmt\.img holds a GPT partition table \(EFI PART\) at sector 1; give --force to overwrite it$/,
  },
  // Limits: the kernel's region_size is a 32-bit power of two (legs of 4 TiB, sparse, in a subfolder the hash check skips)
  {
    name: 'mirror: region size 3·2^31 (a power of two in 32-bit arithmetic)',
    args: (d) => {
      const m = hugeMirror(d);
      return ['mirror-create', '--log', m.log, '--region-size', '6442450944', ...m.legs];
    },
    status: 2,
    message: /^dmtool: region size must be a power of two of at least 2 and at most 2147483648 sectors \(got 6442450944\)$/,
  },
  {
    name: 'mirror: region size 2^32',
    args: (d) => {
      const m = hugeMirror(d);
      return ['mirror-create', '--log', m.log, '--region-size', '4294967296', ...m.legs];
    },
    status: 2,
    message: /^dmtool: region size must be a power of two of at least 2 and at most 2147483648 sectors \(got 4294967296\)$/,
  },
  {
    name: 'mirror: table line with region size 2^32',
    args: (d) => {
      const m = hugeMirror(d);
      return ['mirror-create', '--table', `0 8589934592 mirror disk 2 ${m.log} 4294967296 2 ${m.legs[0]} 0 ${m.legs[1]} 0`];
    },
    status: 2,
    message: /^dmtool: mirror table: region size must be a power of two of at least 2 and at most 2147483648 sectors \(got 4294967296\)$/,
  },
  {
    name: 'mirror: table line with region size 3·2^31',
    args: (d) => {
      const m = hugeMirror(d);
      return ['mirror-status', '--table', `0 8589934592 mirror disk 2 ${m.log} 6442450944 2 ${m.legs[0]} 0 ${m.legs[1]} 0`];
    },
    status: 2,
    message: /^dmtool: mirror table: region size must be a power of two of at least 2 and at most 2147483648 sectors \(got 6442450944\)$/,
  },
];

/** A 128 KiB image, zero but for `hex` at byte `at`: a format signature. */
function formatted(dir: string, at: number, hex: string): string {
  const p = path.join(dir, 'fmt.img');
  makeImage(p, 128 * 1024);
  patch(p, at, Buffer.from(hex, 'hex'));
  return p;
}

/** The kernel COW with `hex` written at byte `at` (entries start at 4096: 16 bytes each, old then new). */
function patchedCow(d: string, at: number, hex: string): { origin: string; cow: string } {
  const k = kernelCow(d);
  patch(k.cow, at, Buffer.from(hex, 'hex'));
  return k;
}

const ENTRY = (i: number) => 4096 + 16 * i;

const snapshotCases: Case[] = [
  {
    name: 'COW: wrong magic',
    args: (d) => {
      const k = patchedCow(d, 0, '536e4171');
      return ['snapshot-merge', k.origin, k.cow];
    },
    status: 2,
    message:
      /^dmtool: ENXIO: invalid or corrupt snapshot: bad magic 0x71416e53 \(expected 0x70416e53 "SnAp"\) \(.*cow\.img sectors 0\.\.0\)$/,
  },
  {
    name: 'COW: version 2',
    args: (d) => {
      const k = patchedCow(d, 8, '02000000');
      return ['snapshot-merge', k.origin, k.cow];
    },
    status: 2,
    message: /^dmtool: EINVAL: unsupported COW version 2 \(only 1 exists\)/,
  },
  {
    name: 'COW: chunk size not a power of two',
    args: (d) => {
      const k = patchedCow(d, 12, '0c000000');
      return ['snapshot-status', k.cow];
    },
    status: 2,
    message: /^dmtool: EINVAL: COW header chunk size 12 is not a power of two/,
  },
  {
    name: 'COW: chunk size 0 in the header',
    args: (d) => {
      const k = patchedCow(d, 12, '00000000');
      return ['snapshot-list', k.cow];
    },
    status: 2,
    message: /^dmtool: EINVAL: COW header chunk size 0 is not a power of two/,
  },
  {
    name: 'COW: invalidated snapshot cannot merge',
    args: (d) => {
      const k = patchedCow(d, 4, '00000000');
      return ['snapshot-merge', k.origin, k.cow];
    },
    status: 2,
    message: /^dmtool: EINVAL: snapshot is invalid: can't merge/,
  },
  {
    name: 'COW: truncated device',
    args: (d) => {
      const k = kernelCow(d);
      fs.truncateSync(k.cow, MiB);
      return ['snapshot-merge', k.origin, k.cow];
    },
    status: 2,
    message: /^dmtool: EINVAL: area 0 entry 254 \(old 344 → new 256\) points past the COW end \(256 chunks\)/,
  },
  {
    name: 'COW: entry points into a metadata chunk',
    args: (d) => {
      const k = patchedCow(d, ENTRY(0) + 8, '0100000000000000');
      return ['snapshot-merge', k.origin, k.cow];
    },
    status: 2,
    message: /^dmtool: EINVAL: area 0 entry 0 \(old 3 → new 1\) points into a metadata chunk/,
  },
  {
    name: 'COW: entry points past the COW end',
    args: (d) => {
      const k = patchedCow(d, ENTRY(0) + 8, '0000100000000000');
      return ['snapshot-merge', k.origin, k.cow];
    },
    status: 2,
    message: /^dmtool: EINVAL: area 0 entry 0 \(old 3 → new 1048576\) points past the COW end \(4096 chunks\)/,
  },
  {
    name: 'COW: duplicate origin chunk',
    args: (d) => {
      const k = patchedCow(d, ENTRY(1), '03');
      return ['snapshot-merge', k.origin, k.cow];
    },
    status: 2,
    message: /^dmtool: EINVAL: area 0 entry 1 \(old 3 → new 3\) repeats origin chunk 3/,
  },
  {
    name: 'merge: origin smaller than the table needs',
    args: (d) => {
      const k = kernelCow(d);
      fs.truncateSync(k.origin, MiB);
      return ['snapshot-merge', k.origin, k.cow];
    },
    status: 2,
    message: /names an origin chunk beyond the origin end \(2048 sectors\)/,
  },
  {
    name: 'merge: origin and COW the same file',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-merge', k.origin, k.origin];
    },
    status: 2,
    message: /^dmtool: COW .*origin\.img is the same device as origin .*origin\.img$/,
  },
  {
    name: 'create: chunk size not a power of two',
    args: (d) => {
      const k = kernelCow(d);
      const z = dest(d, 'z.img');
      return ['snapshot-create', k.origin, z, '--chunk-size', '12'];
    },
    status: 2,
    message: /^dmtool: EINVAL: chunk size 12 sectors is not a power of two$/,
  },
  {
    name: 'create: chunk size 0',
    args: (d) => {
      const k = kernelCow(d);
      const z = path.join(d, 'z.img');
      makeImage(z, MiB);
      return ['snapshot-create', k.origin, z, '--chunk-size', '0'];
    },
    status: 2,
    message: /^dmtool: EINVAL: chunk size 0 sectors is out of range/,
  },
  {
    name: 'create: COW too small',
    args: (d) => {
      const k = kernelCow(d);
      const z = path.join(d, 'tiny.img');
      makeImage(z, 4096);
      return ['snapshot-create', k.origin, z, '--chunk-size', '8'];
    },
    status: 2,
    message: /^dmtool: ENOSPC: COW of 8 sectors cannot hold a header, a metadata area and one 8-sector chunk \(needs 24\)/,
  },
  {
    name: 'create: over an existing snapshot',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-create', k.origin, k.cow, '--chunk-size', '8'];
    },
    status: 2,
    message: /^dmtool: EEXIST: COW already holds a snapshot header \(refusing to format over it\)/,
  },
  {
    name: 'status: a COW never formatted',
    args: (d) => {
      const z = path.join(d, 'z.img');
      makeImage(z, MiB);
      return ['snapshot-status', z];
    },
    status: 2,
    message: /^dmtool: EINVAL: COW has no snapshot header \(magic is 0\); create the snapshot first/,
  },
  {
    name: 'read: range past the snapshot end',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-read', k.origin, k.cow, '--offset', '131072', '--length', '8', '-o', path.join(d, 'out.bin')];
    },
    status: 2,
    message: /sectors 131072\.\.131079 lie outside the 131072-sector snapshot$/,
  },
  {
    name: 'read: output over the origin',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-read', k.origin, k.cow, '-o', k.origin];
    },
    status: 2,
    message: /^dmtool: --output .*origin\.img is .*origin\.img, which is being read; name another file$/,
  },
  {
    name: 'write: missing input file',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-write', k.origin, k.cow, '--target', 'origin', '--offset', '0', '-i', path.join(d, 'nope.bin')];
    },
    status: 2,
    message: /^dmtool: --input .*nope\.bin: no such file$/,
  },
  {
    name: 'merge: batch smaller than a chunk',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-merge', k.origin, k.cow, '--batch-size', '1k'];
    },
    status: 2,
    message: /^dmtool: EINVAL: batch size 1024 bytes is smaller than one chunk \(4096 bytes\)/,
  },
  {
    name: 'write: unknown target',
    args: (d) => {
      const k = kernelCow(d);
      const z = dest(d, 'data.bin', 4096);
      return ['snapshot-write', k.origin, k.cow, '--target', 'bogus', '--offset', '0', '-i', z];
    },
    status: 2,
    message: /^dmtool: --target: Invalid enum value\. Expected 'origin' \| 'snapshot', received 'bogus'$/,
  },
  // snapshot-read -o: the output file is left alone until the snapshot is known readable
  {
    name: 'read: invalidated snapshot, output file kept',
    args: (d) => {
      const k = patchedCow(d, 4, '00000000');
      return ['snapshot-read', k.origin, k.cow, '-o', dest(d, 'out.bin', 4096)];
    },
    status: 2,
    message: /^dmtool: snapshot in .*cow\.img is invalid; nothing read$/,
  },
  {
    name: 'read: invalidated snapshot, new output file not created',
    args: (d) => {
      const k = patchedCow(d, 4, '00000000');
      return ['snapshot-read', k.origin, k.cow, '-o', path.join(d, 'new.bin')];
    },
    status: 2,
    message: /^dmtool: snapshot in .*cow\.img is invalid; nothing read$/,
  },
  // snapshot-write input bounds: never read more than the target range holds; longer input is refused before any write.
  {
    name: 'write: /dev/zero to the origin',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-write', k.origin, k.cow, '--target', 'origin', '--offset', '130048', '-i', '/dev/zero'];
    },
    status: 2,
    message:
      /^dmtool: origin write to .*origin\.img at sector 130048: input \/dev\/zero is longer than the 1024 sectors from there to the end of the 131072-sector origin$/,
  },
  {
    name: 'write: /dev/zero to the snapshot',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-write', k.origin, k.cow, '--target', 'snapshot', '--offset', '0', '-i', '/dev/zero'];
    },
    status: 2,
    message: /^dmtool: --input \/dev\/zero: more than 64 MiB from a pipe or device; write it to a file and give that$/,
  },
  {
    name: 'write: input file longer than the origin',
    args: (d) => {
      const k = kernelCow(d);
      const z = dest(d, 'data.bin', 2 * MiB);
      return ['snapshot-write', k.origin, k.cow, '--target', 'origin', '--offset', '129024', '-i', z];
    },
    status: 2,
    message: /^dmtool: origin write to .*origin\.img sectors 129024\.\.133119 ends beyond the 131072-sector origin$/,
  },
];

// Images that are not a whole number of 512-byte sectors: refused by every command that takes images
function oddSized(file: string, bytes: number): string {
  fs.truncateSync(file, bytes);
  return file;
}
const PARTIAL = (role: string, file: string, bytes: number) =>
  new RegExp(
    `^dmtool: ${role} .*${file.replace('.', '\\.')} is ${bytes} bytes, not a whole number of 512-byte sectors; pad or truncate it to a multiple of 512 bytes$`,
  );
const partialSectorCases: Case[] = [
  {
    name: 'copy: source of 1000 bytes',
    args: (d) => ['copy', oddSized(source(d), 1000), dest(d)],
    status: 2,
    message: PARTIAL('source', 'src.img', 1000),
  },
  {
    name: 'copy: destination of 4 MiB + 100 bytes',
    args: (d) => ['copy', source(d), oddSized(dest(d), 4 * MiB + 100)],
    status: 2,
    message: PARTIAL('destination 0', 'dst.img', 4 * MiB + 100),
  },
  {
    name: 'zero: device of 4 MiB + 1 byte',
    args: (d) => ['zero', oddSized(dest(d), 4 * MiB + 1)],
    status: 2,
    message: PARTIAL('device 0', 'dst.img', 4 * MiB + 1),
  },
  {
    name: 'snapshot-create: origin of 64 MiB + 100 bytes',
    args: (d) => {
      const z = path.join(d, 'z.img');
      makeImage(z, MiB);
      return ['snapshot-create', oddSized(source(d), 64 * MiB + 100), z, '--chunk-size', '8'];
    },
    status: 2,
    message: PARTIAL('origin', 'src.img', 64 * MiB + 100),
  },
  {
    name: 'snapshot-create: COW of 1 MiB + 100 bytes',
    args: (d) => {
      const z = path.join(d, 'z.img');
      makeImage(z, MiB + 100);
      return ['snapshot-create', source(d), z, '--chunk-size', '8'];
    },
    status: 2,
    message: PARTIAL('COW', 'z.img', MiB + 100),
  },
  {
    name: 'snapshot-status: COW with a torn tail',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-status', oddSized(k.cow, 16 * MiB + 7)];
    },
    status: 2,
    message: PARTIAL('COW', 'cow.img', 16 * MiB + 7),
  },
  {
    name: 'snapshot-list: COW with a torn tail',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-list', oddSized(k.cow, 16 * MiB + 7)];
    },
    status: 2,
    message: PARTIAL('COW', 'cow.img', 16 * MiB + 7),
  },
  {
    name: 'snapshot-read: origin with a torn tail',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-read', oddSized(k.origin, 64 * MiB + 300), k.cow, '-o', path.join(d, 'view.bin')];
    },
    status: 2,
    message: PARTIAL('origin', 'origin.img', 64 * MiB + 300),
  },
  {
    name: 'snapshot-write: origin with a torn tail',
    args: (d) => {
      const k = kernelCow(d);
      return [
        'snapshot-write',
        oddSized(k.origin, 64 * MiB + 300),
        k.cow,
        '--target',
        'origin',
        '--offset',
        '0',
        '-i',
        dest(d, 'data.bin', 4096),
      ];
    },
    status: 2,
    message: PARTIAL('origin', 'origin.img', 64 * MiB + 300),
  },
  {
    name: 'snapshot-merge: origin with a torn tail',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-merge', oddSized(k.origin, 64 * MiB + 300), k.cow];
    },
    status: 2,
    message: PARTIAL('origin', 'origin.img', 64 * MiB + 300),
  },
  {
    name: 'mirror-create: a leg of 8 MiB + 100 bytes',
    args: (d) => {
      const m = mirror(d);
      oddSized(m.legs[1], 8 * MiB + 100);
      return ['mirror-create', '--force', '--log', m.log, ...m.legs];
    },
    status: 2,
    message: PARTIAL('leg 1', 'leg1.img', 8 * MiB + 100),
  },
  {
    name: 'mirror-status: a log with a torn tail',
    args: (d) => {
      const m = mirror(d);
      return ['mirror-status', '--log', oddSized(m.log, 64 * 1024 + 10), ...m.legs];
    },
    status: 2,
    message: PARTIAL('the log', 'log.img', 64 * 1024 + 10),
  },
  {
    name: 'mirror-resync: a leg of 8 MiB + 100 bytes',
    args: (d) => {
      const m = mirror(d);
      oddSized(m.legs[0], 8 * MiB + 100);
      return ['mirror-resync', '--log', m.log, ...m.legs];
    },
    status: 2,
    message: PARTIAL('leg 0', 'leg0.img', 8 * MiB + 100),
  },
  {
    name: 'mirror-resync --table: a leg of 8 MiB + 100 bytes',
    args: (d) => {
      const m = mirror(d);
      oddSized(m.legs[1], 8 * MiB + 100);
      return ['mirror-resync', '--table', `0 16384 mirror disk 2 ${m.log} 1024 2 ${m.legs[0]} 0 ${m.legs[1]} 0`];
    },
    status: 2,
    message: PARTIAL('leg 1', 'leg1.img', 8 * MiB + 100),
  },
  {
    name: 'mirror-check: a leg of 8 MiB + 100 bytes',
    args: (d) => {
      const m = mirror(d);
      oddSized(m.legs[1], 8 * MiB + 100);
      return ['mirror-check', ...m.legs, '--length', '16384'];
    },
    status: 2,
    message: PARTIAL('leg 1', 'leg1.img', 8 * MiB + 100),
  },
];

/** A snapshot dump of the kernel-made COW, written by the CLI, edited by `edit`. */
function editedDump(dir: string, edit: (text: string) => string): string {
  const { cow } = kernelCow(dir);
  const r = run(['snapshot-dump', cow]);
  if (r.status !== 0) throw new Error(`setup failed: ${r.stderr}`);
  const file = path.join(dir, 'dump.json');
  fs.writeFileSync(file, edit(r.stdout));
  return file;
}

const toolboxCases: Case[] = [
  {
    name: 'snapshot-check: --quiet with --json',
    args: (d) => ['snapshot-check', kernelCow(d).cow, '--quiet', '--json'],
    status: 2,
    message: /^dmtool: --quiet and --json exclude each other$/,
  },
  {
    name: 'snapshot-check: no such COW',
    args: (d) => ['snapshot-check', path.join(d, 'missing.img')],
    status: 3,
    message: /^dmtool: ENOENT: open failed on .*missing\.img: no such file or device$/,
  },
  {
    name: 'snapshot-dump: a COW never formatted',
    args: (d) => {
      const cow = path.join(d, 'cow.img');
      makeImage(cow, MiB);
      return ['snapshot-dump', cow];
    },
    status: 2,
    message: /^dmtool: EINVAL: COW has no snapshot header \(magic is 0\): nothing to dump \(.*cow\.img sectors 0\.\.0\)$/,
  },
  {
    name: 'snapshot-dump: --json without --output',
    args: (d) => ['snapshot-dump', kernelCow(d).cow, '--json'],
    status: 2,
    message: /^dmtool: --json needs --output FILE \(the dump goes to stdout otherwise\)$/,
  },
  {
    name: 'snapshot-dump: --output is the COW',
    args: (d) => {
      const { cow } = kernelCow(d);
      return ['snapshot-dump', cow, '-o', cow];
    },
    status: 2,
    message: /^dmtool: --output .*cow\.img is .*cow\.img, which is being read; name another file$/,
  },
  {
    name: 'snapshot-restore: the input is not a dump',
    args: (d) => {
      const { origin, cow } = kernelCow(d);
      return ['snapshot-restore', '-i', origin, cow];
    },
    status: 2,
    message: /^dmtool: EINVAL: dump line 1: not a snapshot dump \(it starts with neither "\{" nor "<"\)$/,
  },
  {
    name: 'snapshot-restore: no such dump',
    args: (d) => ['snapshot-restore', '-i', path.join(d, 'missing.json'), kernelCow(d).cow],
    status: 2,
    message: /^dmtool: --input .*missing\.json: no such file$/,
  },
  {
    name: 'snapshot-restore: a dump cut short',
    args: (d) => {
      const dump = editedDump(d, (t) => t.slice(0, 2000));
      return ['snapshot-restore', '-i', dump, path.join(d, 'cow.img')];
    },
    status: 2,
    message: /^dmtool: EINVAL: dump line \d+: (unexpected end of the dump|unterminated string)$/,
  },
  {
    name: 'snapshot-restore: an entry past the COW end',
    args: (d) => {
      const dump = editedDump(d, (t) => t.replace('"newChunk": 312 }', '"newChunk": 4096 }'));
      return ['snapshot-restore', '-i', dump, path.join(d, 'cow.img')];
    },
    status: 2,
    message: /^dmtool: EINVAL: dump exception 309 \(old 399 → new 4096\) points past the COW end \(4096 chunks\) \(.*cow\.img\)$/,
  },
  {
    name: 'snapshot-restore: an origin chunk twice',
    args: (d) => {
      const dump = editedDump(d, (t) => t.replace('"oldChunk": 5, "newChunk": 3', '"oldChunk": 3, "newChunk": 3'));
      return ['snapshot-restore', '-i', dump, path.join(d, 'cow.img')];
    },
    status: 2,
    message: /^dmtool: EINVAL: dump exception 1 \(old 3 → new 3\) repeats origin chunk 3 \(.*cow\.img\)$/,
  },
  {
    name: 'snapshot-restore: a table too large for the COW',
    args: (d) => {
      const dump = editedDump(d, (t) => t);
      const small = path.join(d, 'small.img');
      makeImage(small, 256 * 4096);
      return ['snapshot-restore', '-i', dump, small];
    },
    status: 2,
    message: /^dmtool: EINVAL: dump exception \d+ \(old \d+ → new 256\) points past the COW end \(256 chunks\) \(.*small\.img\)$/,
  },
  {
    name: 'snapshot-restore: the target holds an ext4 filesystem',
    args: (d) => {
      const dump = editedDump(d, (t) => t);
      return ['snapshot-restore', '-i', dump, formatted(d, 1080, '53ef')];
    },
    status: 2,
    message: /^dmtool: .*fmt\.img holds an ext2\/3\/4 filesystem \(magic 0xEF53\) at sector 2; give --force to write a COW table over it$/,
  },
  {
    name: 'snapshot-delta: an invalidated snapshot',
    args: (d) => ['snapshot-delta', patchedCow(d, 4, '00000000').cow],
    status: 2,
    message: /^dmtool: snapshot in .*cow\.img is invalid: its table no longer lists every changed chunk$/,
  },
  {
    name: 'snapshot-delta: an entry past the origin end',
    args: (d) => {
      const k = patchedCow(d, 4096 + 16 * 10, '0040000000000000');
      return ['snapshot-delta', k.cow, '--origin', k.origin];
    },
    status: 2,
    message: /^dmtool: EINVAL: area 0 entry 10 \(old 16384 → new 12\) names an origin chunk beyond the origin end \(131072 sectors\)/,
  },
  {
    name: 'mirror-log-check: --quiet with --json',
    args: (d) => ['mirror-log-check', mirror(d).log, '-q', '--json'],
    status: 2,
    message: /^dmtool: --quiet and --json exclude each other$/,
  },
  {
    name: 'mirror-log-dump: not a dirty log',
    args: (d) => ['mirror-log-dump', kernelCow(d).cow],
    status: 2,
    message:
      /^dmtool: dirty log .*cow\.img has bad magic 0x70416e53 at sector 0 \(expected 0x4d695272, "MiRr"\): not a dm-mirror disk log$/,
  },
  {
    name: 'mirror-log-restore: not a dump',
    args: (d) => {
      const m = mirror(d);
      const bad = path.join(d, 'dump.txt');
      fs.writeFileSync(bad, 'version 2\n');
      return ['mirror-log-restore', '-i', bad, m.log];
    },
    status: 2,
    message: /^dmtool: dump line 1: expected "dmtool-mirror-log-dump 1"$/,
  },
  {
    name: 'mirror-log-restore: a range past the last region',
    args: (d) => {
      const m = mirror(d);
      const bad = path.join(d, 'dump.txt');
      fs.writeFileSync(bad, 'dmtool-mirror-log-dump 1\nversion 2\nregions 16\ndirty 10 7\n');
      return ['mirror-log-restore', '-i', bad, m.log];
    },
    status: 2,
    message: /^dmtool: dump line 4: range 10\+7 is empty or past region 15$/,
  },
  {
    name: 'mirror-log-restore: a log device too small for the regions',
    args: (d) => {
      const small = path.join(d, 'small.img');
      makeImage(small, 1024);
      const dump = path.join(d, 'dump.txt');
      fs.writeFileSync(dump, 'dmtool-mirror-log-dump 1\nversion 2\nregions 16\n');
      return ['mirror-log-restore', '-i', dump, small];
    },
    status: 2,
    message: /^dmtool: log device .*small\.img is 1024 bytes; 16 regions need 1536$/,
  },
  {
    name: 'mirror-log-restore: the target holds a snapshot COW',
    args: (d) => {
      const dump = path.join(d, 'dump.txt');
      fs.writeFileSync(dump, 'dmtool-mirror-log-dump 1\nversion 2\nregions 16\n');
      return ['mirror-log-restore', '-i', dump, kernelCow(d).cow];
    },
    status: 2,
    message: /^dmtool: .*cow\.img holds a snapshot COW \(SnAp header\) at sector 0; give --force to write a dirty log over it$/,
  },
];

/** A snapshot-export stream of the kernel-made COW, in `dir`, with its origin and COW. */
function exported(dir: string): { origin: string; cow: string; stream: string } {
  const k = kernelCow(dir);
  const stream = path.join(dir, 'tonight.delta');
  mustRun(['snapshot-export', k.origin, k.cow, '-o', stream]);
  return { ...k, stream };
}

const exportCases: Case[] = [
  {
    name: 'snapshot-export: an invalidated snapshot',
    args: (d) => {
      const k = patchedCow(d, 4, '00000000');
      return ['snapshot-export', k.origin, k.cow, '-o', path.join(d, 'out.delta')];
    },
    status: 2,
    message: /^dmtool: EINVAL: snapshot is invalid: its table no longer lists every changed chunk \(.*cow\.img\)$/,
  },
  {
    name: 'snapshot-export: an entry past the origin end',
    args: (d) => {
      const k = patchedCow(d, ENTRY(10), '0040000000000000');
      return ['snapshot-export', k.origin, k.cow, '-o', path.join(d, 'out.delta')];
    },
    status: 2,
    message: /^dmtool: EINVAL: area 0 entry 10 \(old 16384 → new 12\) names an origin chunk beyond the origin end \(131072 sectors\)/,
  },
  {
    name: 'snapshot-export: two exceptions name one origin chunk',
    args: (d) => {
      const k = patchedCow(d, ENTRY(11), '0300000000000000');
      return ['snapshot-export', k.origin, k.cow, '-o', path.join(d, 'out.delta')];
    },
    status: 2,
    message: /^dmtool: EINVAL: two exceptions name origin chunk 3 \(.*cow\.img\)$/,
  },
  {
    name: 'snapshot-export: a COW never formatted',
    args: (d) => {
      const k = kernelCow(d);
      makeImage(path.join(d, 'blank.img'), MiB);
      return ['snapshot-export', k.origin, path.join(d, 'blank.img'), '-o', path.join(d, 'out.delta')];
    },
    status: 2,
    message: /^dmtool: EINVAL: COW has no snapshot header \(magic is 0\); create the snapshot first/,
  },
  {
    name: 'snapshot-export: -o names the COW',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-export', k.origin, k.cow, '-o', k.cow];
    },
    status: 2,
    message: /^dmtool: --output .*cow\.img is .*cow\.img, which is being read; name another file$/,
  },
  {
    name: 'snapshot-export: --json with -o -',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-export', k.origin, k.cow, '-o', '-', '--json'];
    },
    status: 2,
    message: /^dmtool: --json needs -o FILE \(with -o - the stream goes to stdout\)$/,
  },
  {
    name: 'snapshot-export: an unknown --data',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-export', k.origin, k.cow, '--data', 'cow', '-o', path.join(d, 'out.delta')];
    },
    status: 2,
    message: /^dmtool: --data: Invalid enum value\. Expected 'origin' \| 'snapshot', received 'cow'$/,
  },
  {
    name: 'snapshot-apply: the input is not a stream',
    args: (d) => {
      const k = kernelCow(d);
      return ['snapshot-apply', '-i', k.cow, k.origin];
    },
    status: 2,
    message: /^dmtool: EINVAL: not a snapshot-export stream: bad magic "SnAp\\u0001\\u0000\\u0000\\u0000" \(expected "DMTEXPRT"\)$/,
  },
  {
    name: 'snapshot-apply: no such input',
    args: (d) => ['snapshot-apply', '-i', path.join(d, 'missing.delta'), kernelCow(d).origin],
    status: 2,
    message: /^dmtool: --input .*missing\.delta: no such file$/,
  },
  {
    name: 'snapshot-apply: an empty stdin',
    args: (d) => ['snapshot-apply', '-i', '-', kernelCow(d).origin],
    status: 2,
    message: /^dmtool: EINVAL: the stream ends inside its header \(0 of 128 bytes\)$/,
  },
  {
    name: 'snapshot-apply: a target smaller than the origin',
    args: (d) => {
      const e = exported(d);
      return ['snapshot-apply', '-i', e.stream, e.cow];
    },
    status: 2,
    message:
      /^dmtool: EINVAL: target .*cow\.img is 32768 sectors, the stream's origin 131072: a stream applies only to a device of its origin's size$/,
  },
  {
    name: 'snapshot-apply: the input is the target',
    args: (d) => {
      const e = exported(d);
      return ['snapshot-apply', '-i', e.stream, e.stream];
    },
    status: 2,
    message: /^dmtool: --input .*tonight\.delta is the target .*tonight\.delta; name another file$/,
  },
  {
    name: 'snapshot-apply: a stream cut short',
    args: (d) => {
      const e = exported(d);
      fs.truncateSync(e.stream, 600000);
      return ['snapshot-apply', '-i', e.stream, e.origin];
    },
    status: 2,
    message:
      /^dmtool: EINVAL: the stream ends inside the data of record 6 \(chunks 100\.\.399\) \(600000 bytes of 1270400\): it was cut short$/,
  },
  {
    name: 'snapshot-apply: a record damaged',
    args: (d) => {
      const e = exported(d);
      patch(e.stream, 1000000, Buffer.from('x'));
      return ['snapshot-apply', '-i', e.stream, e.origin, '--dry-run'];
    },
    status: 2,
    message: /^dmtool: EINVAL: record 6 \(chunks 100\.\.399\): checksum mismatch, its head or data is damaged$/,
  },
];

/** LVM volume operands and lvm-ls on images that are not what they must be. */
const lvmCases: Case[] = [
  {
    name: 'lvm-ls: an image without an LVM2 label',
    args: (d) => {
      makeImage(path.join(d, 'disk.img'), MiB, 'DISK');
      return ['lvm-ls', path.join(d, 'disk.img')];
    },
    status: 2,
    message: /no LVM2 label \(LABELONE\) in sectors 0-3: not a physical volume \(.*disk\.img sectors 0\.\.3\)$/,
  },
  {
    name: 'copy: a volume operand on an image without an LVM2 label',
    args: (d) => {
      makeImage(path.join(d, 'disk.img'), MiB, 'DISK');
      makeImage(path.join(d, 'out.img'), MiB);
      return ['copy', `${path.join(d, 'disk.img')}:vg0/data`, path.join(d, 'out.img')];
    },
    status: 2,
    message: /no LVM2 label \(LABELONE\) in sectors 0-3: not a physical volume/,
  },
  {
    name: 'copy: a volume operand that lists a PV twice',
    args: (d) => {
      makeImage(path.join(d, 'pv.img'), MiB);
      makeImage(path.join(d, 'out.img'), MiB);
      return ['copy', `${path.join(d, 'pv.img')},${path.join(d, 'pv.img')}:vg0/data`, path.join(d, 'out.img')];
    },
    status: 2,
    message: /a PV is listed twice$/,
  },
  ...lvmSnapshotCases(),
];

/** snapshot-merge (and the other snapshot commands) on `PV...:VG/SNAP` operands that are not what they must be. */
function lvmSnapshotCases(): Case[] {
  const merge = (d: string, pvs: string[], lv: string) => [
    'snapshot-merge',
    `${pvs.join(',')}:vg0/${lv}`,
    '--update-metadata',
    '--lock-dir',
    path.join(d, 'lock'),
  ];
  let holder: BlockDevice | undefined;
  return [
    {
      name: 'snapshot-merge: an LV that is not a snapshot',
      args: (d) => merge(d, makeVgImages(d), 'data'),
      status: 2,
      message:
        /^dmtool: vg0\/data is not a snapshot \(the origin of a snapshot, a linear\/striped LV\); name a snapshot LV, or give ORIGIN and COW$/,
    },
    {
      name: 'snapshot-read: an LV that is not a snapshot',
      args: (d) => ['snapshot-read', `${makeVgImages(d).join(',')}:vg0/data`, '-o', path.join(d, 'view.img')],
      status: 2,
      message: /^dmtool: vg0\/data is not a snapshot/,
    },
    {
      name: 'snapshot-merge: a PV of the VG not given',
      args: (d) => merge(d, makeVgImages(d).slice(0, 1), 'snap'),
      status: 2,
      message: /^dmtool: VG vg0 is missing PV pv1 \(pv1111-.*, last seen as \/dev\/loop1\): give every PV of the VG$/,
    },
    {
      name: 'snapshot-merge: a metadata area header whose checksum is wrong',
      args: (d) => {
        const pvs = makeVgImages(d);
        patch(pvs[1], VG_IMAGE_MDA_BYTE + 100, Buffer.from([1]));
        return merge(d, pvs, 'snap');
      },
      status: 2,
      message: /metadata area header checksum 0x[0-9a-f]+ does not match its contents/,
    },
    {
      name: 'snapshot-merge: metadata text whose checksum is wrong',
      args: (d) => {
        const pvs = makeVgImages(d);
        patch(pvs[0], VG_IMAGE_MDA_BYTE + 512 + 3, Buffer.from('X'));
        return merge(d, pvs, 'snap');
      },
      status: 2,
      message: /metadata text checksum 0x[0-9a-f]+ does not match its \d+ bytes/,
    },
    {
      name: 'snapshot-merge: truncated metadata text',
      args: (d) => merge(d, makeVgImages(d, vg0Text().slice(0, 600)), 'snap'),
      status: 2,
      message: /metadata at byte 4608 line \d+ column \d+: /,
    },
    {
      name: 'snapshot-merge: an unknown segment type',
      args: (d) => merge(d, makeVgImages(d, vg0Text().replace('type = "snapshot"', 'type = "snapshat"')), 'snap'),
      status: 2,
      message: /VG vg0 LV snapshot0 segment1: unknown segment type "snapshat"/,
    },
    {
      name: 'snapshot-merge: a COW LV that holds no snapshot',
      args: (d) => merge(d, makeVgImages(d), 'snap'),
      status: 2,
      message: /COW has no snapshot header \(magic is 0\); create the snapshot first \(.*:vg0\/snap COW snap sectors 0\.\.0\)$/,
    },
    {
      name: 'snapshot-merge: the VG is locked (lvm2 holds V_vg0)',
      args: (d) => {
        fs.mkdirSync(path.join(d, 'lock'));
        fs.writeFileSync(path.join(d, 'lock', 'V_vg0'), '');
        holder = FileDevice.open(path.join(d, 'lock', 'V_vg0'), { write: true, lock: 'exclusive' });
        return merge(d, makeVgImages(d), 'snap');
      },
      after: () => holder?.close(),
      status: 3,
      message: /^dmtool: VG vg0 is locked \(.*V_vg0.*\): lvm2 is changing it; try again once it is done$/,
    },
    {
      name: 'snapshot-merge: --update-metadata without an LVM snapshot',
      args: (d) => {
        const k = kernelCow(d);
        return ['snapshot-merge', k.origin, k.cow, '--update-metadata'];
      },
      status: 2,
      message: /^dmtool: --update-metadata and --output need one LVM snapshot PV\[,PV\.\.\.\]:VG\/SNAP in place of ORIGIN COW$/,
    },
  ];
}

/** `dmtool serve` refusing its devices: every case exits before it listens (the socket would be in the folder). */
const serveArgs = (d: string, ...args: string[]) => ['serve', ...args, '--socket', path.join(d, 'nbd.sock')];

const serveCases: Case[] = [
  {
    name: 'serve: a TCP port above 65535',
    args: (d) => ['serve', '--dev', 'x', `0 8 linear ${source(d)} 0`, '--tcp', '127.0.0.1:99999'],
    status: 2,
    message: /^dmtool: --tcp: port 99999 is not a TCP port \(1\.\.65535\)$/,
  },
  {
    name: 'serve: a --buffer-limit below the largest request',
    args: (d) => ['serve', '--dev', 'x', `0 8 linear ${source(d)} 0`, '--buffer-limit', '16M'],
    status: 2,
    message: /^dmtool: --buffer-limit: 16M is below 32M, the largest request a client may send$/,
  },
  {
    name: 'serve: a --buffer-limit that is not a size',
    args: (d) => ['serve', '--dev', 'x', `0 8 linear ${source(d)} 0`, '--buffer-limit', 'lots'],
    status: 2,
    message: /^dmtool: --buffer-limit: "lots" is not a size \(examples: 4096, 64k, 1M, 2G\)$/,
  },
  {
    name: 'serve: a snapshot chunk size that is not a power of two',
    args: (d) => {
      const k = kernelCow(d);
      return serveArgs(d, '--dev', 's', `0 131072 snapshot ${k.origin} ${k.cow} P 12`);
    },
    status: 2,
    message: /^dmtool: device s: chunk size must be a power of two number of sectors, got 12$/,
  },
  {
    name: "serve: a kernel COW served with another chunk size than its header's",
    args: (d) => {
      const k = kernelCow(d);
      return serveArgs(d, '--dev', 's', `0 131072 snapshot ${k.origin} ${k.cow} P 16`);
    },
    status: 2,
    message: /chunk size 16 does not match the COW header's 8 sectors/,
  },
  {
    name: 'serve: a COW that holds a mirror log',
    args: (d) => {
      const m = mirror(d);
      return serveArgs(d, '--dev', 's', `0 16384 snapshot ${m.legs[0]} ${m.log} P 8`);
    },
    status: 2,
    message:
      /^dmtool: ENXIO: invalid or corrupt snapshot: bad magic 0x4d695272 \(expected 0x70416e53 "SnAp"\) \(.*log\.img sectors 0\.\.0\)$/,
  },
  {
    name: 'serve: the COW of one device is the linear base of another',
    args: (d) => {
      const k = kernelCow(d);
      return serveArgs(d, '--dev', 'a', `0 131072 snapshot ${k.origin} ${k.cow} P 8`, '--dev', 'b', `0 8 linear ${k.cow} 0`);
    },
    status: 2,
    message: /^dmtool: device b: .*cow\.img is the linear base of b and already the COW of a$/,
  },
  {
    name: 'serve: a snapshot-origin shorter than the origin',
    args: (d) => {
      const k = kernelCow(d);
      return serveArgs(d, '--dev', 'o', `0 65536 snapshot-origin ${k.origin}`);
    },
    status: 2,
    message: /^dmtool: device o: length 65536 must be the origin's size \(.*origin\.img has 131072 sectors\)$/,
  },
  {
    name: 'serve: a mirror whose log records another region count',
    args: (d) => {
      const m = mirror(d);
      return serveArgs(d, '--dev', 'm', `0 16384 mirror disk 2 ${m.log} 512 2 ${m.legs[0]} 0 ${m.legs[1]} 0`);
    },
    status: 2,
    message: /^dmtool: dirty log .*log\.img records 16 regions at sector 0, but the mirror has 32: wrong region count/,
  },
  {
    name: 'serve: a mirror longer than its legs',
    args: (d) => {
      const m = mirror(d);
      return serveArgs(d, '--dev', 'm', `0 32768 mirror core 1 1024 2 ${m.legs[0]} 0 ${m.legs[1]} 0`);
    },
    status: 2,
    message: /^dmtool: leg .*leg0\.img is smaller than the mirror: it has 16384 sectors, the mirror needs sectors 0\.\.32767$/,
  },
  {
    name: 'serve: a snapshot-merge of a transient COW',
    args: (d) => {
      const k = kernelCow(d);
      return serveArgs(d, '--dev', 'm', `0 131072 snapshot-merge ${k.origin} ${k.cow} N 8`);
    },
    status: 2,
    message: /^dmtool: device m: snapshot-merge takes a persistent COW \(P\)$/,
  },
  {
    name: 'serve: a snapshot-merge of a COW without a header',
    args: (d) => {
      const k = kernelCow(d);
      makeImage(path.join(d, 'fresh.img'), MiB);
      return serveArgs(d, '--dev', 'm', `0 131072 snapshot-merge ${k.origin} ${path.join(d, 'fresh.img')} P 8`);
    },
    status: 2,
    message: /^dmtool: EINVAL: COW has no snapshot header \(magic is 0\); create the snapshot first \(.*fresh\.img sectors 0\.\.0\)$/,
  },
  {
    name: "serve: a snapshot-merge with another chunk size than the COW header's",
    args: (d) => {
      const k = kernelCow(d);
      return serveArgs(d, '--dev', 'm', `0 131072 snapshot-merge ${k.origin} ${k.cow} P 16`);
    },
    status: 2,
    message: /^dmtool: device m: chunk size 16 differs from the COW header's \(8 sectors\)$/,
  },
  {
    name: 'serve: the origin being merged also served as a snapshot-origin',
    args: (d) => {
      const k = kernelCow(d);
      return serveArgs(
        d,
        '--dev',
        'm',
        `0 131072 snapshot-merge ${k.origin} ${k.cow} P 8`,
        '--dev',
        'o',
        `0 131072 snapshot-origin ${k.origin}`,
      );
    },
    status: 2,
    message: /^dmtool: device o: .*origin\.img is the origin of o and already the merging origin of m$/,
  },
  {
    name: 'serve: a target it does not serve',
    args: (d) => serveArgs(d, '--dev', 'z', '0 8 zero'),
    status: 2,
    message: /^dmtool: device z: target zero cannot be served \(linear, snapshot-origin, snapshot, snapshot-merge and mirror can\)$/,
  },
  {
    name: 'serve: --config that is not JSON',
    args: (d) => {
      fs.writeFileSync(path.join(d, 'devices.json'), '{"devices": [');
      return serveArgs(d, '--config', path.join(d, 'devices.json'));
    },
    status: 2,
    message: /^dmtool: --config .*devices\.json: not JSON: /,
  },
  {
    name: 'serve: --config with a field it does not know',
    args: (d) => {
      const k = kernelCow(d);
      fs.writeFileSync(
        path.join(d, 'devices.json'),
        JSON.stringify({ devices: [{ name: 'o', table: `0 131072 snapshot-origin ${k.origin}`, ro: true }] }),
      );
      return serveArgs(d, '--config', path.join(d, 'devices.json'));
    },
    status: 2,
    message: /^dmtool: --config .*devices\.json: devices\.0: Unrecognized key\(s\) in object: 'ro'/,
  },
  {
    name: 'serve: --read-only names no device',
    args: (d) => {
      const k = kernelCow(d);
      return serveArgs(d, '--dev', 'o', `0 131072 snapshot-origin ${k.origin}`, '--read-only', 'snap');
    },
    status: 2,
    message: /^dmtool: no device named snap \(give it with --dev or --config\)$/,
  },
];

/** TLS options of serve and TLS URIs: refused before anything listens or connects. */
const tlsCases: Case[] = [
  {
    name: 'serve: plaintext on a TCP address other machines reach, without an explicit --tls off',
    args: (d) => ['serve', '--dev', 'x', `0 8 linear ${source(d)} 0`, '--tcp', '192.0.2.1:10809'],
    status: 2,
    message:
      /^dmtool: --tcp 192\.0\.2\.1 is reachable from other machines: give certificates \(--tls-certificates DIR\), or --tls off to serve in plaintext on purpose$/,
  },
  {
    name: 'serve: --tls require without certificates',
    args: (d) => serveArgs(d, '--dev', 'x', `0 8 linear ${source(d)} 0`, '--tls', 'require'),
    status: 2,
    message: /^dmtool: --tls require needs --tls-certificates DIR, or --tls-cert FILE and --tls-key FILE$/,
  },
  {
    name: 'serve: a private key others may read',
    args: (d) => {
      const certs = makeCerts(path.join(d, 'pki'));
      fs.chmodSync(path.join(certs.server, 'server-key.pem'), 0o644);
      return serveArgs(d, '--dev', 'x', `0 8 linear ${source(d)} 0`, '--tls-certificates', certs.server);
    },
    status: 2,
    message: /^dmtool: the private key .*\/server-key\.pem is open to others than its owner \(mode 0644\); chmod 600 it$/,
  },
  {
    name: 'serve: --tls-verify-client without a CA',
    args: (d) => {
      const certs = makeCerts(path.join(d, 'pki'));
      const [cert, key] = ['server-cert.pem', 'server-key.pem'].map((f) => path.join(certs.server, f));
      return serveArgs(d, '--dev', 'x', `0 8 linear ${source(d)} 0`, '--tls-cert', cert, '--tls-key', key, '--tls-verify-client');
    },
    status: 2,
    message: /^dmtool: --tls-verify-client needs a CA certificate \(--tls-ca FILE, or ca-cert\.pem in --tls-certificates DIR\)$/,
  },
  {
    name: 'serve: a certificate that does not match its key',
    args: (d) => {
      const certs = makeCerts(path.join(d, 'pki'));
      const [cert, key] = [path.join(certs.client, 'client-cert.pem'), path.join(certs.server, 'server-key.pem')];
      return serveArgs(d, '--dev', 'x', `0 8 linear ${source(d)} 0`, '--tls-cert', cert, '--tls-key', key);
    },
    status: 2,
    message: /^dmtool: the TLS credentials \(.*client-cert\.pem, .*server-key\.pem\) cannot be used: key values mismatch$/,
  },
  {
    name: 'copy: an nbds URI whose certificates directory has no ca-cert.pem',
    args: (d) => {
      fs.mkdirSync(path.join(d, 'empty'));
      return ['copy', source(d), `nbds+unix:///?socket=${path.join(d, 'none.sock')}&tls-certificates=${path.join(d, 'empty')}`];
    },
    status: 2,
    message: /^dmtool: nbds\+unix:\/\/\/\?socket=.*none\.sock: the certificates directory .*empty has no ca-cert\.pem$/,
  },
  {
    name: 'copy: an nbds URI with a pre-shared key file',
    args: (d) => ['copy', source(d), `nbds://alice:secret@127.0.0.1/disk?tls-psk-file=${path.join(d, 'keys.psk')}`],
    status: 2,
    message:
      /^dmtool: nbds:\/\/127\.0\.0\.1\/disk\?tls-psk-file=.*keys\.psk: TLS with a pre-shared key \(tls-psk-file\) is not supported; use X\.509 \(tls-certificates=DIR\)$/,
  },
];

/**
 * A `dmtool serve` of one linear device in `dir`, started for a ctl case and
 * waited for (bounded); `after` stops it and waits until its sockets are gone.
 */
function serveForCtl(dir: string): { ctl: string; after: () => void } {
  const disk = path.join(dir, 'disk.img');
  makeImage(disk, MiB, 'CTL');
  const socket = path.join(dir, 'nbd.sock');
  const child = spawn(process.execPath, [DMTOOL, 'serve', '--dev', 'd', `0 2048 linear ${disk} 0`, '--socket', socket], {
    stdio: 'ignore',
  });
  const waitFor = (test: string) => execFileSync('sh', ['-c', `for i in $(seq 150); do ${test} && exit 0; sleep 0.1; done; exit 1`]);
  waitFor(`[ -S ${socket}.ctl ]`);
  return {
    ctl: `${socket}.ctl`,
    after: () => {
      child.kill('SIGTERM');
      waitFor(`[ ! -e ${socket}.ctl ] && [ ! -e ${socket} ]`);
    },
  };
}

const ctlCases: Case[] = [
  {
    name: 'ctl: nobody listens on the socket',
    args: (d) => ['ctl', path.join(d, 'nbd.sock.ctl'), 'status'],
    status: 3,
    message: /^dmtool: no dmtool serve listens on .*nbd\.sock\.ctl \(ENOENT\)$/,
  },
  {
    name: 'ctl: a command it does not know',
    args: (d) => ['ctl', path.join(d, 'nbd.sock.ctl'), 'frobnicate', 'd'],
    status: 2,
    message: /^dmtool: unknown control command "frobnicate" \(status \[DEV\] \| table/,
  },
  {
    name: 'ctl: suspend without a device',
    args: (d) => ['ctl', path.join(d, 'nbd.sock.ctl'), 'suspend'],
    status: 2,
    message: /^dmtool: suspend takes a device name /,
  },
  (() => {
    let server: { ctl: string; after: () => void } | undefined;
    return {
      name: 'ctl: a device the server does not have',
      args: (d: string) => {
        server = serveForCtl(d);
        return ['ctl', server.ctl, 'status', 'nosuch'];
      },
      status: 2,
      message: /^dmtool: no device named nosuch$/,
      after: () => server?.after(),
    };
  })(),
  (() => {
    let server: { ctl: string; after: () => void } | undefined;
    return {
      name: 'ctl: a message the device does not take',
      args: (d: string) => {
        server = serveForCtl(d);
        return ['ctl', server.ctl, 'message', 'd', 'rate', '10M'];
      },
      status: 2,
      message: /^dmtool: d: a rate applies to a mirror's resync or a snapshot-merge only$/,
      after: () => server?.after(),
    };
  })(),
];

function runCorpus(cases: Case[]): void {
  it.each(cases.map((c) => [c.name, c] as const))('%s', (_name, c) => {
    const dir = tempDir('dmtool-bad-');
    try {
      const args = c.args(dir);
      const files = fs.readdirSync(dir).filter((f) => fs.statSync(path.join(dir, f)).isFile());
      const before = files.map((f) => sha256File(path.join(dir, f)));
      const r = run(args);
      expect({ status: r.status, stderr: r.stderr }).toMatchObject({ status: c.status });
      const lines = r.stderr.split('\n').filter((l) => l.length > 0);
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^dmtool: /);
      expect(lines[0]).toMatch(c.message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      expect(files.map((f) => sha256File(path.join(dir, f)))).toEqual(before);
      expect(fs.readdirSync(dir).filter((f) => fs.statSync(path.join(dir, f)).isFile())).toEqual(files);
    } finally {
      c.after?.();
      removeDir(dir);
    }
  });
}

describe('bad input is refused with one line, a non-zero exit and nothing written', () => {
  describe('copy, zero and options', () => runCorpus(copyCases));
  describe('mirror', () => runCorpus(mirrorCases));
  describe('snapshot', () => runCorpus(snapshotCases));
  describe('images not a whole number of sectors', () => runCorpus(partialSectorCases));
  describe('toolbox: snapshot and mirror-log check, dump, restore, delta', () => runCorpus(toolboxCases));
  describe('toolbox: snapshot-export and snapshot-apply', () => runCorpus(exportCases));
  describe('LVM volumes', () => runCorpus(lvmCases));
  describe('serve', () => runCorpus(serveCases));
  describe('ctl', () => runCorpus(ctlCases));
  describe('TLS', () => runCorpus(tlsCases));

  it('holds at least 40 cases', () => {
    expect(copyCases.length + mirrorCases.length + snapshotCases.length + partialSectorCases.length).toBeGreaterThanOrEqual(40);
  });
});
