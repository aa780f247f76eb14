/**
 * device-mapper targets as BlockDevices, built from table lines:
 * `linear`, `snapshot-origin`, `snapshot` and `mirror`.
 *
 * @module @dmtool/targets
 */
export { BorrowedDevice } from './borrowed-device';
export { LinearDevice, LinearDeviceOptions } from './linear-device';
export { ConcatDevice, MappedDevice, MappedDeviceOptions, MappedPiece, StripedDevice } from './mapped-device';
export { MirrorDevice, MirrorDeviceOptions } from './mirror-device';
export { SectorDevice } from './sector-device';
export { SnapshotMergeDevice, SnapshotMergeOptions } from './snapshot-merge-device';
export { SuspendableDevice } from './suspendable-device';
export { SnapshotDevice, SnapshotOriginDevice, TargetDeviceOptions } from './snapshot-devices';
export { planTargets, TargetDevice, TargetPlan, TargetSet, TargetSetOptions, TargetSpec, TargetSpecError } from './target-set';
export {
  linearArgs,
  parseSectors,
  parseTableLine,
  snapshotArgs,
  SnapshotArgs,
  snapshotOriginArgs,
  TableError,
  TableLine,
} from './table-line';
