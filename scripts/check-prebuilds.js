#!/usr/bin/env node
// prepack: `npm pack` / `npm publish` never compile. They pack the binaries that
// `npm run prebuilds` left in prebuilds/, and stop here with what to do when there are none or
// when one was built from other sources than the working tree's.
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { sourceHash, root } = require('./prebuild-stamp');

const dir = path.join(root, 'prebuilds');
const fail = (msg) => {
  console.error(`[grpo-kernels] npm pack: ${msg}`);
  process.exit(1);
};
const platforms = fs.existsSync(dir) ? fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name) : [];
if (platforms.length === 0)
  fail('no prebuilt binary in prebuilds/. Run `npm run prebuilds` first (it builds the addon, with CUDA when nvcc is found: minutes), then `npm pack` again.');
const want = sourceHash();
for (const p of platforms) {
  const bin = path.join(dir, p, 'node.napi.node');
  const stampFile = path.join(dir, p, 'node.napi.json');
  if (!fs.existsSync(bin)) fail(`prebuilds/${p}/ has no node.napi.node. Run \`npm run prebuilds\` (or delete prebuilds/${p}/).`);
  if (!fs.existsSync(stampFile)) fail(`prebuilds/${p}/node.napi.node has no node.napi.json, so what it was built from is unknown. Run \`npm run prebuilds\`.`);
  const stamp = JSON.parse(fs.readFileSync(stampFile, 'utf8'));
  if (stamp.sources !== want)
    fail(`prebuilds/${p}/node.napi.node is stale: native/, CMakeLists.txt, binding.gyp or the version changed since it was built. Run \`npm run prebuilds\`${p === `${process.platform}-${process.arch}` ? '' : ` on ${p}`} again.`);
  if (stamp.bytes !== fs.statSync(bin).size) fail(`prebuilds/${p}/node.napi.node is not the file \`npm run prebuilds\` wrote. Run it again.`);
  console.log(`[grpo-kernels] packing prebuilds/${p}/node.napi.node (${stamp.bytes} bytes, ${stamp.cuda ? 'CUDA compiled in' : 'CPU only'})`);
  if (!stamp.cuda) console.warn(`[grpo-kernels] warning: prebuilds/${p} has no CUDA backend (built where nvcc was missing or with GK_CUDA=0)`);
}
