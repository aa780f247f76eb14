export * from './constants';
export * from './codec';
export { ByteBudget } from './byte-budget';
export {
  DEFAULT_PREFERRED_BLOCK_BYTES,
  Export,
  ExportOptions,
  ExportTable,
  MAXIMUM_PAYLOAD_BYTES,
  MINIMUM_BLOCK_BYTES,
  transmissionFlags,
} from './export-table';
export { ALLOCATION_CONTEXT_ID, MAX_OPTION_DATA_BYTES, Negotiated, SelectedContext } from './negotiation';
export {
  allocationContext,
  DMTOOL_EXCEPTIONS,
  DMTOOL_STATE_EXCEPTION,
  exceptionsContext,
  extentsOfRanges,
  matchingContexts,
  MAX_EXTENTS_PER_REPLY,
  MetaContext,
} from './meta-contexts';
export { nbdErrorOf } from './errno';
export { ListenAddress, NbdServer, ServerOptions } from './server';
export { listenOnUnixSocket, removeUnixSocket } from './unix-socket';
export { ClientExport, ClientNegotiationIo, ExportRefused, negotiateClient } from './client-negotiation';
export { ConnectionClosed, SocketReader } from './socket-reader';
export { ClientConnection, ClientRequest, ReplyOutcome } from './client-connection';
export { NbdDevice, NbdDeviceOptions, nbdIdentity } from './nbd-device';
export { dataExtents, MAX_STATUS_REQUEST_BYTES, StatusQuery } from './block-status';
export {
  looksLikeNbdUri,
  NBD_DEFAULT_PORT,
  NbdAddress,
  NbdUri,
  NbdUriError,
  NbdUriErrorReason,
  NbdUriTls,
  parseNbdUri,
  redactUserinfo,
} from './uri';
export {
  certificatesDirFiles,
  ClientTlsCredentials,
  ClientTlsOptions,
  ServerTls,
  ServerTlsCredentials,
  ServerTlsFiles,
  TLS_MIN_VERSION,
  TlsError,
} from './tls';
