import { DeviceError, errnoOf } from '@dmtool/devices';
import { errorLines } from '../src/util/run-copy';

const EIO = errnoOf('EIO');

test('errors that differ only in their sector range are one line with their count', () => {
  const uri = 'nbd+unix:///?socket=/run/s.sock';
  const lines = errorLines([
    new DeviceError(EIO, 'write', uri, 0, 524288, 'device failed: connection lost'),
    new DeviceError(EIO, 'write', '/dev/loop1', 0, 524288),
    new DeviceError(EIO, 'write', uri, 524288, 524288, 'device failed: connection lost'),
    new DeviceError(EIO, 'write', uri, 1048576, 524288, 'device failed: connection lost'),
    new DeviceError(EIO, 'read', uri, 0, 4096, 'device failed: connection lost'),
  ]);
  expect(lines).toEqual([
    `EIO: write failed on ${uri} at sector 0 (+1024 sectors): device failed: connection lost (and 2 more requests alike)`,
    'EIO: write failed on /dev/loop1 at sector 0 (+1024 sectors): I/O error',
    `EIO: read failed on ${uri} at sector 0 (+8 sectors): device failed: connection lost`,
  ]);
});

test('no errors, no lines', () => {
  expect(errorLines([])).toEqual([]);
});
