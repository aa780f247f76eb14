/**
 * The file backend of `BlockDevice`: regular files and block devices through
 * one native binding (`O_DIRECT`, `O_EXCL`, flock), aligned buffers, and the
 * one-call native copies kcopyd uses.
 *
 * @module @dmtool/native
 */
export { allocBuffer, FileDevice, fileResolver, LockMode, OpenOptions } from './device';
export { nativeCopyOut, NativeCopyOutDone, nativeScatter, NativeScatterDone, nativeWrite, ScatterPiece } from './native-copy';
