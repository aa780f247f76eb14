import { BlockDevice, checkIo, DeviceError, errnoOf } from '@dmtool/devices';
import * as fs from 'fs';

/**
 * Fill `buf` from `byteOffset` of a device synchronously, through the
 * descriptor its native endpoint offers, applying the endpoint's hooks (fault
 * rules) as a native read would. For metadata reads only: a device without a
 * native endpoint (memory, volatile cache) is refused.
 */
export function readDeviceSync(device: BlockDevice, buf: Buffer, byteOffset: number): void {
  checkIo(device, 'read', buf, 0, buf.length, byteOffset);
  const endpoint = device.nativeEndpoint?.();
  if (endpoint === undefined) {
    throw new DeviceError(
      errnoOf('EOPNOTSUPP'),
      'read',
      device.path,
      byteOffset,
      buf.length,
      'a synchronous read needs a file or block device',
    );
  }
  for (const hook of endpoint.hooks) {
    const failure = hook.before('read', byteOffset, buf.length);
    if (failure) throw failure.error;
  }
  let done = 0;
  while (done < buf.length) {
    let n: number;
    try {
      n = fs.readSync(endpoint.fd, buf, done, buf.length - done, (endpoint.baseByteOffset ?? 0) + byteOffset + done);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
      throw new DeviceError(errnoOf(code), 'read', device.path, byteOffset + done, buf.length - done);
    }
    if (n === 0)
      throw new DeviceError(errnoOf('EIO'), 'read', device.path, byteOffset + done, buf.length - done, 'unexpected end of device');
    done += n;
  }
}
