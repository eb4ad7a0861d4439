#!/usr/bin/env node
// `npm run prebuilds`: builds the addon and leaves a stripped copy where node-gyp-build looks for
// prebuilt binaries, prebuilds/<platform>-<arch>/node.napi.node, with node.napi.json beside it
// (what it was built from, and whether CUDA is compiled in). `npm pack` never builds: its
// prepack step (scripts/check-prebuilds.js) only checks that this was run on the current sources.
'use strict';
const path = require('node:path');
const fs = require('node:fs');
const { spawnSync } = require('node:child_process');
const { sourceHash } = require('./prebuild-stamp');

// (Not named `prebuild`, which npm would run before every `npm run build`.)
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
// What it holds, from the binary itself (in a child: loading it here would keep it open).
const probe = spawnSync(process.execPath, ['-e', `const i = require(${JSON.stringify(dst)}).info(); console.log(JSON.stringify({ version: i.version, cuda: i.cuda.compiled, runtime: i.cuda.runtimeVersion }))`], { encoding: 'utf8' });
if (probe.status !== 0) {
  console.error(`[grpo-kernels] prebuild: ${dst} does not load:\n${probe.stderr}`);
  process.exit(1);
}
const info = JSON.parse(probe.stdout);
const stamp = { sources: sourceHash(), version: info.version, cuda: info.cuda, cudaRuntime: info.runtime, bytes: fs.statSync(dst).size, node: process.version };
fs.writeFileSync(path.join(dir, 'node.napi.json'), JSON.stringify(stamp, null, 2) + '\n');
console.log(`[grpo-kernels] prebuild: ${path.relative(root, dst)} (${stamp.bytes} bytes, ${info.cuda ? 'CUDA compiled in' : 'CPU only: nvcc was not found or GK_CUDA=0'})`);
