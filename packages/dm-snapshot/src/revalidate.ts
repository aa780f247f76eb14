import { BlockDevice, DeviceError } from '@dmtool/devices';
import { allocBuffer } from '@dmtool/native';
import { checkCow, CowCheckSummary, CowProblem } from './check';
import { SnapshotError } from './errors';
import { encodeHeader } from './header';

export interface RevalidateResult {
  summary: CowCheckSummary;
  /** Problems other than the invalid flag: any of them and nothing is written. */
  blocking: CowProblem[];
  /** The header was rewritten valid (false for a dry run, a valid COW or a blocked one). */
  written: boolean;
}

/**
 * Clear the invalid flag of a snapshot (docs/snapshot-check.md#revalidate),
 * only when a full check finds nothing else wrong: the header is rewritten
 * with valid = 1 and flushed; the table and data are not touched.
 */
export async function revalidateCow(
  cow: BlockDevice,
  opts: { originSectors?: number; origin?: BlockDevice; dryRun?: boolean } = {},
): Promise<RevalidateResult> {
  const blocking: CowProblem[] = [];
  const summary = await checkCow(cow, {
    originSectors: opts.originSectors,
    origin: opts.origin,
    onProblem: (p) => {
      if (p.kind !== 'invalidated') blocking.push(p);
    },
  });
  if (blocking.length > 0 || summary.valid !== false || opts.dryRun || summary.chunkSectors === undefined) {
    return { summary, blocking, written: false };
  }
  const buf = allocBuffer(summary.chunkSectors * 512);
  encodeHeader(buf, { valid: true, chunkSectors: summary.chunkSectors });
  try {
    await cow.write(buf, 0, buf.length, 0);
    await cow.flush();
  } catch (e) {
    if (!(e instanceof DeviceError)) throw e;
    throw new SnapshotError(e.code, 'metadata-io', `rewriting the header failed: ${e.message}`, {
      path: cow.path,
      sector: 0,
      sectors: summary.chunkSectors,
    });
  }
  return { summary, blocking, written: true };
}
