import { binding } from './binding';
import { Device } from './device';
import { DeviceError, errnoOf } from './errors';
import { faults } from './faults';

export interface CopyOutTarget {
  device: Device;
  byteOffset: number;
}

export interface CopyOutResult {
  readError?: DeviceError;
  /** One entry per destination, undefined where the write succeeded. */
  writeErrors: (DeviceError | undefined)[];
}

/**
 * One kcopyd sub-job in a single native call: read `bytes` from the source
 * once into `buf`, then write them to every destination. A failed
 * destination does not stop the others. With `writeOnReadError` the
 * destinations are written even if the read failed (kcopyd's IGNORE_ERROR).
 */
export async function copyOut(
  src: Device,
  srcByteOffset: number,
  bytes: number,
  buf: Buffer,
  dests: readonly CopyOutTarget[],
  writeOnReadError = false,
): Promise<CopyOutResult> {
  if (dests.length === 0) throw new RangeError('copyOut needs at least one destination');
  src.checkIo('read', buf, 0, bytes, srcByteOffset);
  for (const d of dests) d.device.checkIo('write', buf, 0, bytes, d.byteOffset);
  if (faults.active) return copyOutStepwise(src, srcByteOffset, bytes, buf, dests, writeOnReadError);

  const [readErrno, readBytes, writeErrnos] = await new Promise<[number, number, number[]]>((resolve) =>
    binding.copyOut(
      src.nativeFd,
      srcByteOffset,
      bytes,
      buf,
      dests.map((d) => d.device.nativeFd),
      dests.map((d) => d.byteOffset),
      writeOnReadError,
      (r, n, w) => resolve([r, n, w]),
    ),
  );
  const result: CopyOutResult = {
    writeErrors: dests.map((d, i) =>
      writeErrnos[i] ? new DeviceError(writeErrnos[i], 'write', d.device.path, d.byteOffset, bytes) : undefined,
    ),
  };
  if (readErrno !== 0) {
    const detail = readBytes < bytes && readErrno === errnoOf('EIO') ? 'device ended before the range did' : undefined;
    result.readError = new DeviceError(readErrno, 'read', src.path, srcByteOffset, bytes, detail);
  }
  return result;
}

// Used while faults are injected: the same semantics, one operation at a
// time, so every read and write passes through the fault checks.
async function copyOutStepwise(
  src: Device,
  srcByteOffset: number,
  bytes: number,
  buf: Buffer,
  dests: readonly CopyOutTarget[],
  writeOnReadError: boolean,
): Promise<CopyOutResult> {
  const result: CopyOutResult = { writeErrors: dests.map(() => undefined) };
  try {
    await src.read(buf, 0, bytes, srcByteOffset);
  } catch (e) {
    if (!(e instanceof DeviceError)) throw e;
    result.readError = e;
    if (!writeOnReadError) return result;
  }
  for (let i = 0; i < dests.length; i++) {
    try {
      await dests[i].device.write(buf, 0, bytes, dests[i].byteOffset);
    } catch (e) {
      if (!(e instanceof DeviceError)) throw e;
      result.writeErrors[i] = e;
    }
  }
  return result;
}
