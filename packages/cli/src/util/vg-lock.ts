import * as fs from 'fs';
import * as path from 'path';
import { BlockDevice, DmtoolError } from '@dmtool/devices';
import { lvmPackage } from './lazy-packages';
import { FileDevice } from '@dmtool/native';

/** lvm2's default `global/locking_dir`. */
export const LVM_LOCK_DIR = '/run/lock/lvm';

/**
 * Take the lock lvm2 takes to change VG `vg`: an exclusive flock on
 * `<lockDir>/V_<vg>` (lib/locking/file_locking.c), never waiting. While
 * lvm2 (or another dmtool) holds it the VG is refused; closing the
 * returned handle releases it.
 */
export function lockVolumeGroup(lockDir: string, vg: string): BlockDevice {
  const file = path.join(lockDir, `V_${vg}`);
  fs.mkdirSync(lockDir, { recursive: true, mode: 0o700 });
  fs.closeSync(fs.openSync(file, 'a', 0o600));
  try {
    return FileDevice.open(file, { write: true, lock: 'exclusive', exclusive: false });
  } catch (e) {
    if (e instanceof DmtoolError && e.kind === 'device-refused') {
      throw new (lvmPackage().LvmError)('vg-locked', `VG ${vg} is locked (${e.message}): lvm2 is changing it; try again once it is done`);
    }
    throw e;
  }
}
