import { spawnSync } from 'child_process';
import * as path from 'path';

const root = path.join(__dirname, '..');
// The API reference must build without a warning: a public type that is not
// exported, or a broken {@link}, fails here rather than in `npm run docs`.
// Each package is converted against the others' built declarations, so this
// runs after `tsc -b` (as `npm test` does).
const DOCS_BUDGET_MS = 60_000;

describe('API reference (typedoc)', () => {
  it('converts every package entry point without warnings', () => {
    const started = Date.now();
    const r = spawnSync(
      process.execPath,
      [path.join(root, 'node_modules', 'typedoc', 'bin', 'typedoc'), '--emit', 'none', '--treatWarningsAsErrors'],
      {
        cwd: root,
        encoding: 'utf8',
        timeout: DOCS_BUDGET_MS * 2,
      },
    );
    const elapsedMs = Date.now() - started;
    expect(r.stdout + r.stderr).not.toMatch(/\[(warning|error)\]/);
    expect(r.status).toBe(0);
    expect(elapsedMs).toBeLessThan(DOCS_BUDGET_MS);
  });
});
