/**
 * The client's half of the fixed newstyle handshake: NBD_OPT_STARTTLS
 * first when TLS is wanted, structured replies asked for, then NBD_OPT_GO
 * with the block-size information, or NBD_OPT_EXPORT_NAME when the server
 * does not know NBD_OPT_GO. With structured replies, `base:allocation` is
 * asked for with NBD_OPT_SET_META_CONTEXT so the export's holes can be
 * listed with NBD_CMD_BLOCK_STATUS.
 */
import {
  EXPORT_NAME_ZEROES_BYTES,
  GREETING_BYTES,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_POLICY,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  OPTION_REPLY_HEADER_BYTES,
  isErrorReply,
} from './constants';
import {
  BlockSizeInfo,
  decodeExportNameReply,
  decodeGreeting,
  decodeInfo,
  decodeMetaContextReplyData,
  decodeOptionReplyHeader,
  encodeClientFlags,
  encodeInfoRequest,
  encodeMetaContextRequest,
  encodeOption,
  ProtocolError,
} from './codec';
import type { SocketReader } from './socket-reader';

/** What the client learnt about the export it went on to use. */
export interface ClientExport {
  sizeBytes: number;
  transmissionFlags: number;
  structuredReplies: boolean;
  /** Present when the server sent NBD_INFO_BLOCK_SIZE. */
  blockSizes?: BlockSizeInfo;
  /** The context id of `base:allocation` when the server selected it. */
  allocationContextId?: number;
}

export const BASE_ALLOCATION = 'base:allocation';

/** Why the server refused the export: `code` is the errno the device error carries. */
export class ExportRefused extends Error {
  constructor(
    readonly code: 'ENOENT' | 'EACCES' | 'EPROTO',
    message: string,
  ) {
    super(message);
    this.name = 'ExportRefused';
  }
}

export interface ClientNegotiationIo {
  /** Read anew for every reply: a TLS upgrade replaces it. */
  reader: SocketReader;
  send(bytes: Buffer): void;
  timeoutMs: number;
  /**
   * Present when TLS is required: called once the server acknowledged
   * NBD_OPT_STARTTLS, it runs the handshake and points `reader` and `send`
   * at the TLS socket. Rejects when the handshake fails or the server is
   * not trusted.
   */
  startTls?(): Promise<void>;
}

/** Option replies with data longer than this are a broken server. */
const MAX_OPTION_REPLY_BYTES = 64 << 10;

async function readOptionReply(io: ClientNegotiationIo, option: number): Promise<{ replyType: number; data: Buffer }> {
  const h = decodeOptionReplyHeader(await io.reader.read(OPTION_REPLY_HEADER_BYTES, io.timeoutMs));
  if (h.option !== option) throw new ProtocolError('invalid', `reply to option ${h.option} while option ${option} was asked`);
  if (h.dataBytes > MAX_OPTION_REPLY_BYTES) throw new ProtocolError('too-big', `option reply of ${h.dataBytes} bytes`);
  const data = h.dataBytes ? await io.reader.read(h.dataBytes, io.timeoutMs) : Buffer.alloc(0);
  return { replyType: h.replyType, data };
}

function refusal(replyType: number, data: Buffer, exportName: string): ExportRefused {
  const said = data.length ? `: ${data.toString('utf8').replace(/[\r\n]+/g, ' ')}` : '';
  if (replyType === NBD_REP_ERR_UNKNOWN) return new ExportRefused('ENOENT', `the server has no export named "${exportName}"${said}`);
  if (replyType === NBD_REP_ERR_TLS_REQD) {
    return new ExportRefused(
      'EACCES',
      'the server requires TLS (NBD_REP_ERR_TLS_REQD): use nbds:// or nbds+unix:// with tls-certificates=DIR',
    );
  }
  if (replyType === NBD_REP_ERR_POLICY) return new ExportRefused('EACCES', `the server refused the export by policy${said}`);
  return new ExportRefused('EPROTO', `the server refused the export (reply 0x${replyType.toString(16)})${said}`);
}

/** Run the handshake on a connected socket; afterwards the connection is in transmission. */
export async function negotiateClient(io: ClientNegotiationIo, exportName: string): Promise<ClientExport> {
  const { handshakeFlags } = decodeGreeting(await io.reader.read(GREETING_BYTES, io.timeoutMs));
  if (!(handshakeFlags & NBD_FLAG_FIXED_NEWSTYLE)) throw new ExportRefused('EPROTO', 'the server does not speak fixed newstyle NBD');
  const noZeroes = (handshakeFlags & NBD_FLAG_NO_ZEROES) !== 0;
  io.send(encodeClientFlags(NBD_FLAG_C_FIXED_NEWSTYLE | (noZeroes ? NBD_FLAG_C_NO_ZEROES : 0)));
  if (io.startTls) await startTls(io, io.startTls);

  io.send(encodeOption(NBD_OPT_STRUCTURED_REPLY));
  const sr = await readOptionReply(io, NBD_OPT_STRUCTURED_REPLY);
  // A server requiring TLS refuses every option: say so now rather than after a GO.
  if (sr.replyType === NBD_REP_ERR_TLS_REQD) throw refusal(sr.replyType, sr.data, exportName);
  const structuredReplies = sr.replyType === NBD_REP_ACK;
  if (!structuredReplies && !isErrorReply(sr.replyType))
    throw new ProtocolError('invalid', `reply 0x${sr.replyType.toString(16)} to NBD_OPT_STRUCTURED_REPLY`);
  const allocationContextId = structuredReplies ? await selectBaseAllocation(io, exportName) : undefined;

  io.send(encodeOption(NBD_OPT_GO, encodeInfoRequest({ name: exportName, infoTypes: [NBD_INFO_BLOCK_SIZE] })));
  let sizeBytes: number | undefined;
  let transmissionFlags = 0;
  let blockSizes: BlockSizeInfo | undefined;
  for (let replies = 0; replies < 64; replies++) {
    const r = await readOptionReply(io, NBD_OPT_GO);
    if (r.replyType === NBD_REP_INFO) {
      const info = decodeInfo(r.data);
      if (info.type === NBD_INFO_EXPORT && 'sizeBytes' in info) ({ sizeBytes, transmissionFlags } = info);
      else if (info.type === NBD_INFO_BLOCK_SIZE && 'minimumBytes' in info) blockSizes = info;
      continue;
    }
    if (r.replyType === NBD_REP_ACK) {
      if (sizeBytes === undefined) throw new ProtocolError('invalid', 'NBD_OPT_GO acknowledged without NBD_INFO_EXPORT');
      return { sizeBytes, transmissionFlags, structuredReplies, blockSizes: validBlockSizes(blockSizes), allocationContextId };
    }
    if (r.replyType === NBD_REP_ERR_UNSUP)
      return { ...(await exportNameFallback(io, exportName, noZeroes, structuredReplies)), allocationContextId };
    if (isErrorReply(r.replyType)) throw refusal(r.replyType, r.data, exportName);
    throw new ProtocolError('invalid', `reply 0x${r.replyType.toString(16)} to NBD_OPT_GO`);
  }
  throw new ProtocolError('too-big', 'more than 64 replies to NBD_OPT_GO');
}

/**
 * NBD_OPT_SET_META_CONTEXT for `base:allocation`: its context id when the
 * server selected it; undefined when it refused the option or selected
 * nothing (the export then cannot list its holes, which is no failure).
 */
async function selectBaseAllocation(io: ClientNegotiationIo, exportName: string): Promise<number | undefined> {
  io.send(encodeOption(NBD_OPT_SET_META_CONTEXT, encodeMetaContextRequest({ exportName, queries: [BASE_ALLOCATION] })));
  let contextId: number | undefined;
  for (let replies = 0; replies < 64; replies++) {
    const r = await readOptionReply(io, NBD_OPT_SET_META_CONTEXT);
    if (r.replyType === NBD_REP_META_CONTEXT) {
      const ctx = decodeMetaContextReplyData(r.data);
      if (ctx.name === BASE_ALLOCATION) contextId = ctx.contextId;
      continue;
    }
    if (r.replyType === NBD_REP_ACK) return contextId;
    if (isErrorReply(r.replyType)) return undefined;
    throw new ProtocolError('invalid', `reply 0x${r.replyType.toString(16)} to NBD_OPT_SET_META_CONTEXT`);
  }
  throw new ProtocolError('too-big', 'more than 64 replies to NBD_OPT_SET_META_CONTEXT');
}

const STARTTLS_REFUSALS: Record<number, string> = {
  [NBD_REP_ERR_UNSUP]: 'NBD_REP_ERR_UNSUP',
  [NBD_REP_ERR_POLICY]: 'NBD_REP_ERR_POLICY',
  [NBD_REP_ERR_INVALID]: 'NBD_REP_ERR_INVALID',
};

/** NBD_OPT_STARTTLS as the first option, so nothing else is said in plaintext; any answer but ACK ends the session. */
async function startTls(io: ClientNegotiationIo, upgrade: () => Promise<void>): Promise<void> {
  io.send(encodeOption(NBD_OPT_STARTTLS));
  const r = await readOptionReply(io, NBD_OPT_STARTTLS);
  if (r.replyType === NBD_REP_ACK) {
    if (r.data.length > 0) throw new ProtocolError('invalid', 'NBD_OPT_STARTTLS acknowledged with data');
    return upgrade();
  }
  if (!isErrorReply(r.replyType)) throw new ProtocolError('invalid', `reply 0x${r.replyType.toString(16)} to NBD_OPT_STARTTLS`);
  const name = STARTTLS_REFUSALS[r.replyType] ?? `reply 0x${r.replyType.toString(16)}`;
  throw new ExportRefused('EACCES', `the server does not offer TLS (${name} to NBD_OPT_STARTTLS)`);
}

/** A server without NBD_OPT_GO: the old way, which also ends negotiation (and closes on an unknown name). */
async function exportNameFallback(
  io: ClientNegotiationIo,
  exportName: string,
  noZeroes: boolean,
  structuredReplies: boolean,
): Promise<ClientExport> {
  io.send(encodeOption(NBD_OPT_EXPORT_NAME, Buffer.from(exportName, 'utf8')));
  const reply = await io.reader.read(10 + (noZeroes ? 0 : EXPORT_NAME_ZEROES_BYTES), io.timeoutMs);
  return { ...decodeExportNameReply(reply), structuredReplies };
}

/** The protocol's rules for the three sizes; a server breaking them is ignored rather than trusted. */
function validBlockSizes(b: BlockSizeInfo | undefined): BlockSizeInfo | undefined {
  if (!b) return undefined;
  const pow2 = (n: number) => n > 0 && (n & (n - 1)) === 0;
  if (!pow2(b.minimumBytes) || b.minimumBytes > 65536 || !pow2(b.preferredBytes) || b.preferredBytes < b.minimumBytes) return undefined;
  if (b.maximumBytes < b.minimumBytes || (b.maximumBytes !== 0xffffffff && b.maximumBytes % b.minimumBytes !== 0)) return undefined;
  return b;
}
