import {
  decodeBlockStatusPayload,
  decodeChunkHeader,
  decodeClientFlags,
  decodeErrorPayload,
  decodeExportNameReply,
  decodeGreeting,
  decodeInfo,
  decodeInfoRequest,
  decodeMetaContextReplyData,
  decodeMetaContextRequest,
  decodeOptionHeader,
  decodeOptionReplyHeader,
  decodeRequestHeader,
  decodeServerReplyData,
  decodeSimpleReply,
  encodeBlockStatusChunk,
  encodeClientFlags,
  encodeErrorChunk,
  encodeErrorOffsetChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfo,
  encodeInfoRequest,
  encodeMetaContextReplyData,
  encodeMetaContextRequest,
  encodeNoneChunk,
  encodeOffsetDataHeader,
  encodeOffsetHole,
  encodeOption,
  encodeOptionReply,
  encodeRequestHeader,
  encodeServerReplyData,
  encodeSimpleReply,
  IHAVEOPT,
  NBD_CMD_WRITE,
  NBD_FLAG_FIXED_NEWSTYLE,
  NBD_FLAG_NO_ZEROES,
  NBD_INFO_BLOCK_SIZE,
  NBD_INFO_EXPORT,
  NBD_INFO_NAME,
  NBD_OPT_GO,
  NBD_REP_ERR_UNKNOWN,
  NBD_REP_MAGIC,
  NBD_REPLY_FLAG_DONE,
  NBD_REPLY_TYPE_BLOCK_STATUS,
  NBD_REPLY_TYPE_ERROR,
  NBD_REPLY_TYPE_ERROR_OFFSET,
  NBD_REPLY_TYPE_NONE,
  NBD_REPLY_TYPE_OFFSET_DATA,
  NBD_REPLY_TYPE_OFFSET_HOLE,
  NBDMAGIC,
  ProtocolError,
  replyKind,
} from '@dmtool/nbd';

const hex = (b: Buffer) => b.toString('hex');

function expectProtocolError(fn: () => unknown, reason: ProtocolError['reason']): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(ProtocolError);
  expect((caught as ProtocolError).reason).toBe(reason);
}

describe('magic numbers', () => {
  test('spell what the protocol says they spell', () => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(NBDMAGIC);
    expect(b.toString('latin1')).toBe('NBDMAGIC');
    b.writeBigUInt64BE(IHAVEOPT);
    expect(b.toString('latin1')).toBe('IHAVEOPT');
    expect(NBD_REP_MAGIC).toBe(0x3e889045565a9n);
  });
});

describe('handshake', () => {
  test('greeting: NBDMAGIC, IHAVEOPT, 16-bit flags', () => {
    const g = encodeGreeting(NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    expect(hex(g)).toBe('4e42444d41474943' + '49484156454f5054' + '0003');
    expect(decodeGreeting(g).handshakeFlags).toBe(3);
    expectProtocolError(() => decodeGreeting(Buffer.alloc(18)), 'bad-magic');
    expectProtocolError(() => decodeGreeting(g.subarray(0, 17)), 'short');
  });

  test('client flags are 32 bits', () => {
    expect(hex(encodeClientFlags(3))).toBe('00000003');
    expect(decodeClientFlags(Buffer.from('80000001', 'hex'))).toBe(0x80000001);
  });

  test('option request and reply headers', () => {
    const o = encodeOption(NBD_OPT_GO, Buffer.from('abc'));
    expect(hex(o)).toBe('49484156454f5054' + '00000007' + '00000003' + '616263');
    expect(decodeOptionHeader(o)).toEqual({ option: 7, dataBytes: 3 });
    expectProtocolError(() => decodeOptionHeader(Buffer.alloc(16)), 'bad-magic');
    const r = encodeOptionReply(NBD_OPT_GO, NBD_REP_ERR_UNKNOWN, Buffer.from('no'));
    expect(hex(r)).toBe('0003e889045565a9' + '00000007' + '80000006' + '00000002' + '6e6f');
    expect(decodeOptionReplyHeader(r)).toEqual({ option: 7, replyType: 0x80000006, dataBytes: 2 });
  });

  test('NBD_OPT_EXPORT_NAME reply: size, flags, and 124 zeros unless NO_ZEROES', () => {
    expect(encodeExportNameReply(1 << 20, 0x1ed, false)).toHaveLength(134);
    const short = encodeExportNameReply(2 ** 40, 0x1ed, true);
    expect(hex(short)).toBe('0000010000000000' + '01ed');
    expect(decodeExportNameReply(short)).toEqual({ sizeBytes: 2 ** 40, transmissionFlags: 0x1ed });
  });

  test('info request (NBD_OPT_INFO / NBD_OPT_GO data)', () => {
    const data = encodeInfoRequest({ name: 'disk', infoTypes: [NBD_INFO_NAME, NBD_INFO_BLOCK_SIZE] });
    expect(hex(data)).toBe('00000004' + '6469736b' + '0002' + '0001' + '0003');
    expect(decodeInfoRequest(data)).toEqual({ name: 'disk', infoTypes: [1, 3] });
    expect(decodeInfoRequest(encodeInfoRequest({ name: '', infoTypes: [] }))).toEqual({ name: '', infoTypes: [] });
  });

  test('info request: every malformed shape is refused with a reason', () => {
    expectProtocolError(() => decodeInfoRequest(Buffer.alloc(5)), 'invalid');
    const overrun = Buffer.from('000000ff' + '6469736b' + '0000', 'hex');
    expectProtocolError(() => decodeInfoRequest(overrun), 'invalid');
    const countTooHigh = Buffer.from('00000004' + '6469736b' + '0002' + '0001', 'hex');
    expectProtocolError(() => decodeInfoRequest(countTooHigh), 'invalid');
    const trailing = Buffer.concat([encodeInfoRequest({ name: 'a', infoTypes: [] }), Buffer.from([0])]);
    expectProtocolError(() => decodeInfoRequest(trailing), 'invalid');
    expectProtocolError(() => decodeInfoRequest(encodeInfoRequest({ name: 'x'.repeat(4097), infoTypes: [] })), 'too-big');
    expectProtocolError(() => decodeInfoRequest(encodeInfoRequest({ name: 'a\0b', infoTypes: [] })), 'invalid');
    const notUtf8 = Buffer.from('00000002' + 'c328' + '0000', 'hex');
    expectProtocolError(() => decodeInfoRequest(notUtf8), 'invalid');
  });

  test('info replies', () => {
    const e = encodeInfo({ type: NBD_INFO_EXPORT, sizeBytes: 1 << 30, transmissionFlags: 0x1ed });
    expect(hex(e)).toBe('0000' + '0000000040000000' + '01ed');
    expect(decodeInfo(e)).toEqual({ type: 0, sizeBytes: 1 << 30, transmissionFlags: 0x1ed });
    const bs = encodeInfo({ type: NBD_INFO_BLOCK_SIZE, minimumBytes: 512, preferredBytes: 4096, maximumBytes: 32 << 20 });
    expect(hex(bs)).toBe('0003' + '00000200' + '00001000' + '02000000');
    expect(decodeInfo(bs)).toEqual({ type: 3, minimumBytes: 512, preferredBytes: 4096, maximumBytes: 32 << 20 });
    expect(decodeInfo(encodeInfo({ type: NBD_INFO_NAME, name: 'disk' }))).toEqual({ type: 1, name: 'disk' });
    expectProtocolError(() => decodeInfo(e.subarray(0, 11)), 'invalid');
  });

  test('meta context requests and replies', () => {
    const data = encodeMetaContextRequest({ exportName: 'd', queries: ['base:allocation', 'qemu:dirty-bitmap:x'] });
    expect(hex(data.subarray(0, 13))).toBe('00000001' + '64' + '00000002' + '0000000f');
    expect(decodeMetaContextRequest(data, 8)).toEqual({ exportName: 'd', queries: ['base:allocation', 'qemu:dirty-bitmap:x'] });
    expectProtocolError(() => decodeMetaContextRequest(data, 1), 'too-big');
    expectProtocolError(() => decodeMetaContextRequest(data.subarray(0, data.length - 1), 8), 'invalid');
    expectProtocolError(() => decodeMetaContextRequest(Buffer.concat([data, Buffer.alloc(1)]), 8), 'invalid');
    const reply = encodeMetaContextReplyData(7, 'base:allocation');
    expect(hex(reply.subarray(0, 4))).toBe('00000007');
    expect(decodeMetaContextReplyData(reply)).toEqual({ contextId: 7, name: 'base:allocation' });
  });

  test('NBD_REP_SERVER data: name length, name, description', () => {
    const d = encodeServerReplyData('disk', 'a disk');
    expect(hex(d.subarray(0, 8))).toBe('00000004' + '6469736b');
    expect(decodeServerReplyData(d)).toEqual({ name: 'disk', description: 'a disk' });
  });
});

describe('transmission', () => {
  test('request header: 28 bytes, cookie opaque, 64-bit offset', () => {
    const h = { flags: 1, type: NBD_CMD_WRITE, cookie: 0xfedcba9876543210n, offsetBytes: 2 ** 40 + 512, lengthBytes: 4096 };
    const b = encodeRequestHeader(h);
    expect(hex(b)).toBe('25609513' + '0001' + '0001' + 'fedcba9876543210' + '0000010000000200' + '00001000');
    expect(decodeRequestHeader(b)).toEqual(h);
    const bad = Buffer.from(b);
    bad[0] ^= 1;
    expectProtocolError(() => decodeRequestHeader(bad), 'bad-magic');
  });

  test('offsets beyond 2^53 decode to numbers that still lie beyond any export', () => {
    const b = encodeRequestHeader({ flags: 0, type: 0, cookie: 1n, offsetBytes: 0, lengthBytes: 1 });
    b.writeBigUInt64BE(0xffffffffffffffffn, 16);
    expect(decodeRequestHeader(b).offsetBytes).toBeGreaterThan(Number.MAX_SAFE_INTEGER);
  });

  test('simple reply', () => {
    const r = encodeSimpleReply(22, 5n);
    expect(hex(r)).toBe('67446698' + '00000016' + '0000000000000005');
    expect(decodeSimpleReply(r)).toEqual({ error: 22, cookie: 5n });
    expect(replyKind(r)).toBe('simple');
  });

  test('structured chunks: data, hole, block status, errors, none', () => {
    const data = encodeOffsetDataHeader(9n, 4096, 512, true);
    expect(hex(data)).toBe('668e33ef' + '0001' + '0001' + '0000000000000009' + '00000208' + '0000000000001000');
    expect(replyKind(data)).toBe('structured');
    expect(decodeChunkHeader(data)).toEqual({ flags: NBD_REPLY_FLAG_DONE, type: NBD_REPLY_TYPE_OFFSET_DATA, cookie: 9n, lengthBytes: 520 });

    const hole = encodeOffsetHole(9n, 0, 65536, false);
    expect(decodeChunkHeader(hole)).toEqual({ flags: 0, type: NBD_REPLY_TYPE_OFFSET_HOLE, cookie: 9n, lengthBytes: 12 });
    expect(hex(hole.subarray(20))).toBe('0000000000000000' + '00010000');

    const bs = encodeBlockStatusChunk(
      3n,
      1,
      [
        { lengthBytes: 4096, flags: 0 },
        { lengthBytes: 512, flags: 3 },
      ],
      true,
    );
    expect(decodeChunkHeader(bs)).toMatchObject({ type: NBD_REPLY_TYPE_BLOCK_STATUS, lengthBytes: 20 });
    expect(decodeBlockStatusPayload(bs.subarray(20))).toEqual({
      contextId: 1,
      extents: [
        { lengthBytes: 4096, flags: 0 },
        { lengthBytes: 512, flags: 3 },
      ],
    });

    const err = encodeErrorChunk(4n, 5, 'bad sector');
    expect(decodeChunkHeader(err)).toEqual({ flags: 1, type: NBD_REPLY_TYPE_ERROR, cookie: 4n, lengthBytes: 16 });
    expect(decodeErrorPayload(NBD_REPLY_TYPE_ERROR, err.subarray(20))).toEqual({ error: 5, message: 'bad sector' });
    const errOff = encodeErrorOffsetChunk(4n, 5, 'x', 1024);
    expect(decodeChunkHeader(errOff).type).toBe(NBD_REPLY_TYPE_ERROR_OFFSET);
    expect(decodeErrorPayload(NBD_REPLY_TYPE_ERROR_OFFSET, errOff.subarray(20))).toEqual({ error: 5, message: 'x', offsetBytes: 1024 });

    expect(decodeChunkHeader(encodeNoneChunk(8n))).toEqual({ flags: 1, type: NBD_REPLY_TYPE_NONE, cookie: 8n, lengthBytes: 0 });
  });

  test('error messages are cut to the protocol string limit', () => {
    const long = encodeErrorChunk(1n, 5, 'é'.repeat(3000));
    const { message } = decodeErrorPayload(NBD_REPLY_TYPE_ERROR, long.subarray(20));
    expect(Buffer.byteLength(message)).toBeLessThanOrEqual(4096);
    expect(message).toBe('é'.repeat(2048));
  });
});
