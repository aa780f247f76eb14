export { LinearDevice, LinearDeviceOptions } from './linear-device';
export { ConcatDevice, MappedDevice, MappedDeviceOptions, MappedPiece, StripedDevice } from './mapped-device';
export { linearArgs, parseSectors, parseTableLine, TableError, TableLine } from './table-line';
