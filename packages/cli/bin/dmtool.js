#!/usr/bin/env node
'use strict';
// Copy sub-jobs run on libuv's thread pool; give it room for 8 in flight
// plus the destinations' flushes. Must be set before the pool first starts.
if (!process.env.UV_THREADPOOL_SIZE) process.env.UV_THREADPOOL_SIZE = '16';
// `dmtool snapshot-list COW | head` closes stdout early: that is not an error.
process.stdout.on('error', (e) => {
  if (e.code === 'EPIPE') process.exit(process.exitCode || 0);
  throw e;
});
require('../dist/main')
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code;
  });
