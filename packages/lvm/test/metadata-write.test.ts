import {
  committedHeader,
  decodeMdaHeader,
  LvmError,
  lvmCrc,
  MDA_MAGIC,
  MdaHeader,
  metadataAfterMerge,
  parseVgMetadata,
  planTextWrite,
  snapshotSegmentOf,
  storedText,
} from '@dmtool/lvm';

const AREA = 4096;
const AREA_BYTES = 8192;

function header(loc?: [number, number]): MdaHeader {
  return {
    version: 1,
    startByte: AREA,
    sizeBytes: AREA_BYTES,
    locations: loc ? [{ byteOffset: loc[0], sizeBytes: loc[1], checksum: 0, flags: 0 }] : [],
  };
}

describe('planTextWrite: where lvm2 puts the next copy in the circular buffer', () => {
  const text = (n: number) => Buffer.alloc(n, 0x61);

  test('an empty area: right after the header', () => {
    const p = planTextWrite(header(), text(1000));
    expect(p.location).toEqual({ byteOffset: 512, sizeBytes: 1000, checksum: lvmCrc(text(1000)), flags: 0 });
    expect(p.writes.map((w) => [w.byteOffset, w.bytes.length])).toEqual([[AREA + 512, 1024]]);
    expect(p.writes[0].bytes.subarray(1000).equals(Buffer.alloc(24))).toBe(true);
  });

  test('after the committed copy, rounded up to 512 bytes', () => {
    expect(planTextWrite(header([512, 1000]), text(700)).location.byteOffset).toBe(1536);
    expect(planTextWrite(header([512, 1024]), text(700)).location.byteOffset).toBe(1536);
  });

  test('back at the start of the buffer when fewer than 512 bytes are left after the committed copy', () => {
    expect(planTextWrite(header([7000, 700]), text(700)).location.byteOffset).toBe(512);
  });

  test('a copy that reaches the end of the area continues at the start of the buffer, its second piece padded', () => {
    const data = Buffer.from(Array.from({ length: 3000 }, (_, i) => i & 0xff));
    const p = planTextWrite(header([4608, 3000]), data);
    expect(p.location).toEqual({ byteOffset: 7680, sizeBytes: 3000, checksum: lvmCrc(data), flags: 0 });
    expect(p.writes.map((w) => [w.byteOffset, w.bytes.length])).toEqual([
      [AREA + 7680, 512],
      [AREA + 512, 2560],
    ]);
    expect(Buffer.concat([p.writes[0].bytes, p.writes[1].bytes.subarray(0, 2488)]).equals(data)).toBe(true);
  });

  test('a copy larger than half the buffer less 512 bytes is refused', () => {
    expect(() => planTextWrite(header([512, 100]), text(3329), 'pv')).toThrow(
      new LvmError('metadata-write', 'metadata of 3329 bytes exceeds the 3328-byte maximum of the metadata area', {
        path: 'pv',
        sector: 8,
      }),
    );
  });

  test('the stored text ends with the NUL that its size and checksum count', () => {
    expect(storedText('vg0 {}\n').equals(Buffer.from('vg0 {}\n\0'))).toBe(true);
  });
});

describe('committedHeader', () => {
  test('slot 0 commits the new copy, slot 1 is cleared, the checksum holds, other bytes are kept', () => {
    const raw = Buffer.alloc(512);
    raw.write(MDA_MAGIC, 4, 'latin1');
    raw.writeUInt32LE(1, 20);
    raw.writeBigUInt64LE(BigInt(AREA), 24);
    raw.writeBigUInt64LE(BigInt(AREA_BYTES), 32);
    raw.writeBigUInt64LE(512n, 40);
    raw.writeBigUInt64LE(700n, 48);
    raw.writeBigUInt64LE(1536n, 64); // a precommitted copy in slot 1
    raw.writeBigUInt64LE(700n, 72);
    raw.fill(0x5a, 400, 512);
    const b = committedHeader(raw, { byteOffset: 1536, sizeBytes: 800, checksum: 0xabcdef01, flags: 0 });
    expect(decodeMdaHeader(b, AREA).locations).toEqual([{ byteOffset: 1536, sizeBytes: 800, checksum: 0xabcdef01, flags: 0 }]);
    expect(b.subarray(64, 88).equals(Buffer.alloc(24))).toBe(true);
    expect(b.subarray(400).equals(raw.subarray(400))).toBe(true);
  });
});

describe('metadataAfterMerge', () => {
  const lines = [
    'vg0 {',
    '\tid = "vg0000-0000-0000-0000-0000-0000-000000"',
    '\tseqno = 7',
    '\textent_size = 2048',
    '',
    '\tphysical_volumes {',
    '',
    '\t\tpv0 {',
    '\t\t\tid = "pv0000-0000-0000-0000-0000-0000-000000"',
    '\t\t\tpe_start = 2048',
    '\t\t\tpe_count = 10',
    '\t\t}',
    '\t}',
    '',
    '\tlogical_volumes {',
    '',
    '\t\tdata {',
    '\t\t\tid = "da0000-0000-0000-0000-0000-0000-000000"',
    '\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]',
    '\t\t\tsegment_count = 1',
    '',
    '\t\t\tsegment1 {',
    '\t\t\t\tstart_extent = 0',
    '\t\t\t\textent_count = 2',
    '\t\t\t\ttype = "striped"',
    '\t\t\t\tstripe_count = 1',
    '\t\t\t\tstripes = [',
    '\t\t\t\t\t"pv0", 0',
    '\t\t\t\t]',
    '\t\t\t}',
    '\t\t}',
    '',
    '\t\tsnap {',
    '\t\t\tid = "sp0000-0000-0000-0000-0000-0000-000000"',
    '\t\t\tstatus = ["READ", "WRITE"]',
    '\t\t\tsegment_count = 1',
    '',
    '\t\t\tsegment1 {',
    '\t\t\t\tstart_extent = 0',
    '\t\t\t\textent_count = 1',
    '\t\t\t\ttype = "striped"',
    '\t\t\t\tstripe_count = 1',
    '\t\t\t\tstripes = [',
    '\t\t\t\t\t"pv0", 2',
    '\t\t\t\t]',
    '\t\t\t}',
    '\t\t}',
    '',
    '\t\tsnapshot0 {',
    '\t\t\tid = "sn0000-0000-0000-0000-0000-0000-000000"',
    '\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]',
    '\t\t\tsegment_count = 1',
    '',
    '\t\t\tsegment1 {',
    '\t\t\t\tstart_extent = 0',
    '\t\t\t\textent_count = 2',
    '\t\t\t\ttype = "snapshot"',
    '\t\t\t\tchunk_size = 8',
    '\t\t\t\torigin = "data"',
    '\t\t\t\tmerging_store = "snap"',
    '\t\t\t}',
    '\t\t}',
    '\t}',
    '}',
    '# Generated by LVM2',
    'contents = "Text Format Volume Group"',
    'version = 1',
    '',
  ];
  const text = lines.join('\n');
  const vg = parseVgMetadata(text);

  test('the snapshot and its COW LV removed, seqno one higher, every other line as it was', () => {
    const after = metadataAfterMerge(text, vg, snapshotSegmentOf(vg, 'snap')!);
    const expected = [...lines.slice(0, 2), '\tseqno = 8', ...lines.slice(3, 32), ...lines.slice(47, 48), ...lines.slice(62)];
    expect(after.text).toBe(expected.join('\n'));
    expect(after.metadata.lvs.map((l) => l.name)).toEqual(['data']);
    expect(after.metadata.seqno).toBe(8);
  });

  test('a text whose sections share lines is refused rather than guessed at', () => {
    const packed = text.replace('\t\t}\n\n\t\tsnap {', '\t\t} snap {');
    expect(() => metadataAfterMerge(packed, parseVgMetadata(packed), snapshotSegmentOf(vg, 'snap')!)).toThrow(
      /LV snap shares a line with other settings; the text is not laid out as lvm2 writes it/,
    );
  });
});
