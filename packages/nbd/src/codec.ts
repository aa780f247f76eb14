/**
 * Pure encoders and decoders for every NBD message this project sends or
 * receives, in both directions (the server uses one half, tests and the
 * raw test client the other). No sockets here: bytes in, values out.
 */
import {
  CLIENT_FLAGS_BYTES,
  EXPORT_NAME_ZEROES_BYTES,
  GREETING_BYTES,
  IHAVEOPT,
  MAX_STRING_BYTES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_DESCRIPTION,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_REP_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBD_REQUEST_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
  NBDMAGIC,
  OPTION_HEADER_BYTES,
  OPTION_REPLY_HEADER_BYTES,
  REQUEST_HEADER_BYTES,
  SIMPLE_REPLY_BYTES,
  STRUCTURED_REPLY_HEADER_BYTES,
} from './constants';

export type ProtocolErrorReason = 'bad-magic' | 'short' | 'invalid' | 'too-big';

/** Bytes that break the protocol's rules; `reason` decides the reply (or a closed connection). */
export class ProtocolError extends Error {
  constructor(
    readonly reason: ProtocolErrorReason,
    message: string,
  ) {
    super(message);
    this.name = 'ProtocolError';
  }
}

function need(buf: Buffer, bytes: number, what: string): void {
  if (buf.length < bytes) throw new ProtocolError('short', `${what}: ${buf.length} bytes, needs ${bytes}`);
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** A protocol string: valid UTF-8, no NUL, at most 4096 bytes. */
export function decodeString(bytes: Buffer, what: string): string {
  if (bytes.length > MAX_STRING_BYTES) throw new ProtocolError('too-big', `${what} is ${bytes.length} bytes (at most ${MAX_STRING_BYTES})`);
  let s: string;
  try {
    s = utf8.decode(bytes);
  } catch {
    throw new ProtocolError('invalid', `${what} is not UTF-8`);
  }
  if (s.includes('\0')) throw new ProtocolError('invalid', `${what} contains NUL`);
  return s;
}

function u64(n: number | bigint): bigint {
  return typeof n === 'bigint' ? n : BigInt(n);
}

/** Offsets past 2^53 lose precision but stay beyond any export's end, which is all a server checks. */
function readOffset(buf: Buffer, at: number): number {
  return Number(buf.readBigUInt64BE(at));
}

// ---- Handshake -----------------------------------------------------------

export function encodeGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.alloc(GREETING_BYTES);
  b.writeBigUInt64BE(NBDMAGIC, 0);
  b.writeBigUInt64BE(IHAVEOPT, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

export function decodeGreeting(buf: Buffer): { handshakeFlags: number } {
  need(buf, GREETING_BYTES, 'greeting');
  if (buf.readBigUInt64BE(0) !== NBDMAGIC || buf.readBigUInt64BE(8) !== IHAVEOPT) {
    throw new ProtocolError('bad-magic', 'greeting lacks NBDMAGIC/IHAVEOPT');
  }
  return { handshakeFlags: buf.readUInt16BE(16) };
}

export function encodeClientFlags(clientFlags: number): Buffer {
  const b = Buffer.alloc(CLIENT_FLAGS_BYTES);
  b.writeUInt32BE(clientFlags >>> 0, 0);
  return b;
}

export function decodeClientFlags(buf: Buffer): number {
  need(buf, CLIENT_FLAGS_BYTES, 'client flags');
  return buf.readUInt32BE(0);
}

// ---- Options -------------------------------------------------------------

export interface OptionHeader {
  option: number;
  dataBytes: number;
}

export function encodeOption(option: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(OPTION_HEADER_BYTES + data.length);
  b.writeBigUInt64BE(IHAVEOPT, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(data.length, 12);
  data.copy(b, OPTION_HEADER_BYTES);
  return b;
}

export function decodeOptionHeader(buf: Buffer): OptionHeader {
  need(buf, OPTION_HEADER_BYTES, 'option header');
  if (buf.readBigUInt64BE(0) !== IHAVEOPT) throw new ProtocolError('bad-magic', 'option request lacks IHAVEOPT');
  return { option: buf.readUInt32BE(8), dataBytes: buf.readUInt32BE(12) };
}

export interface OptionReplyHeader {
  option: number;
  replyType: number;
  dataBytes: number;
}

export function encodeOptionReply(option: number, replyType: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(OPTION_REPLY_HEADER_BYTES + data.length);
  b.writeBigUInt64BE(NBD_REP_MAGIC, 0);
  b.writeUInt32BE(option >>> 0, 8);
  b.writeUInt32BE(replyType >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, OPTION_REPLY_HEADER_BYTES);
  return b;
}

export function decodeOptionReplyHeader(buf: Buffer): OptionReplyHeader {
  need(buf, OPTION_REPLY_HEADER_BYTES, 'option reply header');
  if (buf.readBigUInt64BE(0) !== NBD_REP_MAGIC) throw new ProtocolError('bad-magic', 'option reply lacks the reply magic');
  return { option: buf.readUInt32BE(8), replyType: buf.readUInt32BE(12), dataBytes: buf.readUInt32BE(16) };
}

/** The reply that ends negotiation after NBD_OPT_EXPORT_NAME. */
export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : EXPORT_NAME_ZEROES_BYTES));
  b.writeBigUInt64BE(u64(sizeBytes), 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

export function decodeExportNameReply(buf: Buffer): { sizeBytes: number; transmissionFlags: number } {
  need(buf, 10, 'export name reply');
  return { sizeBytes: readOffset(buf, 0), transmissionFlags: buf.readUInt16BE(8) };
}

/** The data of NBD_OPT_INFO and NBD_OPT_GO. */
export interface InfoRequest {
  name: string;
  infoTypes: number[];
}

export function encodeInfoRequest(req: InfoRequest): Buffer {
  const name = Buffer.from(req.name, 'utf8');
  const b = Buffer.alloc(4 + name.length + 2 + 2 * req.infoTypes.length);
  b.writeUInt32BE(name.length, 0);
  name.copy(b, 4);
  b.writeUInt16BE(req.infoTypes.length, 4 + name.length);
  req.infoTypes.forEach((t, i) => b.writeUInt16BE(t, 4 + name.length + 2 + 2 * i));
  return b;
}

export function decodeInfoRequest(data: Buffer): InfoRequest {
  if (data.length < 6) throw new ProtocolError('invalid', `info request of ${data.length} bytes (at least 6)`);
  const nameBytes = data.readUInt32BE(0);
  if (nameBytes > data.length - 6)
    throw new ProtocolError('invalid', `export name of ${nameBytes} bytes overruns the ${data.length}-byte option`);
  const name = decodeString(data.subarray(4, 4 + nameBytes), 'export name');
  const count = data.readUInt16BE(4 + nameBytes);
  if (data.length !== 4 + nameBytes + 2 + 2 * count) {
    throw new ProtocolError('invalid', `${count} information requests do not fill the ${data.length}-byte option`);
  }
  const infoTypes: number[] = [];
  for (let i = 0; i < count; i++) infoTypes.push(data.readUInt16BE(4 + nameBytes + 2 + 2 * i));
  return { name, infoTypes };
}

/** The data of NBD_OPT_LIST_META_CONTEXT and NBD_OPT_SET_META_CONTEXT. */
export interface MetaContextRequest {
  exportName: string;
  queries: string[];
}

export function encodeMetaContextRequest(req: MetaContextRequest): Buffer {
  const parts: Buffer[] = [];
  const name = Buffer.from(req.exportName, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(name.length, 0);
  parts.push(head, name);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(req.queries.length, 0);
  parts.push(count);
  for (const q of req.queries) {
    const qb = Buffer.from(q, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(qb.length, 0);
    parts.push(len, qb);
  }
  return Buffer.concat(parts);
}

export function decodeMetaContextRequest(data: Buffer, maxQueries: number): MetaContextRequest {
  let at = 0;
  const take = (bytes: number, what: string): Buffer => {
    if (bytes > data.length - at) throw new ProtocolError('invalid', `${what} overruns the ${data.length}-byte option`);
    const b = data.subarray(at, at + bytes);
    at += bytes;
    return b;
  };
  const exportName = decodeString(take(take(4, 'name length').readUInt32BE(0), 'export name'), 'export name');
  const count = take(4, 'query count').readUInt32BE(0);
  if (count > maxQueries) throw new ProtocolError('too-big', `${count} queries (at most ${maxQueries})`);
  const queries: string[] = [];
  for (let i = 0; i < count; i++) queries.push(decodeString(take(take(4, 'query length').readUInt32BE(0), 'query'), 'query'));
  if (at !== data.length) throw new ProtocolError('invalid', `${data.length - at} bytes after the last query`);
  return { exportName, queries };
}

/** NBD_REP_SERVER: one export of NBD_OPT_LIST. */
export function encodeServerReplyData(name: string, description = ''): Buffer {
  const n = Buffer.from(name, 'utf8');
  const d = Buffer.from(description, 'utf8');
  const b = Buffer.alloc(4 + n.length + d.length);
  b.writeUInt32BE(n.length, 0);
  n.copy(b, 4);
  d.copy(b, 4 + n.length);
  return b;
}

export function decodeServerReplyData(data: Buffer): { name: string; description: string } {
  need(data, 4, 'server reply');
  const n = data.readUInt32BE(0);
  if (n > data.length - 4) throw new ProtocolError('invalid', 'export name overruns the server reply');
  return { name: decodeString(data.subarray(4, 4 + n), 'export name'), description: decodeString(data.subarray(4 + n), 'description') };
}

export interface BlockSizeInfo {
  minimumBytes: number;
  preferredBytes: number;
  maximumBytes: number;
}

export type Info =
  | { type: typeof NBD_INFO_EXPORT; sizeBytes: number; transmissionFlags: number }
  | { type: typeof NBD_INFO_NAME; name: string }
  | { type: typeof NBD_INFO_DESCRIPTION; description: string }
  | ({ type: typeof NBD_INFO_BLOCK_SIZE } & BlockSizeInfo)
  | { type: number; unknown: Buffer };

/** NBD_REP_INFO data. */
export function encodeInfo(info: Info): Buffer {
  if ('sizeBytes' in info) {
    const b = Buffer.alloc(12);
    b.writeUInt16BE(NBD_INFO_EXPORT, 0);
    b.writeBigUInt64BE(u64(info.sizeBytes), 2);
    b.writeUInt16BE(info.transmissionFlags, 10);
    return b;
  }
  if ('minimumBytes' in info) {
    const b = Buffer.alloc(14);
    b.writeUInt16BE(NBD_INFO_BLOCK_SIZE, 0);
    b.writeUInt32BE(info.minimumBytes, 2);
    b.writeUInt32BE(info.preferredBytes, 6);
    b.writeUInt32BE(info.maximumBytes, 10);
    return b;
  }
  const type = Buffer.alloc(2);
  type.writeUInt16BE(info.type, 0);
  if ('name' in info) return Buffer.concat([type, Buffer.from(info.name, 'utf8')]);
  if ('description' in info) return Buffer.concat([type, Buffer.from(info.description, 'utf8')]);
  return Buffer.concat([type, info.unknown]);
}

export function decodeInfo(data: Buffer): Info {
  need(data, 2, 'info reply');
  const type = data.readUInt16BE(0);
  switch (type) {
    case NBD_INFO_EXPORT:
      if (data.length !== 12) throw new ProtocolError('invalid', `NBD_INFO_EXPORT of ${data.length} bytes (12)`);
      return { type, sizeBytes: readOffset(data, 2), transmissionFlags: data.readUInt16BE(10) };
    case NBD_INFO_NAME:
      return { type, name: decodeString(data.subarray(2), 'name') };
    case NBD_INFO_DESCRIPTION:
      return { type, description: decodeString(data.subarray(2), 'description') };
    case NBD_INFO_BLOCK_SIZE:
      if (data.length !== 14) throw new ProtocolError('invalid', `NBD_INFO_BLOCK_SIZE of ${data.length} bytes (14)`);
      return { type, minimumBytes: data.readUInt32BE(2), preferredBytes: data.readUInt32BE(6), maximumBytes: data.readUInt32BE(10) };
    default:
      return { type, unknown: data.subarray(2) };
  }
}

/** NBD_REP_META_CONTEXT data. */
export function encodeMetaContextReplyData(contextId: number, name: string): Buffer {
  const n = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + n.length);
  b.writeUInt32BE(contextId >>> 0, 0);
  n.copy(b, 4);
  return b;
}

export function decodeMetaContextReplyData(data: Buffer): { contextId: number; name: string } {
  need(data, 4, 'meta context reply');
  return { contextId: data.readUInt32BE(0), name: decodeString(data.subarray(4), 'context name') };
}

// ---- Transmission --------------------------------------------------------

export interface RequestHeader {
  flags: number;
  type: number;
  /** Opaque to the server; echoed in every reply. */
  cookie: bigint;
  offsetBytes: number;
  lengthBytes: number;
}

export function encodeRequestHeader(h: RequestHeader): Buffer {
  const b = Buffer.alloc(REQUEST_HEADER_BYTES);
  b.writeUInt32BE(NBD_REQUEST_MAGIC, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  b.writeBigUInt64BE(h.cookie, 8);
  b.writeBigUInt64BE(u64(h.offsetBytes), 16);
  b.writeUInt32BE(h.lengthBytes >>> 0, 24);
  return b;
}

export function decodeRequestHeader(buf: Buffer): RequestHeader {
  need(buf, REQUEST_HEADER_BYTES, 'request header');
  if (buf.readUInt32BE(0) !== NBD_REQUEST_MAGIC) throw new ProtocolError('bad-magic', 'request lacks NBD_REQUEST_MAGIC');
  return {
    flags: buf.readUInt16BE(4),
    type: buf.readUInt16BE(6),
    cookie: buf.readBigUInt64BE(8),
    offsetBytes: readOffset(buf, 16),
    lengthBytes: buf.readUInt32BE(24),
  };
}

/** A simple reply's 16 bytes; a successful read's data follows it. */
export function encodeSimpleReply(error: number, cookie: bigint): Buffer {
  const b = Buffer.alloc(SIMPLE_REPLY_BYTES);
  b.writeUInt32BE(NBD_SIMPLE_REPLY_MAGIC, 0);
  b.writeUInt32BE(error >>> 0, 4);
  b.writeBigUInt64BE(cookie, 8);
  return b;
}

export function decodeSimpleReply(buf: Buffer): { error: number; cookie: bigint } {
  need(buf, SIMPLE_REPLY_BYTES, 'simple reply');
  if (buf.readUInt32BE(0) !== NBD_SIMPLE_REPLY_MAGIC) throw new ProtocolError('bad-magic', 'reply lacks NBD_SIMPLE_REPLY_MAGIC');
  return { error: buf.readUInt32BE(4), cookie: buf.readBigUInt64BE(8) };
}

/** Which kind of reply the 4 magic bytes start. */
export function replyKind(magic: Buffer): 'simple' | 'structured' {
  need(magic, 4, 'reply magic');
  const m = magic.readUInt32BE(0);
  if (m === NBD_SIMPLE_REPLY_MAGIC) return 'simple';
  if (m === NBD_STRUCTURED_REPLY_MAGIC) return 'structured';
  throw new ProtocolError('bad-magic', `unknown reply magic 0x${m.toString(16)}`);
}

export interface ChunkHeader {
  flags: number;
  type: number;
  cookie: bigint;
  lengthBytes: number;
}

export function encodeChunkHeader(h: ChunkHeader): Buffer {
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES);
  b.writeUInt32BE(NBD_STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  b.writeBigUInt64BE(h.cookie, 8);
  b.writeUInt32BE(h.lengthBytes >>> 0, 16);
  return b;
}

export function decodeChunkHeader(buf: Buffer): ChunkHeader {
  need(buf, STRUCTURED_REPLY_HEADER_BYTES, 'structured reply header');
  if (buf.readUInt32BE(0) !== NBD_STRUCTURED_REPLY_MAGIC) throw new ProtocolError('bad-magic', 'reply lacks NBD_STRUCTURED_REPLY_MAGIC');
  return { flags: buf.readUInt16BE(4), type: buf.readUInt16BE(6), cookie: buf.readBigUInt64BE(8), lengthBytes: buf.readUInt32BE(16) };
}

const doneFlag = (done: boolean) => (done ? NBD_REPLY_FLAG_DONE : 0);

/** Chunk header plus the 8-byte offset of NBD_REPLY_TYPE_OFFSET_DATA; `dataBytes` of data follow it. */
export function encodeOffsetDataHeader(cookie: bigint, offsetBytes: number, dataBytes: number, done: boolean): Buffer {
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + 8);
  encodeChunkHeader({ flags: doneFlag(done), type: NBD_REPLY_TYPE_OFFSET_DATA, cookie, lengthBytes: 8 + dataBytes }).copy(b, 0);
  b.writeBigUInt64BE(u64(offsetBytes), STRUCTURED_REPLY_HEADER_BYTES);
  return b;
}

export function encodeOffsetHole(cookie: bigint, offsetBytes: number, holeBytes: number, done: boolean): Buffer {
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + 12);
  encodeChunkHeader({ flags: doneFlag(done), type: NBD_REPLY_TYPE_OFFSET_HOLE, cookie, lengthBytes: 12 }).copy(b, 0);
  b.writeBigUInt64BE(u64(offsetBytes), STRUCTURED_REPLY_HEADER_BYTES);
  b.writeUInt32BE(holeBytes, STRUCTURED_REPLY_HEADER_BYTES + 8);
  return b;
}

export interface Extent {
  lengthBytes: number;
  /** Status flags of the context (NBD_STATE_HOLE, NBD_STATE_ZERO for base:allocation). */
  flags: number;
}

export function encodeBlockStatusChunk(cookie: bigint, contextId: number, extents: readonly Extent[], done: boolean): Buffer {
  const payload = 4 + 8 * extents.length;
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + payload);
  encodeChunkHeader({ flags: doneFlag(done), type: NBD_REPLY_TYPE_BLOCK_STATUS, cookie, lengthBytes: payload }).copy(b, 0);
  b.writeUInt32BE(contextId >>> 0, STRUCTURED_REPLY_HEADER_BYTES);
  extents.forEach((e, i) => {
    b.writeUInt32BE(e.lengthBytes, STRUCTURED_REPLY_HEADER_BYTES + 4 + 8 * i);
    b.writeUInt32BE(e.flags >>> 0, STRUCTURED_REPLY_HEADER_BYTES + 8 + 8 * i);
  });
  return b;
}

export function decodeBlockStatusPayload(payload: Buffer): { contextId: number; extents: Extent[] } {
  if (payload.length < 12 || (payload.length - 4) % 8 !== 0)
    throw new ProtocolError('invalid', `block status payload of ${payload.length} bytes`);
  const extents: Extent[] = [];
  for (let at = 4; at < payload.length; at += 8)
    extents.push({ lengthBytes: payload.readUInt32BE(at), flags: payload.readUInt32BE(at + 4) });
  return { contextId: payload.readUInt32BE(0), extents };
}

/** Error messages longer than the protocol's string limit are cut (on a UTF-8 boundary). */
function messageBytes(message: string): Buffer {
  let m = Buffer.from(message, 'utf8');
  if (m.length > MAX_STRING_BYTES)
    m = Buffer.from(
      m
        .subarray(0, MAX_STRING_BYTES)
        .toString('utf8')
        .replace(/\uFFFD$/, ''),
      'utf8',
    );
  return m;
}

export function encodeErrorChunk(cookie: bigint, error: number, message: string, done = true): Buffer {
  const m = messageBytes(message);
  const payload = 6 + m.length;
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + payload);
  encodeChunkHeader({ flags: doneFlag(done), type: NBD_REPLY_TYPE_ERROR, cookie, lengthBytes: payload }).copy(b, 0);
  b.writeUInt32BE(error >>> 0, STRUCTURED_REPLY_HEADER_BYTES);
  b.writeUInt16BE(m.length, STRUCTURED_REPLY_HEADER_BYTES + 4);
  m.copy(b, STRUCTURED_REPLY_HEADER_BYTES + 6);
  return b;
}

export function encodeErrorOffsetChunk(cookie: bigint, error: number, message: string, offsetBytes: number, done = true): Buffer {
  const m = messageBytes(message);
  const payload = 6 + m.length + 8;
  const b = Buffer.alloc(STRUCTURED_REPLY_HEADER_BYTES + payload);
  encodeChunkHeader({ flags: doneFlag(done), type: NBD_REPLY_TYPE_ERROR_OFFSET, cookie, lengthBytes: payload }).copy(b, 0);
  b.writeUInt32BE(error >>> 0, STRUCTURED_REPLY_HEADER_BYTES);
  b.writeUInt16BE(m.length, STRUCTURED_REPLY_HEADER_BYTES + 4);
  m.copy(b, STRUCTURED_REPLY_HEADER_BYTES + 6);
  b.writeBigUInt64BE(u64(offsetBytes), STRUCTURED_REPLY_HEADER_BYTES + 6 + m.length);
  return b;
}

/** The payload of NBD_REPLY_TYPE_ERROR and NBD_REPLY_TYPE_ERROR_OFFSET. */
export function decodeErrorPayload(type: number, payload: Buffer): { error: number; message: string; offsetBytes?: number } {
  need(payload, 6, 'error chunk');
  const error = payload.readUInt32BE(0);
  const messageLength = payload.readUInt16BE(4);
  const tail = type === NBD_REPLY_TYPE_ERROR_OFFSET ? 8 : 0;
  if (6 + messageLength + tail > payload.length) throw new ProtocolError('invalid', 'error message overruns the chunk');
  const message = payload.subarray(6, 6 + messageLength).toString('utf8');
  return tail ? { error, message, offsetBytes: readOffset(payload, 6 + messageLength) } : { error, message };
}

export function encodeNoneChunk(cookie: bigint): Buffer {
  return encodeChunkHeader({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_NONE, cookie, lengthBytes: 0 });
}
