import * as fs from 'fs';
import * as path from 'path';

/** node-gyp-build's resolver: a source build in build/Release (or build/Debug), else the best prebuild for this platform. */
interface NodeGypBuild {
  resolve(packageDir: string): string;
}

const REBUILD_HINT = 'build it from source with `npm rebuild @dmtool/native --build-from-source` (needs python3, make and g++)';

/** The addon could not be found or loaded; `code` is `DMTOOL_NATIVE_ADDON`. */
class NativeAddonError extends Error {
  readonly code = 'DMTOOL_NATIVE_ADDON';

  constructor(message: string, cause: unknown) {
    super(message, { cause });
    this.name = 'NativeAddonError';
  }
}

/** The C library as node-gyp-build tells it (it tags prebuilds glibc or musl). */
function libc(): string {
  return process.env.LIBC ?? (fs.existsSync('/etc/alpine-release') ? 'musl' : 'glibc');
}

/**
 * Loads the addon of the package in `packageDir`. A source build wins over a
 * prebuild, so `--build-from-source` (or a developer's `node-gyp rebuild`) is
 * what runs once it exists; without one, `prebuilds/<platform>-<arch>/` is
 * used, as the install script (`node-gyp-build`) decided when it found a
 * prebuild that loads. Either failure is one error (code `DMTOOL_NATIVE_ADDON`)
 * saying what was looked for and how to build.
 */
export function loadAddon(packageDir: string): unknown {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- node-gyp-build ships no types
  const nodeGypBuild = require('node-gyp-build') as NodeGypBuild;
  const platform = `${process.platform}-${process.arch}`;
  let file: string;
  try {
    file = nodeGypBuild.resolve(packageDir);
  } catch (err) {
    const release = path.join(packageDir, 'build', 'Release');
    const prebuilds = path.join(packageDir, 'prebuilds');
    throw new NativeAddonError(
      `@dmtool/native: no native addon: no source build in ${release} and no prebuild in ${prebuilds} for ${platform} (${libc()}); ${REBUILD_HINT}`,
      err,
    );
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports -- a native addon is loaded by path at run time
    return require(file);
  } catch (err) {
    const reason = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new NativeAddonError(`@dmtool/native: cannot load ${file}: ${reason}; ${REBUILD_HINT}`, err);
  }
}
