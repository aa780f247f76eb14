#!/usr/bin/env node
// Writes man/dmtool.1 from the built CLI's --help (npm run man, after tsc -b).
'use strict';
const fs = require('fs');
const path = require('path');
const { collectHelp, renderManPage, MAN_PAGE_PATH } = require('../dist/man/man-page');
const { version } = require('../package.json');

collectHelp(path.join(__dirname, '..', 'bin', 'dmtool.js'), version).then(
  (help) => {
    fs.writeFileSync(MAN_PAGE_PATH, renderManPage(help));
    process.stdout.write(`wrote ${path.relative(process.cwd(), MAN_PAGE_PATH)}\n`);
  },
  (e) => {
    process.stderr.write(`man: ${e.message}\n`);
    process.exitCode = 1;
  },
);
