import { tokenize, Token } from './config-tokens';
import { LvmError } from './errors';
import { snapshotCarrierOf } from './relations';
import { parseVgMetadata, SnapshotSegment, VgMetadata } from './vg-metadata';

/** Where a setting or section lies in the text: its first and last line (1-based, inclusive). */
interface LineSpan {
  first: number;
  last: number;
}

/**
 * The VG metadata lvm2 records once a snapshot has been merged into its
 * origin (tools/lvconvert_poll.c `lvconvert_merge_finish`, which removes
 * the COW LV, and with it the internal `snapshotN` LV): both LV sections
 * removed, `seqno` one higher, everything else as it was. The text is
 * edited where lvm2 wrote it (every section and setting on lines of its
 * own, as lvm2's writer lays them out), then parsed and checked again.
 */
export function metadataAfterMerge(text: string, vg: VgMetadata, segment: SnapshotSegment): { text: string; metadata: VgMetadata } {
  const carrier = snapshotCarrierOf(vg, segment.cow);
  if (carrier === undefined) throw new LvmError('bad-metadata', `VG ${vg.name}: no LV carries the snapshot of ${segment.cow}`);
  const tokens = tokenize(text);
  const spans = lvSpans(tokens, vg.name);
  const seqno = seqnoLine(tokens, vg.name);
  const lines = text.split('\n');
  const drop = new Set<number>();
  for (const name of [carrier, segment.cow]) {
    const at = spans.get(name);
    if (!at) throw new LvmError('bad-metadata', `VG ${vg.name}: LV ${name} not found in the metadata text`);
    const span = ownLines(tokens, at.first, at.last, `LV ${name}`);
    for (let l = span.first; l <= span.last; l++) drop.add(l);
  }
  const seqLine = lines[seqno - 1];
  const m = /^(\s*seqno\s*=\s*)(\d+)(\s*)$/.exec(seqLine);
  if (!m || Number(m[2]) !== vg.seqno) throw new LvmError('bad-metadata', `VG ${vg.name}: seqno is not on a line of its own`);
  lines[seqno - 1] = `${m[1]}${vg.seqno + 1}${m[3]}`;
  const edited = lines.filter((_, i) => !drop.has(i + 1)).join('\n');
  const metadata = parseVgMetadata(edited, `VG ${vg.name} metadata after the merge`);
  const expected = vg.lvs.filter((l) => l.name !== carrier && l.name !== segment.cow).map((l) => l.name);
  if (metadata.seqno !== vg.seqno + 1 || metadata.lvs.map((l) => l.name).join('\n') !== expected.join('\n')) {
    throw new LvmError('bad-metadata', `VG ${vg.name}: the metadata text could not be edited as lvm2 lays it out`);
  }
  return { text: edited, metadata };
}

/** Tokens one per line where it matters: a section or setting sharing a line with another cannot be cut out by lines. */
function ownLines(tokens: Token[], first: number, last: number, what: string): LineSpan {
  const before = tokens[first - 1];
  const after = tokens[last + 1];
  if ((before && before.line === tokens[first].line) || (after && after.type !== 'end' && after.line === tokens[last].line)) {
    throw new LvmError('bad-metadata', `${what} shares a line with other settings; the text is not laid out as lvm2 writes it`);
  }
  return { first: tokens[first].line, last: tokens[last].line };
}

/** The index of the `}` closing the section whose `{` is at `open`. */
function closing(tokens: Token[], open: number): number {
  let depth = 0;
  for (let i = open; i < tokens.length; i++) {
    if (tokens[i].type === '{') depth++;
    else if (tokens[i].type === '}' && --depth === 0) return i;
  }
  throw new LvmError('syntax', 'a section is not closed');
}

/** The index of `{` opening section `name` directly inside the section opened at `open` (or at top level). */
function childSection(tokens: Token[], open: number, name: string): number | undefined {
  let depth = 0;
  for (let i = open + 1; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.type === '{') depth++;
    else if (t.type === '}') {
      if (depth-- === 0) return undefined;
    } else if (depth === 0 && t.type === 'word' && t.text === name && tokens[i + 1]?.type === '{') return i + 1;
  }
  return undefined;
}

function vgOpen(tokens: Token[], vgName: string): number {
  const open = childSection(tokens, -1, vgName);
  if (open === undefined) throw new LvmError('bad-metadata', `no section for VG ${vgName} in the metadata text`);
  return open;
}

/** Each LV section's first and last token (its name and its closing brace), by LV name. */
function lvSpans(tokens: Token[], vgName: string): Map<string, { first: number; last: number }> {
  const vg = vgOpen(tokens, vgName);
  const lvs = childSection(tokens, vg, 'logical_volumes');
  const spans = new Map<string, { first: number; last: number }>();
  if (lvs === undefined) return spans;
  const end = closing(tokens, lvs);
  for (let i = lvs + 1; i < end; i++) {
    if (tokens[i].type === 'word' && tokens[i + 1]?.type === '{') {
      const close = closing(tokens, i + 1);
      spans.set(tokens[i].text, { first: i, last: close });
      i = close;
    }
  }
  return spans;
}

/** The line of the VG's `seqno = N`. */
function seqnoLine(tokens: Token[], vgName: string): number {
  const vg = vgOpen(tokens, vgName);
  let depth = 0;
  for (let i = vg + 1; i < tokens.length; i++) {
    const t = tokens[i];
    if (t.type === '{') depth++;
    else if (t.type === '}') {
      if (depth-- === 0) break;
    } else if (depth === 0 && t.type === 'word' && t.text === 'seqno' && tokens[i + 1]?.type === '=') {
      return ownLines(tokens, i, i + 2, 'seqno').first;
    }
  }
  throw new LvmError('bad-metadata', `VG ${vgName}: seqno is missing`);
}
