import { coalesceChunks, deltaRanges, ExceptionTable } from '@dmtool/dm-snapshot';

describe('coalesceChunks', () => {
  test.each([
    [[], []],
    [[7], [{ start: 7, count: 1 }]],
    [
      [0, 1, 2, 4, 4, 5, 9],
      [
        { start: 0, count: 3 },
        { start: 4, count: 2 },
        { start: 9, count: 1 },
      ],
    ],
    [[2 ** 53 - 2, 2 ** 53 - 1], [{ start: 2 ** 53 - 2, count: 2 }]],
  ])('%j → %j', (chunks, ranges) => {
    expect([...coalesceChunks(chunks)]).toEqual(ranges);
  });
});

test('deltaRanges sorts the table by origin chunk and joins neighbours', () => {
  const t = new ExceptionTable();
  [10, 3, 11, 4, 12, 100, 5].forEach((old, i) => t.append(old, 2 + i));
  expect([...deltaRanges(t)]).toEqual([
    { start: 3, count: 3 },
    { start: 10, count: 3 },
    { start: 100, count: 1 },
  ]);
});
