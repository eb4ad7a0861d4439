#!/usr/bin/env node
'use strict';
const fs = require('node:fs');
const path = require('node:path');

const cli = path.join(__dirname, '..', 'dist', 'lib', 'cli.js');
if (!fs.existsSync(cli)) {
  // Only a checkout can lack dist/ (the published package ships it): `npm install` there runs
  // the `prepare` script, which compiles it.
  console.error(`grpo-kernels: ${cli} is missing: the TypeScript is not compiled.\n` +
    'In a clone, run `npm install` (or `npm run build:ts`) first.');
  process.exit(1);
}
require(cli)
  .main(process.argv.slice(2))
  .then((code) => {
    process.exitCode = code;
  });
