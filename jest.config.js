/** Tests run the TypeScript sources directly; `tsc -b` type-checks them first (npm test). */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/native', '<rootDir>/packages', '<rootDir>/test', '<rootDir>/examples'],
  testMatch: ['**/*.test.ts'],
  testPathIgnorePatterns: ['/node_modules/', '/dist/'],
  transform: { '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.test.json' }] },
  moduleNameMapper: {
    '^@dmtool/devices$': '<rootDir>/packages/devices/src/index.ts',
    '^@dmtool/native$': '<rootDir>/native/lib/index.ts',
    '^@dmtool/kcopyd$': '<rootDir>/packages/kcopyd/src/index.ts',
    '^@dmtool/dm-snapshot$': '<rootDir>/packages/dm-snapshot/src/index.ts',
    '^@dmtool/dm-mirror$': '<rootDir>/packages/dm-mirror/src/index.ts',
    '^@dmtool/targets$': '<rootDir>/packages/targets/src/index.ts',
    '^@dmtool/nbd$': '<rootDir>/packages/nbd/src/index.ts',
    '^@dmtool/lvm$': '<rootDir>/packages/lvm/src/index.ts',
    '^dmtool$': '<rootDir>/packages/cli/src/index.ts',
  },
  testTimeout: 120000,
  maxWorkers: 2,
  reporters: ['default', '<rootDir>/test/summary-reporter.js'],
};
