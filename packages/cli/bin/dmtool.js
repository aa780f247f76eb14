#!/usr/bin/env node
'use strict';
// SIGUSR1 asks for one progress line, as with dd. Listening for it also takes
// the signal from Node, which would otherwise open its inspector on
// 127.0.0.1:9229 and let any local user run code in this (root) process; so
// this comes first.
process.on('SIGUSR1', () => require('../dist/util/progress').reportProgress());
// Copy sub-jobs run on libuv's thread pool; give it room for 8 in flight
// plus the destinations' flushes. Must be set before the pool first starts.
if (!process.env.UV_THREADPOOL_SIZE) process.env.UV_THREADPOOL_SIZE = '16';
require('../dist/util/stdio').watchStdio();
// A SIGUSR1 sent while Node was starting may still be opening the inspector:
// look once the first turn of the event loop has run.
setImmediate(() => {
  if (require('../dist/util/inspector-guard').refuseOpenInspector()) {
    process.exitCode = 2;
    return;
  }
  let main;
  try {
    main = require('../dist/main').main;
  } catch (err) {
    // No native addon for this machine: its one line, not a stack trace.
    if (err?.code !== 'DMTOOL_NATIVE_ADDON') throw err;
    process.stderr.write(`dmtool: ${err.message}\n`);
    process.exitCode = 1;
    return;
  }
  main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
});
