import { DeviceError, DeviceOp, DmtoolError, errnoOf } from '@dmtool/devices';

const REFUSED = [
  'ENOENT',
  'EBUSY',
  'EWOULDBLOCK',
  'EAGAIN',
  'EROFS',
  'EACCES',
  'EPERM',
  'ENODEV',
  'ENXIO',
  'ELOOP',
  'ENOTDIR',
  'ENAMETOOLONG',
];

describe('DeviceError kinds', () => {
  test.each(REFUSED)('an open failing with %s is a refused device', (code) => {
    const e = new DeviceError(errnoOf(code), 'open', '/dev/x');
    expect(e).toBeInstanceOf(DmtoolError);
    expect([e.kind, e.reason]).toEqual(['device-refused', 'open-failed']);
  });

  test.each(['EIO', 'EINVAL', 'ENOSPC', 'EMFILE'])('an open failing with %s is an I/O error', (code) => {
    expect(new DeviceError(errnoOf(code), 'open', '/dev/x').kind).toBe('io');
  });

  test.each<DeviceOp>(['read', 'write', 'flush', 'zero', 'discard', 'close'])('%s failing is an I/O error, whatever the errno', (op) => {
    for (const code of ['EIO', 'ENOENT', 'EBUSY', 'EROFS', 'EINVAL']) {
      const e = new DeviceError(errnoOf(code), op, '/dev/x', 4096, 1024);
      expect([e.kind, e.reason]).toEqual(['io', `${op}-failed`]);
    }
  });

  test('keeps its message, and says where in sectors', () => {
    const e = new DeviceError(errnoOf('EIO'), 'write', 'leg1.img', 8 * 512, 3 * 512);
    expect(e.message).toBe('EIO: write failed on leg1.img at sector 8 (+3 sectors): I/O error');
    expect({ code: e.code, path: e.path, sector: e.sector, sectors: e.sectors, byteOffset: e.byteOffset, bytes: e.bytes }).toEqual({
      code: 'EIO',
      path: 'leg1.img',
      sector: 8,
      sectors: 3,
      byteOffset: 4096,
      bytes: 1536,
    });
    const open = new DeviceError(errnoOf('ENOENT'), 'open', 'gone.img');
    expect(open.message).toBe('ENOENT: open failed on gone.img: no such file or device');
    expect(open.sector).toBeUndefined();
  });
});
