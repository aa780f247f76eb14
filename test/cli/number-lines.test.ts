import { NumberLines, writeDecimal } from '../../packages/cli/src/util/number-lines';

test('writeDecimal writes what String() writes, at every digit boundary', () => {
  const buf = Buffer.alloc(32);
  const values = [0, 1, 9, 10, 99, 100, 999, 1000, 4096, 123456789, 2 ** 32, 10 ** 15 - 1, 10 ** 15, Number.MAX_SAFE_INTEGER];
  for (const v of values) {
    const end = writeDecimal(buf, 3, v);
    expect(buf.subarray(3, end).toString()).toBe(String(v));
  }
});

test('NumberLines: full pieces of space-separated lines, then the rest', () => {
  const lines = new NumberLines(2, 5 * 17);
  expect(lines.empty).toBe(true);
  expect(lines.add(0, 7, 16, 0, 128)).toBe(false);
  expect(lines.add(1, 2 ** 40, 17, 8, Number.MAX_SAFE_INTEGER)).toBe(true);
  expect(lines.take().toString()).toBe(`0 7 16 0 128\n1 ${2 ** 40} 17 8 ${Number.MAX_SAFE_INTEGER}\n`);
  expect(lines.empty).toBe(true);
  expect(lines.add(2, 3, 4, 5, 6)).toBe(false);
  expect(lines.take().toString()).toBe('2 3 4 5 6\n');
});
