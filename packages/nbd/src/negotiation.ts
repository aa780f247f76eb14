/**
 * The handshake: greeting, client flags, then option haggling in fixed
 * newstyle until the client picks an export (NBD_OPT_GO or
 * NBD_OPT_EXPORT_NAME), aborts, or breaks a rule that leaves no way to
 * answer (then the connection is closed).
 */
import {
  CLIENT_FLAGS_BYTES,
  NBD_FLAG_C_FIXED_NEWSTYLE,
  NBD_FLAG_C_NO_ZEROES,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_OPT_ABORT,
  NBD_OPT_EXPORT_NAME,
  NBD_OPT_GO,
  NBD_OPT_INFO,
  NBD_OPT_LIST,
  NBD_OPT_LIST_META_CONTEXT,
  NBD_OPT_SET_META_CONTEXT,
  NBD_OPT_STARTTLS,
  NBD_OPT_STRUCTURED_REPLY,
  NBD_REP_ACK,
  NBD_REP_ERR_INVALID,
  NBD_REP_ERR_SHUTDOWN,
  NBD_REP_ERR_TLS_REQD,
  NBD_REP_ERR_TOO_BIG,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_ERR_UNSUP,
  NBD_REP_INFO,
  NBD_REP_META_CONTEXT,
  NBD_REP_SERVER,
  OPTION_HEADER_BYTES,
} from './constants';
import {
  decodeClientFlags,
  decodeInfoRequest,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeString,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfo,
  encodeMetaContextReplyData,
  encodeOptionReply,
  encodeServerReplyData,
  ProtocolError,
} from './codec';
import { Export, ExportTable, transmissionFlags } from './export-table';
import { matchingContexts, MetaContext } from './meta-contexts';
import type { SocketReader } from './socket-reader';

/** Largest option data read; longer options are skipped and refused with NBD_REP_ERR_TOO_BIG. */
export const MAX_OPTION_DATA_BYTES = 64 << 10;
const MAX_META_CONTEXT_QUERIES = 64;
/** The id base:allocation gets when selected: a context's id is its index in the export's list plus one. */
export const ALLOCATION_CONTEXT_ID = 1;

/** A metadata context selected for the session, with the id its block status replies carry. */
export interface SelectedContext {
  id: number;
  context: MetaContext;
}

export interface Negotiated {
  export: Export;
  structuredReplies: boolean;
  /** The contexts the client selected for the export it went on to use (none: NBD_CMD_BLOCK_STATUS is refused). */
  metaContexts: SelectedContext[];
}

export interface NegotiationIo {
  /** Read anew for every option: a TLS upgrade replaces it. */
  readonly reader: SocketReader;
  send(bytes: Buffer): void;
  /** Resolves once the replies sent so far are few enough to read another option. */
  drained(): Promise<void>;
  shuttingDown(): boolean;
  /** Present when the server offers TLS (NBD_OPT_STARTTLS); without it STARTTLS is unsupported. */
  tls?: {
    /** FORCEDTLS: every option but NBD_OPT_STARTTLS and NBD_OPT_ABORT is refused before TLS. */
    required: boolean;
    /** The TLS handshake after the ACK was sent; afterwards `reader` and `send` go through TLS. Rejects if it fails. */
    upgrade(): Promise<void>;
  };
}

/** Why negotiation ended without an export: the caller closes the connection either way. */
export type NegotiationEnd = { aborted: true } | { refused: string };

interface State {
  tlsActive: boolean;
  structuredReplies: boolean;
  noZeroes: boolean;
  /** What the last NBD_OPT_SET_META_CONTEXT selected, and for which export. */
  selected?: { export: Export; contexts: SelectedContext[] };
}

const KNOWN_CLIENT_FLAGS = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

export async function negotiate(io: NegotiationIo, table: ExportTable): Promise<Negotiated | NegotiationEnd> {
  io.send(encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES));
  const clientFlags = decodeClientFlags(await io.reader.read(CLIENT_FLAGS_BYTES));
  if ((clientFlags & ~KNOWN_CLIENT_FLAGS) !== 0) return { refused: `unknown client flags 0x${clientFlags.toString(16)}` };
  // A client without NBD_FLAG_C_FIXED_NEWSTYLE only ever sends NBD_OPT_EXPORT_NAME, which is answered alike.
  const state: State = { tlsActive: false, structuredReplies: false, noZeroes: (clientFlags & NBD_FLAG_C_NO_ZEROES) !== 0 };
  for (;;) {
    await io.drained();
    const { option, dataBytes } = decodeOptionHeader(await io.reader.read(OPTION_HEADER_BYTES));
    const reply = (type: number, data?: Buffer): undefined => {
      io.send(encodeOptionReply(option, type, data));
    };
    const fail = (type: number, message: string): undefined => reply(type, Buffer.from(message, 'utf8'));
    if (dataBytes > MAX_OPTION_DATA_BYTES) {
      if (option === NBD_OPT_EXPORT_NAME) return { refused: `NBD_OPT_EXPORT_NAME of ${dataBytes} bytes` };
      await io.reader.skip(dataBytes);
      fail(NBD_REP_ERR_TOO_BIG, `option data of ${dataBytes} bytes (at most ${MAX_OPTION_DATA_BYTES})`);
      continue;
    }
    const data = dataBytes > 0 ? await io.reader.read(dataBytes) : Buffer.alloc(0);
    if (option === NBD_OPT_ABORT) {
      reply(NBD_REP_ACK);
      return { aborted: true };
    }
    if (io.shuttingDown()) {
      if (option === NBD_OPT_EXPORT_NAME) return { refused: 'server is shutting down' };
      fail(NBD_REP_ERR_SHUTDOWN, 'server is shutting down');
      continue;
    }
    if (option === NBD_OPT_STARTTLS && io.tls) {
      await startTls(io.tls, data, state, { send: io.send, reply, fail });
      continue;
    }
    if (io.tls?.required && !state.tlsActive) {
      // NBD_OPT_EXPORT_NAME has no error reply: the protocol says to end the session.
      if (option === NBD_OPT_EXPORT_NAME) return { refused: 'NBD_OPT_EXPORT_NAME before TLS, which is required' };
      fail(NBD_REP_ERR_TLS_REQD, 'TLS is required: send NBD_OPT_STARTTLS first');
      continue;
    }
    try {
      const done = handleOption(option, data, state, table, { send: io.send, reply, fail });
      if (done) return done;
    } catch (e) {
      if (!(e instanceof ProtocolError)) throw e;
      if (option === NBD_OPT_EXPORT_NAME) return { refused: e.message };
      fail(e.reason === 'too-big' ? NBD_REP_ERR_TOO_BIG : NBD_REP_ERR_INVALID, e.message);
    }
  }
}

/**
 * NBD_OPT_STARTTLS: acknowledged once, then the handshake. What was agreed
 * before it (structured replies, a metadata context) is forgotten, so
 * nothing said in plaintext can shape the session.
 */
async function startTls(tls: NonNullable<NegotiationIo['tls']>, data: Buffer, state: State, out: Replies): Promise<void> {
  if (data.length > 0) return out.fail(NBD_REP_ERR_INVALID, 'NBD_OPT_STARTTLS takes no data');
  if (state.tlsActive) return out.fail(NBD_REP_ERR_INVALID, 'TLS is already active');
  out.reply(NBD_REP_ACK);
  await tls.upgrade();
  state.tlsActive = true;
  state.structuredReplies = false;
  state.selected = undefined;
}

interface Replies {
  send(bytes: Buffer): void;
  reply(type: number, data?: Buffer): undefined;
  fail(type: number, message: string): undefined;
}

function handleOption(
  option: number,
  data: Buffer,
  state: State,
  table: ExportTable,
  out: Replies,
): Negotiated | NegotiationEnd | undefined {
  const { reply, fail } = out;
  switch (option) {
    case NBD_OPT_EXPORT_NAME: {
      const e = table.find(decodeString(data, 'export name'));
      if (!e) return { refused: 'unknown export' };
      // Answered with the export itself, not an option reply; a refusal can only close the connection.
      out.send(encodeExportNameReply(e.device.sizeBytes, transmissionFlags(e, state.structuredReplies), state.noZeroes));
      return enter(e, state);
    }
    case NBD_OPT_LIST:
      if (data.length > 0) return fail(NBD_REP_ERR_INVALID, 'NBD_OPT_LIST takes no data');
      for (const e of table.list()) reply(NBD_REP_SERVER, encodeServerReplyData(e.name, e.description));
      return reply(NBD_REP_ACK);
    case NBD_OPT_INFO:
    case NBD_OPT_GO: {
      const req = decodeInfoRequest(data);
      const e = table.find(req.name);
      if (!e) return fail(NBD_REP_ERR_UNKNOWN, `no export named ${JSON.stringify(req.name)}`);
      reply(
        NBD_REP_INFO,
        encodeInfo({
          type: NBD_INFO_EXPORT,
          sizeBytes: e.device.sizeBytes,
          transmissionFlags: transmissionFlags(e, state.structuredReplies),
        }),
      );
      if (req.infoTypes.includes(NBD_INFO_NAME)) reply(NBD_REP_INFO, encodeInfo({ type: NBD_INFO_NAME, name: e.name }));
      if (req.infoTypes.includes(NBD_INFO_DESCRIPTION) && e.description) {
        reply(NBD_REP_INFO, encodeInfo({ type: NBD_INFO_DESCRIPTION, description: e.description }));
      }
      // Sent unasked too: the sizes are advice here, since unaligned requests are served when the device allows them.
      reply(NBD_REP_INFO, encodeInfo({ type: NBD_INFO_BLOCK_SIZE, ...e.blockSizes }));
      reply(NBD_REP_ACK);
      return option === NBD_OPT_GO ? enter(e, state) : undefined;
    }
    case NBD_OPT_STRUCTURED_REPLY:
      if (data.length > 0) return fail(NBD_REP_ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
      state.structuredReplies = true;
      return reply(NBD_REP_ACK);
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT: {
      if (option === NBD_OPT_SET_META_CONTEXT) state.selected = undefined;
      if (!state.structuredReplies) return fail(NBD_REP_ERR_INVALID, 'metadata contexts need structured replies first');
      const req = decodeMetaContextRequest(data, MAX_META_CONTEXT_QUERIES);
      const e = table.find(req.exportName);
      if (!e) return fail(NBD_REP_ERR_UNKNOWN, `no export named ${JSON.stringify(req.exportName)}`);
      const listing = option === NBD_OPT_LIST_META_CONTEXT;
      const contexts = matchingContexts(e.metaContexts, req.queries, listing).map((context) => ({
        id: e.metaContexts.indexOf(context) + 1,
        context,
      }));
      for (const c of contexts) reply(NBD_REP_META_CONTEXT, encodeMetaContextReplyData(listing ? 0 : c.id, c.context.name));
      if (!listing && contexts.length > 0) state.selected = { export: e, contexts };
      return reply(NBD_REP_ACK);
    }
    default:
      // NBD_OPT_STARTTLS lands here too when the server offers no TLS.
      return fail(NBD_REP_ERR_UNSUP, `option ${option} is not supported`);
  }
}

function enter(e: Export, state: State): Negotiated {
  return {
    export: e,
    structuredReplies: state.structuredReplies,
    metaContexts: state.selected?.export === e ? state.selected.contexts : [],
  };
}
