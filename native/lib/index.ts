export { allocBuffer, FileDevice, fileResolver, OpenOptions } from './device';
export { nativeCopyOut, NativeCopyOutDone, nativeScatter, NativeScatterDone, nativeWrite, ScatterPiece } from './native-copy';
