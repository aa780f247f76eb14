import { crashPoint } from '@dmtool/devices';
import type { SnapshotParts, VolumeOperand } from '@dmtool/lvm';
import { lvmPackage } from './lazy-packages';
import { CliError } from './errors';
import { openPvFile } from './open-device';

/** What the merge of an LVM snapshot leaves the VG metadata as, planned before the merge writes anything. */
export interface MergedMetadata {
  vg: string;
  snapshot: string;
  origin: string;
  text: string;
  seqno: number;
  /** Metadata areas that --update-metadata writes (0 without it). */
  metadataAreas: number;
}

/**
 * The metadata after the merge, and with `update`, a check that every
 * metadata area has room for it: a refusal comes before the merge.
 */
export async function planMergedMetadata(parts: SnapshotParts, update: boolean): Promise<MergedMetadata> {
  const meta = parts.vg.metadata;
  const after = lvmPackage().metadataAfterMerge(lvmPackage().newestMetadataText(parts), meta, parts.segment);
  const metadataAreas = update ? await lvmPackage().writeVgMetadata(parts.pvs, after.text, { vgUuid: meta.uuid, dryRun: true }) : 0;
  return {
    vg: meta.name,
    snapshot: parts.segment.cow,
    origin: parts.segment.origin,
    text: after.text,
    seqno: after.metadata.seqno,
    metadataAreas,
  };
}

/**
 * Write the planned metadata once the merge is durable (docs/lvm-format.md#writing).
 * A refusal now (an area changed since it was planned) is no longer bad
 * input with nothing written: the origin holds the merged data, so it is
 * reported as a failure with the way to finish.
 */
export async function commitMergedMetadata(parts: SnapshotParts, planned: MergedMetadata, rerun: string): Promise<number> {
  crashPoint('snapshot-merge:before-metadata');
  try {
    return await lvmPackage().writeVgMetadata(parts.pvs, planned.text, { vgUuid: parts.vg.metadata.uuid });
  } catch (e) {
    if (!(e instanceof lvmPackage().LvmError) || e.reason !== 'metadata-write') throw e;
    throw new CliError(
      'metadata-after-merge',
      `the merge of ${planned.vg}/${planned.snapshot} is done and durable, but its metadata was not written: ${e.message}; run ${rerun} again to write it`,
    );
  }
}

/**
 * A rerun after a crash between metadata writes: the newest metadata no
 * longer has the snapshot, older copies still do. The areas still holding
 * an older copy get the newest text, as the interrupted run would have
 * written. Undefined when there is nothing to finish.
 */
export async function finishMetadataUpdate(
  operand: VolumeOperand,
  dryRun: boolean,
): Promise<{ vg: string; origin: string; seqno: number; metadataAreas: number; text: string } | undefined> {
  const opened = await lvmPackage().openVolumeGroup(operand, { write: !dryRun, openPv: openPvFile({}) });
  try {
    const meta = opened.vg.metadata;
    if (meta.lvs.some((l) => l.name === operand.lv)) return undefined;
    const stale = opened.pvs.flatMap((pv) => pv.copies).filter((c) => c.vg.uuid === meta.uuid && c.vg.seqno < meta.seqno);
    const segment = stale
      .map((c) => (c.vg.seqno === meta.seqno - 1 ? lvmPackage().snapshotSegmentOf(c.vg, operand.lv) : undefined))
      .find((g) => g);
    if (!segment) return undefined;
    const text = lvmPackage().newestMetadataText(opened);
    const metadataAreas = await lvmPackage().writeVgMetadata(opened.pvs, text, { vgUuid: meta.uuid, skipSeqno: meta.seqno, dryRun });
    return { vg: meta.name, origin: segment.origin, seqno: meta.seqno, metadataAreas, text };
  } finally {
    opened.close();
  }
}
