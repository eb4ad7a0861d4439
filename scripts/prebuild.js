#!/usr/bin/env node
// Builds the addon and leaves a stripped copy where node-gyp-build looks for prebuilt binaries:
// prebuilds/<platform>-<arch>/node.napi.node
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');

// (`npm run prebuilds`; not named `prebuild`, which npm would run before every `npm run build`.)
const root = path.resolve(__dirname, '..');
if (String(process.env.GK_CUDA ?? '').toUpperCase() === 'EMU' || process.env.GK_SANITIZE) {
  console.error('[grpo-kernels] prebuild: the emulated and sanitizer builds are test builds; unset GK_CUDA=emu / GK_SANITIZE');
  process.exit(1);
}
const b = spawnSync(process.execPath, [path.join(__dirname, 'build.js')], { cwd: root, stdio: 'inherit' });
if (b.status !== 0) process.exit(b.status ?? 1);
const src = path.join(root, process.env.GK_BUILD_DIR || 'build', 'Release', 'grpo_kernels.node');
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
fs.mkdirSync(dir, { recursive: true });
const dst = path.join(dir, 'node.napi.node');
fs.copyFileSync(src, dst);
if (process.platform === 'linux') {
  const s = spawnSync('strip', ['--strip-unneeded', dst], { stdio: 'inherit' });
  if (s.status !== 0) console.warn('[grpo-kernels] strip failed; the prebuild is left unstripped');
}
console.log(`[grpo-kernels] prebuild: ${path.relative(root, dst)} (${fs.statSync(dst).size} bytes)`);
