#!/usr/bin/env node
// Builds the native addon. cmake-js is the canonical build (CUDA when nvcc is found);
// node-gyp (binding.gyp, CPU only, same source list) is the fallback where cmake is missing.
//   GK_CUDA=0|OFF        build without CUDA even when nvcc is present
//   GK_CUDA=emu          build the CUDA backend against the CPU emulator (native/emu; no GPU needed)
//   GK_SANITIZE=address|thread   (with GK_CUDA=emu) ASan + UBSan, or TSan
//   GK_BUILD_DIR=dir     build folder (default build; the addon lands in <dir>/Release)
//   GK_BUILD=node-gyp    force the node-gyp fallback
//   GK_CUDA_ARCHS=list   CUDA architectures (CMake list, e.g. "90-real;120-real;120-virtual")
//   GK_CUDA_LINEINFO=1   embed line info in the CUDA code (profiling; a much larger binary)
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const fs = require('node:fs');

const root = path.resolve(__dirname, '..');

function run(cmd, args, env) {
  console.log(`[grpo-kernels] ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.error) return { ok: false, why: r.error.message };
  return { ok: r.status === 0, why: `exit code ${r.status}` };
}

function have(cmd) {
  const r = spawnSync(cmd, ['--version'], { stdio: 'ignore' });
  return !r.error && r.status === 0;
}

function cudaFlag() {
  const v = String(process.env.GK_CUDA ?? '').toUpperCase();
  if (v === 'EMU') return 'EMU';
  return v === '0' || v === 'OFF' || v === 'FALSE' || v === 'NO' ? 'OFF' : 'ON';
}

function cmakeJs() {
  let cli;
  try {
    cli = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
  } catch {
    return { ok: false, why: 'cmake-js is not installed (an optional dependency: `npm install cmake-js node-addon-api`)' };
  }
  if (!have('cmake')) return { ok: false, why: 'cmake is not on PATH' };
  const env = { CMAKE_BUILD_PARALLEL_LEVEL: process.env.CMAKE_BUILD_PARALLEL_LEVEL ?? String(require('node:os').availableParallelism?.() ?? 2) };
  // Without an explicit CUDA compiler, CMake looks for nvcc on PATH; also try the usual place.
  if (!process.env.CUDACXX && !have('nvcc') && fs.existsSync('/usr/local/cuda/bin/nvcc')) env.CUDACXX = '/usr/local/cuda/bin/nvcc';
  // Configure every time (cheap) so that a changed GK_CUDA takes effect, then build incrementally.
  const args = ['--out', process.env.GK_BUILD_DIR || 'build', `--CDGK_CUDA=${cudaFlag()}`, `--CDGK_SANITIZE=${process.env.GK_SANITIZE ?? ''}`,
    `--CDGK_CUDA_ARCHS=${process.env.GK_CUDA_ARCHS ?? ''}`, `--CDGK_CUDA_LINEINFO=${process.env.GK_CUDA_LINEINFO ? 'ON' : 'OFF'}`];
  const c = run(process.execPath, [cli, 'configure', ...args], env);
  if (!c.ok) return c;
  return run(process.execPath, [cli, 'build', ...args], env);
}

function nodeGyp() {
  // npm tells lifecycle scripts where its bundled node-gyp is; otherwise look beside node.
  const candidates = [process.env.npm_config_node_gyp,
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')];
  const gyp = candidates.find((p) => p && fs.existsSync(p));
  if (gyp) return run(process.execPath, [gyp, 'rebuild']);
  return run('node-gyp', ['rebuild']);
}

function main() {
  const forced = process.env.GK_BUILD;
  if (forced !== 'node-gyp') {
    const r = cmakeJs();
    if (r.ok) return 0;
    console.warn(`[grpo-kernels] cmake-js build failed (${r.why}); trying node-gyp (CPU backend only)`);
  }
  const r = nodeGyp();
  if (r.ok) return 0;
  let addonApi = true;
  try {
    require.resolve('node-addon-api', { paths: [root] });
  } catch {
    addonApi = false;
  }
  console.error(`[grpo-kernels] could not build the native addon: ${r.why}.\n` +
    (addonApi ? '' : 'The source build needs the optional packages cmake-js and node-addon-api (left out by --omit=optional): `npm install cmake-js node-addon-api`.\n') +
    'Install cmake (>= 3.20) and a C++17 compiler, then run `npm rebuild grpo-kernels`.');
  return 1;
}

process.exit(main());
