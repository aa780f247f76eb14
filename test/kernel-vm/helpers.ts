import * as fs from 'fs';
import * as path from 'path';
import { FileDevice } from '@dmtool/native';
import { Origin, Snapshot } from '@dmtool/dm-snapshot';
import { dmtool, CliResult } from '../support/cli';
import { findVmTools, VmResult, VmTools } from './vm';

export { dmtool };
export type { CliResult };

const found = findVmTools();

/**
 * Kernel interoperability suites run when qemu, a kernel, busybox-static and
 * dmsetup are installed. Under CI=true they always run, and fail if any is missing.
 */
export const describeKernelVm: jest.Describe = found.tools || process.env.CI === 'true' ? describe : describe.skip;

/** Suites that also run lvm2 in the guest: skipped (outside CI) when lvm2 is not installed either. */
export const describeKernelVmLvm: jest.Describe = found.tools?.lvm || process.env.CI === 'true' ? describe : describe.skip;

export function vmTools(): VmTools {
  if (!found.tools) throw new Error(`kernel interoperability tests need: ${found.missing.join('; ')}`);
  return found.tools;
}

/** Run the CLI and insist on exit code 0; returns stdout. */
export function ok(args: string[], env?: Record<string, string>): string {
  const r = dmtool(args, { env });
  if (r.status !== 0) throw new Error(`dmtool ${args.join(' ')} exited ${r.status} (${r.signal ?? ''}): ${r.stderr}${r.stdout}`);
  return r.stdout;
}

/** `dmtool snapshot-status` as the kernel's INFO text (`<allocated>/<total> <metadata>`). */
export function snapStatus(cow: string): string {
  return ok(['snapshot-status', cow]).trim();
}

export function snapList(cow: string): { oldChunk: number; newChunk: number }[] {
  const j = JSON.parse(ok(['snapshot-list', cow, '--json']));
  const list = j.table;
  if (!Array.isArray(list)) throw new Error(`unexpected snapshot-list --json output: ${JSON.stringify(j).slice(0, 300)}`);
  return list.map((e: { oldChunk: number; newChunk: number }) => ({ oldChunk: e.oldChunk, newChunk: e.newChunk }));
}

/**
 * Fill a COW through dmtool's library: one origin write per listed chunk, in
 * order (so a non-consecutive order gives one-chunk merge batches), then
 * optional snapshot writes. Data of chunk c is patterned by `tag` and c.
 */
export async function fillCow(
  originFile: string,
  cowFile: string,
  chunkSectors: number,
  originChunks: number[],
  snapshotWrites: { sector: number; data: Buffer }[] = [],
  tag = 'NEW',
): Promise<void> {
  const originDev = FileDevice.open(originFile, { write: true });
  const cowDev = FileDevice.open(cowFile, { write: true });
  const origin = new Origin(originDev);
  try {
    const snap = await Snapshot.create(origin, cowDev, { chunkSectors });
    for (const c of originChunks) await origin.write(chunkData(tag, c, chunkSectors), c * chunkSectors);
    for (const w of snapshotWrites) await snap.write(w.data, w.sector);
    snap.close();
  } finally {
    await origin.close();
    originDev.close();
    cowDev.close();
  }
}

/** Content written to origin chunk `chunk`: every sector names the tag, chunk and sector. */
export function chunkData(tag: string, chunk: number, chunkSectors: number): Buffer {
  const buf = Buffer.alloc(chunkSectors * 512);
  for (let s = 0; s < chunkSectors; s++) {
    const label = `${tag} chunk=${chunk} sector=${chunk * chunkSectors + s}\n`;
    buf.write(label.padEnd(512, String.fromCharCode(0x20 + ((chunk + s) % 90))), s * 512, 'latin1');
  }
  return buf;
}

export function zeroFile(file: string, bytes: number): void {
  fs.writeFileSync(file, '');
  fs.truncateSync(file, bytes);
}

/** A work directory for one test; kept (with console.log) when KEEP_VM_DIRS is set. */
export function vmDir(parent: string, name: string): string {
  const d = path.join(parent, name);
  fs.mkdirSync(d, { recursive: true });
  return d;
}

/** Throw with the end of the console when the guest's scenario did not end with exit code 0. */
export function expectGuestOk(r: VmResult): void {
  if (r.rc !== 0) throw new Error(`guest scenario failed (rc ${r.rc}, timed out ${r.timedOut}):\n${r.console.slice(-4000)}`);
}

/** Shell: print `dev-<name>: <major:minor>` for each disk, as the kernel's status lines name devices. */
export function printDevNumbers(names: string[]): string {
  return names.map((n) => `echo "dev-${n}: $(cat /sys/block/$(basename $(readlink /dev/disk/${n}))/dev)"\n`).join('');
}

/** Shell: wait until a mirror reports every region in sync. */
export const WAIT_SYNCED = `
wait_synced() {
  dev=$1 i=0
  while :; do
    # <start> <len> mirror <#legs> <leg>... <in-sync>/<regions> ...
    set -- $(dmsetup status "$dev")
    shift $((4 + $4))
    [ "\${1%/*}" = "\${1#*/}" ] && return 0
    i=$((i + 1))
    [ $i -gt 1200 ] && return 1
    sleep 0.1
  done
}
`;

/** Shell: wait until a snapshot-merge device reports allocated == metadata (merge finished). */
export const WAIT_MERGED = `
wait_merged() {
  dev=$1 i=0
  while :; do
    set -- $(dmsetup status "$dev")
    case "$4" in */*) ;; *) return 1 ;; esac # Invalid, Merge failed
    [ "\${4%/*}" = "$5" ] && return 0
    i=$((i + 1))
    [ $i -gt 1200 ] && return 1
    sleep 0.1
  done
}
`;
