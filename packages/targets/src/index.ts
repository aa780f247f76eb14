export { LinearDevice, LinearDeviceOptions } from './linear-device';
export { linearArgs, parseSectors, parseTableLine, TableError, TableLine } from './table-line';
