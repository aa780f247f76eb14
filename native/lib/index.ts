export { allocBuffer, FileDevice, fileResolver, LockMode, OpenOptions } from './device';
export { nativeCopyOut, NativeCopyOutDone, nativeScatter, NativeScatterDone, nativeWrite, ScatterPiece } from './native-copy';
