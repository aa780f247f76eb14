/**
 * LVM2's on-disk metadata, read-only: the label and PV header, metadata
 * areas and their circular text buffer, the text format, and logical
 * volumes mapped to byte ranges of their PVs and opened as devices.
 *
 * @module @dmtool/lvm
 */
export { LVM_ERROR_KINDS, LvmError } from './errors';
export type { LvmErrorReason } from './errors';
export { LVM_INITIAL_CRC, lvmCrc } from './crc';
export { decodeLabel, formatLvmUuid, LABEL_ID, LABEL_SCAN_SECTORS, LVM2_LABEL_TYPE } from './label';
export type { DiskArea, PvLabel } from './label';
export { decodeMdaHeader, MDA_HEADER_BYTES, MDA_MAGIC, MDA_VERSION, metadataText, RAW_LOCN_IGNORED, textPieces } from './mda-header';
export type { MdaHeader, RawLocation, TextPiece } from './mda-header';
export { tokenize } from './config-tokens';
export type { Token, TokenType } from './config-tokens';
export { parseConfig } from './config-parser';
export type { ConfigScalar, ConfigSection, ConfigValue } from './config-parser';
export { parseVgMetadata, vgFromSection } from './vg-metadata';
export type {
  LvMetadata,
  MirrorSegment,
  OtherSegment,
  PvMetadata,
  Segment,
  SnapshotSegment,
  StripedSegment,
  VgMetadata,
} from './vg-metadata';
export { extentByteOffset, mapLogicalVolume } from './lv-map';
export type { MappedSegment, PvRange } from './lv-map';
export { readPhysicalVolume, readPhysicalVolumeSync } from './read-pv';
export type { MetadataCopy, PhysicalVolume, ReadRequest } from './read-pv';
export { readDeviceSync } from './sync-read';
export { findVolumeGroup, groupVolumeGroups, requireAllPvs, scanVolumeGroups, scanVolumeGroupsSync } from './scan';
export type { ScanOptions, VolumeGroup } from './scan';
export {
  isSnapshotCarrier,
  mirrorPart,
  originSnapshots,
  snapshotCarrierOf,
  snapshotOfCow,
  snapshotSegmentOf,
  snapshotSegments,
  vgRelations,
} from './relations';
export type { VgRelations } from './relations';
export { mapLvDevice, openLogicalVolume } from './lv-device';
export type { LvDeviceOptions } from './lv-device';
export { displayName, humanSize, lvAttr, lvReport, lvVisible, percent } from './report';
export type { LvReportRow, SnapshotUsage } from './report';
export { readSnapshotUsages } from './snapshot-usage';
export {
  newestMetadataText,
  openCowVolume,
  openSnapshotParts,
  openVolume,
  openVolumeGroup,
  operandName,
  parseVolumeOperand,
} from './operand';
export { metadataAfterMerge } from './metadata-edit';
export { committedHeader, planTextWrite, storedText, writeVgMetadata } from './mda-write';
export type { TextWrite, WriteMetadataOptions } from './mda-write';
export type { OpenedVolumeGroup, OpenVolumeOptions, SnapshotParts, VolumeOperand } from './operand';
