import { BlockDevice, checkIo, DeviceError, errnoOf, NativeEndpoint, NativeIoFailure, NativeIoHook } from '@dmtool/devices';
import { nativeCopyOut, nativeWrite } from '@dmtool/native';

export interface CopyOutTarget {
  device: BlockDevice;
  byteOffset: number;
}

export interface CopyOutResult {
  readError?: DeviceError;
  /** One entry per destination, undefined where the write succeeded. */
  writeErrors: (DeviceError | undefined)[];
}

/** Which path the last copies took; reported for tests and benchmarks. */
export const copyPathCounters = { native: 0, generic: 0 };

/**
 * One kcopyd sub-job: read `bytes` from the source once into `buf`, then
 * write them to every destination. A failed destination does not stop the
 * others. With `writeOnReadError` the destinations are written even if the
 * read failed (kcopyd's IGNORE_ERROR). When every device offers the native
 * capability the whole sub-job is one native call; otherwise each device's
 * own read and write are used.
 */
export async function copyOut(
  src: BlockDevice,
  srcByteOffset: number,
  bytes: number,
  buf: Buffer,
  dests: readonly CopyOutTarget[],
  writeOnReadError = false,
): Promise<CopyOutResult> {
  if (dests.length === 0) throw new RangeError('copyOut needs at least one destination');
  checkIo(src, 'read', buf, 0, bytes, srcByteOffset);
  for (const d of dests) checkIo(d.device, 'write', buf, 0, bytes, d.byteOffset);
  const srcEnd = src.nativeEndpoint?.();
  const destEnds = dests.map((d) => d.device.nativeEndpoint?.());
  if (srcEnd && destEnds.every((e): e is NativeEndpoint => e !== undefined)) {
    copyPathCounters.native++;
    return copyOutNative(src, srcEnd, srcByteOffset, bytes, buf, dests, destEnds, writeOnReadError);
  }
  copyPathCounters.generic++;
  return copyOutGeneric(src, srcByteOffset, bytes, buf, dests, writeOnReadError);
}

/** A device offset as an offset on the endpoint's descriptor. */
export function onDescriptor(end: NativeEndpoint, byteOffset: number): number {
  return byteOffset + (end.baseByteOffset ?? 0);
}

async function copyOutNative(
  src: BlockDevice,
  srcEnd: NativeEndpoint,
  srcByteOffset: number,
  bytes: number,
  buf: Buffer,
  dests: readonly CopyOutTarget[],
  destEnds: readonly NativeEndpoint[],
  writeOnReadError: boolean,
): Promise<CopyOutResult> {
  const result: CopyOutResult = { writeErrors: dests.map(() => undefined) };
  const readFailure = hookFailure(srcEnd.hooks, 'read', srcByteOffset, bytes);
  result.readError = readFailure?.error;
  if (result.readError && !writeOnReadError) return result;
  // Decorators may fail a destination: it is left out of the native call,
  // and a short write they model is written once the data is in the buffer.
  const live: number[] = [];
  const partial: { index: number; bytes: number }[] = [];
  dests.forEach((d, i) => {
    const f = hookFailure(destEnds[i].hooks, 'write', d.byteOffset, bytes);
    if (!f) live.push(i);
    else {
      result.writeErrors[i] = f.error;
      if (f.partialBytes > 0) partial.push({ index: i, bytes: f.partialBytes });
    }
  });

  let writeErrnos: number[] = [];
  if (result.readError) {
    // An injected read failure: write what the buffer holds, as kcopyd does.
    writeErrnos = await Promise.all(
      live.map((i) => nativeWrite(destEnds[i].fd, buf, 0, bytes, onDescriptor(destEnds[i], dests[i].byteOffset))),
    );
  } else if (live.length > 0 || partial.length > 0) {
    const done = await nativeCopyOut(
      srcEnd.fd,
      onDescriptor(srcEnd, srcByteOffset),
      bytes,
      buf,
      live.map((i) => destEnds[i].fd),
      live.map((i) => onDescriptor(destEnds[i], dests[i].byteOffset)),
      writeOnReadError,
    );
    if (done.readErrno !== 0) {
      const detail = done.readBytes < bytes && done.readErrno === errnoOf('EIO') ? 'device ended before the range did' : undefined;
      result.readError = new DeviceError(done.readErrno, 'read', src.path, srcByteOffset, bytes, detail);
    }
    writeErrnos = done.writeErrnos;
  }
  live.forEach((i, k) => {
    if (writeErrnos[k]) result.writeErrors[i] = new DeviceError(writeErrnos[k], 'write', dests[i].device.path, dests[i].byteOffset, bytes);
  });
  if (result.readError && !writeOnReadError) return result;
  for (const p of partial)
    await nativeWrite(destEnds[p.index].fd, buf, 0, p.bytes, onDescriptor(destEnds[p.index], dests[p.index].byteOffset));
  live.forEach((i, k) => {
    if (!writeErrnos[k]) for (const h of destEnds[i].hooks) h.afterWrite();
  });
  return result;
}

async function copyOutGeneric(
  src: BlockDevice,
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
  await Promise.all(
    dests.map(async (d, i) => {
      try {
        await d.device.write(buf, 0, bytes, d.byteOffset);
      } catch (e) {
        if (!(e instanceof DeviceError)) throw e;
        result.writeErrors[i] = e;
      }
    }),
  );
  return result;
}

/** The first failure the decorators' hooks inject (outermost first), if any. */
export function hookFailure(
  hooks: readonly NativeIoHook[],
  op: 'read' | 'write',
  byteOffset: number,
  bytes: number,
): NativeIoFailure | undefined {
  for (const h of hooks) {
    const f = h.before(op, byteOffset, bytes);
    if (f) return f;
  }
  return undefined;
}
