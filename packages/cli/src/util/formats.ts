import { LOG_HEADER_BYTES, LOG_MAGIC, readHeader } from '@dmtool/dm-mirror';
import { SNAP_MAGIC } from '@dmtool/dm-snapshot';
import { BlockDevice } from '@dmtool/kcopyd';

/** A format recognised on a device: what it is and the sector its signature is in. */
export interface FoundFormat {
  kind: 'mirror-log' | 'other';
  what: string;
  sector: number;
  /** Region count of a dm-mirror log. */
  regions?: number;
}

const PROBE_BYTES = 68 * 1024; // the furthest signature, btrfs at 64 KiB + 64, fits

/** Where signatures sit, from each format's own on-disk definition (as blkid knows them). */
const SIGNATURES: { at: number; magic: Buffer; what: string }[] = [
  { at: 1080, magic: Buffer.from([0x53, 0xef]), what: 'an ext2/3/4 filesystem (magic 0xEF53)' },
  { at: 0, magic: Buffer.from('XFSB'), what: 'an XFS filesystem (XFSB)' },
  { at: 65600, magic: Buffer.from('_BHRfS_M'), what: 'a btrfs filesystem (_BHRfS_M)' },
  { at: 4086, magic: Buffer.from('SWAPSPACE2'), what: 'a swap area (SWAPSPACE2)' },
  ...[0, 1, 2, 3].map((s) => ({ at: s * 512, magic: Buffer.from('LABELONE'), what: 'an LVM2 physical volume label (LABELONE)' })),
  { at: 512, magic: Buffer.from('EFI PART'), what: 'a GPT partition table (EFI PART)' },
];

/**
 * What the start of a device already holds, if dmtool knows it: its own
 * dirty log or COW, an LVM2 label, a filesystem, swap or a partition table.
 */
export async function probeFormat(device: BlockDevice): Promise<FoundFormat | undefined> {
  const head = Buffer.alloc(Math.min(device.sizeBytes, PROBE_BYTES));
  if (head.length === 0) return undefined;
  await device.read(head, 0, head.length, 0);
  const log = head.length >= LOG_HEADER_BYTES ? readHeader(head) : undefined;
  if (log?.magic === LOG_MAGIC) return { kind: 'mirror-log', what: 'a dm-mirror log', sector: 0, regions: Number(log.nrRegions) };
  if (head.length >= 4 && head.readUInt32LE(0) === SNAP_MAGIC) return { kind: 'other', what: 'a snapshot COW (SnAp header)', sector: 0 };
  for (const sig of SIGNATURES) {
    const end = sig.at + sig.magic.length;
    if (end <= head.length && head.subarray(sig.at, end).equals(sig.magic))
      return { kind: 'other', what: sig.what, sector: Math.floor(sig.at / 512) };
  }
  if (hasPartitionedMbr(head)) return { kind: 'other', what: 'an MBR partition table (0x55AA, a non-empty entry)', sector: 0 };
  return undefined;
}

/** Boot signature 0x55AA and at least one partition entry with a type (an empty table is no format). */
function hasPartitionedMbr(head: Buffer): boolean {
  if (head.length < 512 || head[510] !== 0x55 || head[511] !== 0xaa) return false;
  for (let entry = 0; entry < 4; entry++) if (head[446 + entry * 16 + 4] !== 0) return true;
  return false;
}
