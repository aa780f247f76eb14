import * as fs from 'fs';
import * as path from 'path';
import { removeDir, tempDir } from '../../test/support/loop';
import { loadAddon } from '../lib/load-addon';

/**
 * The loader takes a source build first, then the prebuild for this platform,
 * and otherwise throws one error saying where it looked and how to build.
 * Each case lays out a package folder with copies of the real addon.
 */
const builtAddon = path.join(__dirname, '..', 'build', 'Release', 'dmtool_native.node');
const platform = `${process.platform}-${process.arch}`;
const NOT_ELF = 'not an ELF file\n'.repeat(16);
const HINT = 'build it from source with `npm rebuild @dmtool/native --build-from-source` (needs python3, make and g++)';

function thrownMessage(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect((err as { code?: string }).code).toBe('DMTOOL_NATIVE_ADDON');
    return (err as Error).message;
  }
  throw new Error('did not throw');
}

interface Addon {
  allocAligned(bytes: number): Buffer;
}

describe('loadAddon', () => {
  let dir: string;
  beforeEach(() => {
    dir = tempDir();
  });
  afterEach(() => removeDir(dir));

  function place(relative: string, content: Buffer | string): string {
    const file = path.join(dir, relative);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, content);
    return file;
  }

  it('loads the prebuild for this platform when there is no source build', () => {
    place(`prebuilds/${platform}/@dmtool+native.glibc.node`, fs.readFileSync(builtAddon));
    const addon = loadAddon(dir) as Addon;
    expect(addon.allocAligned(4096).length).toBe(4096);
  });

  it('prefers a source build over a prebuild', () => {
    place('build/Release/dmtool_native.node', fs.readFileSync(builtAddon));
    place(`prebuilds/${platform}/@dmtool+native.glibc.node`, NOT_ELF);
    const addon = loadAddon(dir) as Addon;
    expect(addon.allocAligned(8192).length).toBe(8192);
  });

  it('says where it looked and how to build when nothing fits this platform', () => {
    place('prebuilds/linux-riscv64/@dmtool+native.glibc.node', 'another platform');
    expect(thrownMessage(() => loadAddon(dir))).toBe(
      `@dmtool/native: no native addon: no source build in ${dir}/build/Release and no prebuild in ${dir}/prebuilds ` +
        `for ${platform} (glibc); ${HINT}`,
    );
  });

  it('names the file and the loader error when a prebuild does not load', () => {
    const file = place(`prebuilds/${platform}/@dmtool+native.glibc.node`, NOT_ELF);
    const message = thrownMessage(() => loadAddon(dir));
    expect(message.startsWith(`@dmtool/native: cannot load ${file}: `)).toBe(true);
    expect(message).toMatch(/invalid ELF header/);
    expect(message.endsWith(`; ${HINT}`)).toBe(true);
    expect(message).not.toContain('\n');
  });
});
