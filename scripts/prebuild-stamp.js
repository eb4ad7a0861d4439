// The fingerprint of what a prebuilt binary is built from: the package version and every file
// under native/, CMakeLists.txt and binding.gyp. scripts/prebuild.js writes it beside the
// binary (prebuilds/<platform>-<arch>/node.napi.json); scripts/check-prebuilds.js (prepack)
// compares it with the working tree's, so a stale binary is never packed.
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const root = path.resolve(__dirname, '..');

function files(dir) {
  const out = [];
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...files(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

function sourceHash() {
  const h = crypto.createHash('sha256');
  h.update(`version ${require(path.join(root, 'package.json')).version}\n`);
  const list = [...files(path.join(root, 'native')), path.join(root, 'CMakeLists.txt'), path.join(root, 'binding.gyp')]
    .map((f) => path.relative(root, f).split(path.sep).join('/'))
    .sort();
  for (const rel of list) {
    h.update(`${rel}\n`);
    h.update(fs.readFileSync(path.join(root, rel)));
  }
  return h.digest('hex');
}

module.exports = { sourceHash, root };
