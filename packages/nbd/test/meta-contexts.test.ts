import { MemoryDevice } from '@dmtool/devices';
import {
  allocationContext,
  BASE_ALLOCATION,
  DMTOOL_EXCEPTIONS,
  exceptionsContext,
  extentsOfRanges,
  matchingContexts,
  MAX_EXTENTS_PER_REPLY,
} from '@dmtool/nbd';

describe('extentsOfRanges', () => {
  test('ranges inside, around and across the request; neighbours with equal flags joined', () => {
    const ranges = [
      { byteOffset: 0, bytes: 100 },
      { byteOffset: 200, bytes: 50 },
      { byteOffset: 250, bytes: 50 },
      { byteOffset: 900, bytes: 500 },
    ];
    expect(extentsOfRanges(ranges, 50, 1000, 1, 0)).toEqual([
      { lengthBytes: 50, flags: 1 },
      { lengthBytes: 100, flags: 0 },
      { lengthBytes: 100, flags: 1 },
      { lengthBytes: 600, flags: 0 },
      { lengthBytes: 150, flags: 1 },
    ]);
  });

  test('no ranges: one extent; a range covering everything: one extent', () => {
    expect(extentsOfRanges([], 4096, 512, 0, 3)).toEqual([{ lengthBytes: 512, flags: 3 }]);
    expect(extentsOfRanges([{ byteOffset: 0, bytes: 1 << 30 }], 4096, 512, 0, 3)).toEqual([{ lengthBytes: 512, flags: 0 }]);
  });

  test('at most MAX_EXTENTS_PER_REPLY descriptors, from the start of the request', () => {
    const ranges = Array.from({ length: MAX_EXTENTS_PER_REPLY }, (_, i) => ({ byteOffset: 2 * i * 512, bytes: 512 }));
    const extents = extentsOfRanges(ranges, 0, 4 * MAX_EXTENTS_PER_REPLY * 512, 1, 0);
    expect(extents).toHaveLength(MAX_EXTENTS_PER_REPLY);
    expect(extents[0]).toEqual({ lengthBytes: 512, flags: 1 });
    expect(extents[1]).toEqual({ lengthBytes: 512, flags: 0 });
  });
});

describe('matchingContexts', () => {
  const contexts = [allocationContext(new MemoryDevice(8192)), exceptionsContext(() => [])];
  const names = (queries: string[], listing: boolean) => matchingContexts(contexts, queries, listing).map((c) => c.name);

  test('listing: no query is all, a namespace query is that namespace, unknown names nothing', () => {
    expect(names([], true)).toEqual([BASE_ALLOCATION, DMTOOL_EXCEPTIONS]);
    expect(names(['dmtool:'], true)).toEqual([DMTOOL_EXCEPTIONS]);
    expect(names(['base:'], true)).toEqual([BASE_ALLOCATION]);
    expect(names(['dmtool:nothing', 'qemu:'], true)).toEqual([]);
  });

  test('selecting: full names only', () => {
    expect(names([], false)).toEqual([]);
    expect(names(['dmtool:'], false)).toEqual([]);
    expect(names([DMTOOL_EXCEPTIONS, BASE_ALLOCATION], false)).toEqual([BASE_ALLOCATION, DMTOOL_EXCEPTIONS]);
  });
});

test('base:allocation of a device without a data map: everything is data', async () => {
  expect(await allocationContext(new MemoryDevice(8192)).extents(512, 4096)).toEqual([{ lengthBytes: 4096, flags: 0 }]);
});
