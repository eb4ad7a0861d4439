#!/usr/bin/env node
// npm install hook. In a git checkout (development) the addon is always built from source.
// For a consumer, a prebuilt binary (prebuilds/<platform>-<arch>/) or an earlier build is used
// when it loads; otherwise it is built from source (scripts/build.js).
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const dev = fs.existsSync(path.join(root, '.git'));

if (!dev && !process.env.GK_FORCE_BUILD) {
  try {
    require('node-gyp-build')(root);
    console.log('[grpo-kernels] using the prebuilt native addon');
    process.exit(0);
  } catch {
    // fall through to a source build
  }
}
const r = spawnSync(process.execPath, [path.join(__dirname, 'build.js')], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
