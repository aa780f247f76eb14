/** Edit distance (insertions, deletions, substitutions) between two words. */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}

/**
 * The known name a mistyped one most likely meant: the only name that
 * contains it (`merge`: snapshot-merge), else the closest within a third of
 * its length (at least 2 edits).
 */
export function closestName(typed: string, names: readonly string[]): string | undefined {
  const containing = names.filter((n) => n.includes(typed));
  if (containing.length === 1) return containing[0];
  const scored = names.map((n) => ({ n, d: editDistance(typed, n) })).sort((x, y) => x.d - y.d);
  return scored.length > 0 && scored[0].d <= Math.max(2, Math.floor(typed.length / 3)) ? scored[0].n : undefined;
}

/** "unknown command: snapshot-merg (did you mean snapshot-merge?)". */
export function unknownCommandMessage(typed: string, names: readonly string[]): string {
  const guess = closestName(typed, names);
  return `unknown command: ${typed}${guess ? ` (did you mean ${guess}?)` : ' (dmtool --help lists the commands)'}`;
}
