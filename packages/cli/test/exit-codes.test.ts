import { DeviceError, errnoOf } from '@dmtool/devices';
import { MirrorError } from '@dmtool/dm-mirror';
import { SnapshotError } from '@dmtool/dm-snapshot';
import { AbortError, KcopydError } from '@dmtool/kcopyd';
import { z } from 'zod';
import { CliError, exitCodeFor, kindOf } from '../src/util/errors';
import { EXIT_CODE_OF_KIND } from '../src/util/exit-codes';

describe('kind to exit code', () => {
  test('one table: io 1, bad input 2, device refused 3, interrupted 130', () => {
    expect(EXIT_CODE_OF_KIND).toEqual({ io: 1, 'bad-input': 2, 'device-refused': 3, interrupted: 130 });
  });

  test.each<[string, unknown, string, number]>([
    ['a refused open', new DeviceError(errnoOf('EBUSY'), 'open', '/dev/loop0'), 'device-refused', 3],
    ['a lock held by another command', new DeviceError(errnoOf('EWOULDBLOCK'), 'open', 'origin.img'), 'device-refused', 3],
    ['an open failing otherwise', new DeviceError(errnoOf('EIO'), 'open', 'origin.img'), 'io', 1],
    ['a failed write', new DeviceError(errnoOf('EIO'), 'write', 'leg1.img', 0, 512), 'io', 1],
    ['a misaligned read', new DeviceError(errnoOf('EINVAL'), 'read', 'leg1.img', 0, 512), 'io', 1],
    ['a refused kcopyd job', new KcopydError('overlap', 'destinations 0 and 1 overlap on a.img'), 'bad-input', 2],
    ['a kcopyd client used after destroy', new KcopydError('destroyed', 'kcopyd client has been destroyed', 'ESHUTDOWN'), 'bad-input', 2],
    ['an aborted copy', new AbortError(16), 'interrupted', 130],
    ['a corrupt COW', new SnapshotError('EINVAL', 'bad-magic', 'bad magic'), 'bad-input', 2],
    ['a COW too small (ENOSPC)', new SnapshotError('ENOSPC', 'cow-too-small', 'too small'), 'bad-input', 2],
    ['a COW in use (EBUSY)', new SnapshotError('EBUSY', 'same-device', 'already backs a snapshot'), 'bad-input', 2],
    ['a merge of an invalid snapshot', new SnapshotError('EINVAL', 'merge-invalid', "snapshot is invalid: can't merge"), 'bad-input', 2],
    ['a read of an invalid snapshot', new SnapshotError('EIO', 'invalid', 'snapshot is invalid'), 'io', 1],
    ['a metadata write failure', new SnapshotError('EINVAL', 'metadata-io', 'metadata write failed'), 'io', 1],
    ['a stopped merge', new SnapshotError('ECANCELED', 'aborted', 'merge stopped'), 'interrupted', 130],
    ['a bad table line', new MirrorError('EINVAL', 'bad-table', 'mirror table: ...'), 'bad-input', 2],
    ['a corrupt dirty log', new MirrorError('EBADMSG', 'bad-magic', 'dirty log ...'), 'bad-input', 2],
    ['a region no leg can serve', new MirrorError('EIO', 'no-leg', 'no leg can serve ...'), 'io', 1],
    ['a stopped leg check', new MirrorError('ABORT_ERR', 'aborted', 'check aborted'), 'interrupted', 130],
    ['a bad option', new CliError('usage', '--offset: bad'), 'bad-input', 2],
    ['input that changed while read', new CliError('input-changed', '--input x grew while it was being read'), 'io', 1],
    ['an interrupted read', new CliError('interrupted', 'interrupted at sector 2048'), 'interrupted', 130],
    ['a schema failure', z.number().safeParse('x').error, 'bad-input', 2],
    ['anything else', new RangeError('bit 70 is outside 0..63'), 'io', 1],
    ['a thrown string', 'oops', 'io', 1],
  ])('%s', (_what, e, kind, exitCode) => {
    expect(kindOf(e)).toBe(kind);
    expect(exitCodeFor(e)).toBe(exitCode);
  });

  test('an error code alone decides nothing: a plain error with EINVAL is an I/O failure', () => {
    expect(exitCodeFor(Object.assign(new Error('x'), { code: 'EINVAL' }))).toBe(1);
    expect(exitCodeFor(Object.assign(new Error('x'), { code: 'ABORT_ERR' }))).toBe(1);
  });
});
