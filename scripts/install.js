#!/usr/bin/env node
// npm install hook. A working addon is never rebuilt behind the user's back: a prebuilt binary
// (prebuilds/<platform>-<arch>/) or an earlier build (build/Release, e.g. in a clone) that loads
// is used as it is. Only when none loads is the addon built from source (scripts/build.js;
// GK_FORCE_BUILD=1 forces that). In a clone, `npm run build` rebuilds after changes to native/.
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');

const root = path.resolve(__dirname, '..');
const clone = fs.existsSync(path.join(root, '.git'));

function working() {
  // In a child process, so that a binary that crashes on load cannot take this script down.
  const r = spawnSync(process.execPath, ['-e',
    `const a = require('node-gyp-build')(${JSON.stringify(root)}); const v = a.info().version;
     if (v !== require(${JSON.stringify(path.join(root, 'package.json'))}).version) process.exit(3);
     console.log(require('node-gyp-build').path(${JSON.stringify(root)}))`], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : undefined;
}

if (!process.env.GK_FORCE_BUILD) {
  const found = working();
  if (found) {
    const rel = path.relative(root, found);
    console.log(rel.startsWith('prebuilds')
      ? `[grpo-kernels] using the prebuilt native addon (${rel})`
      : `[grpo-kernels] using the existing build of the native addon (${rel}); not rebuilding${clone ? ' (`npm run build` rebuilds it)' : ''}`);
    process.exit(0);
  }
}
const r = spawnSync(process.execPath, [path.join(__dirname, 'build.js')], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
