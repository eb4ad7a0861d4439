// The two builds (cmake-js and the node-gyp fallback) read one source list; every native
// source file is on it.
import t from 'tap';
import * as fs from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const sources = JSON.parse(fs.readFileSync(path.join(root, 'native', 'sources.json'), 'utf8')) as { cpu: string[]; cuda: string[]; emu: string[] };

function walk(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)]));
}

t.test('every .cc/.cu file under native/ is listed once, and every listed file exists', async (t) => {
  // Paths relative to the repository (the clone itself may sit under any folder).
  const onDisk = walk(path.join(root, 'native'))
    .map((f) => path.relative(root, f).split(path.sep).join('/'))
    .filter((f) => /\.(cc|cu|cpp)$/.test(f))
    .sort();
  const listed = [...sources.cpu, ...sources.cuda, ...sources.emu].sort();
  t.same(listed, onDisk);
  t.equal(new Set(listed).size, listed.length, 'no duplicates');
  t.ok(sources.cuda.every((f) => f.endsWith('.cu')), 'the cuda list holds .cu files');
  t.ok(sources.cpu.every((f) => !f.endsWith('.cu')), 'the cpu list holds no .cu files');
});

t.test('CMakeLists.txt and binding.gyp take their sources from native/sources.json', async (t) => {
  const cmake = fs.readFileSync(path.join(root, 'CMakeLists.txt'), 'utf8');
  t.match(cmake, /native\/sources\.json/);
  t.notMatch(cmake, /native\/cpu\/\w+\.cc/, 'no source file named in CMakeLists.txt');
  const gyp = fs.readFileSync(path.join(root, 'binding.gyp'), 'utf8');
  t.match(gyp, /require\('\.\/native\/sources\.json'\)\.cpu/);
  t.notMatch(gyp, /native\/cpu\/\w+\.cc/, 'no source file named in binding.gyp');
});

t.test('the CUDA architectures: sm_75, sm_80, sm_90, sm_100, sm_120 plus compute_90 PTX, set before enable_language(CUDA)', async (t) => {
  const cmake = fs.readFileSync(path.join(root, 'CMakeLists.txt'), 'utf8');
  const arch = cmake.indexOf('set(CMAKE_CUDA_ARCHITECTURES 75-real 80-real 90-real 100-real 120-real 90-virtual)');
  t.ok(arch > 0);
  t.ok(arch < cmake.indexOf('enable_language(CUDA)'));
  t.match(cmake, /set\(CMAKE_CUDA_ARCHITECTURES \$\{GK_CUDA_ARCHS\}\)/, 'GK_CUDA_ARCHS overrides them');
  t.match(cmake, /CMAKE_CUDA_RUNTIME_LIBRARY Static/);
});

t.test('the shipped CUDA code is compressed for size and carries no line info', async (t) => {
  const cmake = fs.readFileSync(path.join(root, 'CMakeLists.txt'), 'utf8');
  // nvcc >= 12.8 compresses with a fast codec by default; --compress-mode=size is ~10x smaller.
  t.match(cmake, /VERSION_GREATER_EQUAL 12\.8\)\s*\n\s*set\(GK_CUDA_COMPRESS --compress-mode=size\)/);
  t.match(cmake, /option\(GK_CUDA_LINEINFO "[^"]*" OFF\)/, '-lineinfo (which embeds the PTX text in every cubin) is opt-in');
  const opts = /target_compile_options\(\$\{PROJECT_NAME\} PRIVATE \$<\$<COMPILE_LANGUAGE:CUDA>:([^>]*)>\)/.exec(cmake)?.[1] ?? '';
  t.notMatch(opts, /-lineinfo/, `the CUDA flags (${opts}) have no -lineinfo`);
  t.match(opts, /\$\{GK_CUDA_COMPRESS\}/);
  const build = fs.readFileSync(path.join(root, 'scripts', 'build.js'), 'utf8');
  t.match(build, /--CDGK_CUDA_ARCHS=/, 'build.js passes GK_CUDA_ARCHS');
  t.match(build, /--CDGK_CUDA_LINEINFO=/, 'build.js passes GK_CUDA_LINEINFO');
});

t.test('the built addon leaves no grpo-kernels symbol undefined (every declared gk:: function is defined)', async (t) => {
  const { execFileSync } = await import('node:child_process');
  const addonFile = path.join(root, 'build', 'Release', 'grpo_kernels.node');
  t.ok(fs.existsSync(addonFile), 'the addon is built');
  let undefinedSyms: string;
  try {
    undefinedSyms = execFileSync('nm', ['-D', '--undefined-only', '-C', addonFile], { encoding: 'utf8' });
  } catch (e) {
    t.fail(`nm could not read the addon: ${(e as Error).message}`);
    return;
  }
  const ours = undefinedSyms.split('\n').filter((l) => /\bgk::/.test(l));
  t.same(ours, [], 'no gk:: symbol is left for the dynamic loader');
});

// The CPU backend is built with -ffp-contract=off: a*b + c is two roundings on every ISA clone
// (g++ contracts into FMA in the AVX-512/AVX2 clones, and by default on aarch64). core/common.h
// and the CPU/GPU identical-draw promise of sampleTokens rely on it: a fused multiply-add in any
// gk::cpu function of the built addon fails here.
t.test('no fused multiply-add in the CPU backend of the built addon (-ffp-contract=off holds)', async (t) => {
  const { execFileSync } = await import('node:child_process');
  const addonFile = path.join(root, 'build', 'Release', 'grpo_kernels.node');
  let dis: string;
  try {
    dis = execFileSync('objdump', ['-d', '--no-show-raw-insn', '-C', addonFile], { encoding: 'utf8', maxBuffer: 1 << 30 });
  } catch (e) {
    t.fail(`objdump could not read the addon: ${(e as Error).message}`);
    return;
  }
  let fn = '';
  let cpuFunctions = 0;
  const fused = new Set<string>();
  for (const line of dis.split('\n')) {
    const head = /^[0-9a-f]+ <(.*)>:$/.exec(line);
    if (head) {
      fn = head[1]!;
      if (fn.startsWith('gk::cpu::')) cpuFunctions++;
      continue;
    }
    if (fn.startsWith('gk::cpu::') && /\s(v?fn?m(add|sub)\d{3}[sp][sd]|fmadd|fmsub|fnmadd|fnmsub)\s/.test(line)) fused.add(fn);
  }
  t.ok(cpuFunctions > 20, `the disassembly has the CPU backend (${cpuFunctions} gk::cpu functions)`);
  t.same([...fused], [], 'no gk::cpu function has an FMA instruction');
});

// The CPU row loops are explicit vectors per ISA level (native/cpu/simd.h): the x86-64-v4 build of
// each hot loop works in 512-bit registers and the v3 build in 256-bit ones, and none of them falls
// back to one comparison per element (a 64-byte vector comparison compiled for a lower ISA becomes
// 16 scalar ones: what the helpers' templates exist to prevent).
t.test('the CPU hot loops are vectorised at every ISA level (generated code, not timings)', { skip: process.arch !== 'x64' ? 'x86-64 only' : false }, async (t) => {
  const { execFileSync } = await import('node:child_process');
  const addonFile = path.join(root, 'build', 'Release', 'grpo_kernels.node');
  const dis = execFileSync('objdump', ['-d', '--no-show-raw-insn', '-C', addonFile], { encoding: 'utf8', maxBuffer: 1 << 30 });
  const fns = new Map<string, string[]>();
  let fn = '';
  for (const line of dis.split('\n')) {
    const head = /^[0-9a-f]+ <(.*)>:$/.exec(line);
    if (head) {
      fn = head[1]!;
      continue;
    }
    if (/_isa_v[34]\(/.test(fn)) {
      if (!fns.has(fn)) fns.set(fn, []);
      fns.get(fn)!.push(line);
    }
  }
  for (const name of ['seg_stats_isa', 'store_grad_isa', 'load_row_isa', 'weights_isa', 'kl_pass_isa']) {
    for (const [level, reg] of [['v4', 'zmm'], ['v3', 'ymm']] as const) {
      const body = [...fns.entries()].find(([k]) => k.includes(`${name}_${level}(`))?.[1];
      t.ok(body, `${name}_${level} is in the addon`);
      if (!body) continue;
      const wide = body.filter((l) => l.includes(`%${reg}`)).length;
      const scalarCompares = body.filter((l) => /\sv?u?comiss\s/.test(l)).length;
      t.ok(wide >= 30, `${name}_${level}: ${wide} instructions on ${reg} registers`);
      // Tails and 16-lane reductions compare scalars; a scalarised vector comparison would add 16
      // per vector instruction.
      t.ok(scalarCompares <= wide / 4, `${name}_${level}: ${scalarCompares} scalar float compares for ${wide} vector instructions`);
    }
  }
});
