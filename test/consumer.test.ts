// A consumer's view of the package: `npm run prebuilds` (the explicit step), `npm pack` (which
// must not compile, only check the prebuilds), then the tarball installed into empty projects,
// with its optional dependencies and without them (--omit=optional): the kernels run through
// require and import, the CLI runs, and a strict TypeScript file typechecks against the
// installed declarations with TypeScript 5 and 7.
import t from 'tap';
import type { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gk-consumer-'));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = {}) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false', ...env } });
  return { ok: r.status === 0, status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

/** Runs node outside tap's process hooks (tap instruments node children it spawns; TypeScript 7's ES-module bin does not load under them). */
function plainNode(args: string[], cwd: string) {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^(_?TAP|NODE_OPTIONS$|NODE_V8_COVERAGE$)/i.test(k)) env[k] = v;
  const quoted = [process.execPath, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  // (tap adds its hooks to the environment of every child it sees spawned: unset them in the shell.)
  const r = spawnSync('sh', ['-c', `unset NODE_OPTIONS NODE_V8_COVERAGE; for v in $(env | sed -n 's/^\\(_\\{0,1\\}TAP[A-Za-z0-9_]*\\)=.*/\\1/p'); do unset "$v"; done; exec ${quoted}`], { cwd, encoding: 'utf8', env });
  return { ok: r.status === 0, status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

/** The packages an install put in node_modules (npm's hidden lockfile), by name. */
function installed(app: string): string[] {
  const lock = JSON.parse(fs.readFileSync(path.join(app, 'node_modules', '.package-lock.json'), 'utf8')) as { packages: Record<string, unknown> };
  return Object.keys(lock.packages).filter((k) => k.startsWith('node_modules/')).map((k) => k.replace(/^.*node_modules\//, ''));
}

function emptyProject(name: string): string {
  const app = path.join(tmp, name);
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: `gk-${name}`, version: '1.0.0', private: true }));
  return app;
}

const kernelCode = `
    const logits = gk.Tensor.from(new Float32Array([0, 1, 2, 3, 2, 1]), { shape: [2, 3] });
    gk.tokenLogProbs(logits, [2, 0], { entropy: true }).then((r) => {
      const lp = Array.from(r.logp.data);
      const ref = [2 - Math.log(1 + Math.E + Math.E ** 2), 3 - Math.log(Math.E ** 3 + Math.E ** 2 + Math.E)];
      const ok = lp.every((x, i) => Math.abs(x - ref[i]) < 1e-5);
      console.log(ok ? 'OK' : 'BAD ' + lp.join(','));
    });`;

function kernelsRun(t: Test, app: string) {
  fs.writeFileSync(path.join(app, 'cjs.js'), `const gk = require('grpo-kernels');${kernelCode}`);
  fs.writeFileSync(path.join(app, 'esm.mjs'), `import * as gk from 'grpo-kernels';${kernelCode}`);
  fs.writeFileSync(path.join(app, 'named.mjs'), `import { tokenLogProbs, Tensor } from 'grpo-kernels'; console.log(typeof tokenLogProbs === 'function' && typeof Tensor === 'function' ? 'OK' : 'BAD');`);
  for (const f of ['cjs.js', 'esm.mjs', 'named.mjs']) {
    const r = sh(process.execPath, [f], app);
    t.ok(r.ok, r.out);
    t.match(r.out.trim(), /^OK/, `${path.basename(app)}: ${f} runs tokenLogProbs through the public entry point`);
  }
}

// A strict consumer: no Node types, no DOM lib, declaration files checked.
const strictTs = `import { Tensor, tokenLogProbs, groupAdvantages, sampleTokens, type BackendInfo } from 'grpo-kernels';
export async function main(): Promise<number[]> {
  const logits = Tensor.from(new Float32Array(12), { shape: [3, 4] });
  const bf16 = Tensor.from(new Uint16Array(12), { dtype: 'bfloat16', shape: [3, 4] });
  const r = await tokenLogProbs(logits, [0, 1, 2]);
  const lp: Float32Array = r.logp.data;              // float32 results are Float32Array, no cast
  const bits: Uint16Array = bf16.data;
  const s = await sampleTokens(logits, { seed: 1 });
  const ids: Int32Array = s.tokens.data;
  const { advantages } = await groupAdvantages([1, 0, 1, 1], { groupSize: 2 });
  const adv: Float32Array = advantages.data;
  const info: BackendInfo | undefined = undefined;
  void info; void bits; void ids;
  return [...Array.from(lp), ...Array.from(adv)];
}
`;
const tsconfig = {
  compilerOptions: { strict: true, skipLibCheck: false, noEmit: true, target: 'es2022', lib: ['es2022'], types: [], module: 'nodenext', moduleResolution: 'nodenext' },
  files: ['strict.ts'],
};

t.test('prepack refuses missing or stale prebuilds, with what to do', async (t) => {
  const copy = path.join(tmp, 'pack-check');
  for (const rel of ['scripts', 'native', 'CMakeLists.txt', 'binding.gyp', 'package.json'])
    fs.cpSync(path.join(root, rel), path.join(copy, rel), { recursive: true });
  const check = () => sh(process.execPath, [path.join(copy, 'scripts', 'check-prebuilds.js')], copy);
  let r = check();
  t.equal(r.status, 1, 'no prebuilds: fails');
  t.match(r.out, /no prebuilt binary in prebuilds\/\. Run `npm run prebuilds` first/);
  const dir = path.join(copy, 'prebuilds', 'linux-x64');
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'node.napi.node'), 'x');
  r = check();
  t.equal(r.status, 1);
  t.match(r.out, /has no node\.napi\.json.*Run `npm run prebuilds`/);
  const { sourceHash } = require(path.join(copy, 'scripts', 'prebuild-stamp.js')) as { sourceHash(): string };
  fs.writeFileSync(path.join(dir, 'node.napi.json'), JSON.stringify({ sources: sourceHash(), bytes: 1, cuda: true }));
  r = check();
  t.equal(r.status, 0, r.out);
  t.match(r.out, /packing prebuilds\/linux-x64\/node\.napi\.node \(1 bytes, CUDA compiled in\)/);
  fs.appendFileSync(path.join(copy, 'native', 'core', 'common.h'), '\n// changed\n');
  r = check();
  t.equal(r.status, 1, 'a native source changed: stale');
  t.match(r.out, /node\.napi\.node is stale: .*Run `npm run prebuilds`/);
});

t.test('npm run prebuilds, npm pack (no compile), install into empty projects', async (t) => {
  const pre = sh(process.execPath, [path.join(root, 'scripts', 'prebuild.js')], root);
  t.ok(pre.ok, `scripts/prebuild.js (npm run prebuilds): ${pre.out.slice(-2000)}`);
  const prebuilt = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'node.napi.node');
  t.ok(fs.existsSync(prebuilt), prebuilt);
  const stamp = JSON.parse(fs.readFileSync(prebuilt.replace(/\.node$/, '.json'), 'utf8'));
  t.equal(stamp.bytes, fs.statSync(prebuilt).size, 'the stamp describes the binary');
  const nm = spawnSync('nm', ['--debug-syms', prebuilt], { encoding: 'utf8' });
  if (nm.status === 0) t.notMatch(nm.stdout, /\.debug_info|\bN \.debug/, 'the prebuild is stripped of debug symbols');
  const before = fs.statSync(prebuilt).mtimeMs;

  const pack = sh(npm, ['pack', '--pack-destination', tmp], root);
  t.ok(pack.ok, pack.out.slice(-2000));
  t.match(pack.out, /packing prebuilds\/linux-x64\/node\.napi\.node/, 'prepack checked the prebuild');
  t.notMatch(pack.out, /cmake-js|Building CXX|node-gyp|\[grpo-kernels\] .*cmake/, 'npm pack compiled nothing');
  t.equal(fs.statSync(prebuilt).mtimeMs, before, 'npm pack left the prebuild as it was');
  const tarball = fs.readdirSync(tmp).find((f) => f.endsWith('.tgz'));
  t.ok(tarball, 'a tarball was written');
  if (!tarball) return;
  const tgz = path.join(tmp, tarball);

  // With the optional dependencies (npm's default): charts, progress bar, build tools.
  const full = emptyProject('full');
  const inst = sh(npm, ['install', '--prefer-offline', tgz], full);
  t.ok(inst.ok, inst.out.slice(-3000));
  const all = installed(full);
  for (const p of ['grpo-kernels', 'node-gyp-build', 'vega', 'vega-lite', 'cli-progress', 'cmake-js', 'node-addon-api'])
    t.ok(all.includes(p), `default install has ${p}`);
  kernelsRun(t, full);
  t.ok(fs.existsSync(path.join(full, 'node_modules', 'grpo-kernels', 'dist', 'lib', 'index.d.ts')), 'type declarations ship');
  const bin = path.join('node_modules', '.bin', 'grpo-kernels');
  const cli = sh(process.execPath, [bin, 'info'], full);
  t.ok(cli.ok, cli.out);
  t.match(cli.out, /backend: +cpu/, 'the CLI runs from the installed package');
  t.match(cli.out, /^driver: +\S/m, 'info reports the driver');
  const demo = sh(process.execPath, [bin, 'demo', '--out', 'cat.svg'], full);
  t.ok(demo.ok, demo.out.slice(-2000));
  t.match(demo.out, /reward curve: cat\.svg/);
  t.match(fs.readFileSync(path.join(full, 'cat.svg'), 'utf8'), /<svg/, 'the default install draws the chart');

  // Strict TypeScript against the installed declarations: TypeScript 5 (this repository's).
  fs.writeFileSync(path.join(full, 'strict.ts'), strictTs);
  fs.writeFileSync(path.join(full, 'tsconfig.json'), JSON.stringify(tsconfig));
  const tsc5 = sh(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', full, '--listFiles'], full);
  t.ok(tsc5.ok, `tsc ${require('typescript/package.json').version}: ${tsc5.out.slice(-3000)}`);
  t.match(tsc5.out, /node_modules\/grpo-kernels\/dist\/lib\/tensor\.d\.ts/, 'the package declarations were checked');
  t.notMatch(tsc5.out, /@types\/node/, 'without Node types');
  // ...and it is really checked: a wrong array type is an error.
  fs.writeFileSync(path.join(full, 'strict.ts'), strictTs.replace('const lp: Float32Array = r.logp.data;', 'const lp: Int32Array = r.logp.data;'));
  const wrong = sh(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', full], full);
  t.equal(wrong.status, 2, 'assigning a float32 result to Int32Array fails to compile');
  t.match(wrong.out, /error TS2322: Type 'Float32Array.*' is not assignable to type 'Int32Array/);
  fs.writeFileSync(path.join(full, 'strict.ts'), strictTs);
  // TypeScript 7 (the native compiler), from the registry (or npm's cache).
  const ts7dir = emptyProject('ts7');
  const ts7 = sh(npm, ['install', '--prefer-offline', 'typescript@7'], ts7dir);
  t.ok(ts7.ok, `npm install typescript@7: ${ts7.out.slice(-1500)}`);
  const tsc7 = plainNode([path.join(ts7dir, 'node_modules', 'typescript', 'bin', 'tsc'), '--version'], full);
  t.match(tsc7.out, /Version 7\./, 'TypeScript 7');
  const tsc7run = plainNode([path.join(ts7dir, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', full], full);
  t.ok(tsc7run.ok, `tsc 7: ${tsc7run.out.slice(-3000)}`);

  // Without them: only what loading and running the kernels needs.
  const lean = emptyProject('lean');
  const li = sh(npm, ['install', '--prefer-offline', '--omit=optional', tgz], lean);
  t.ok(li.ok, li.out.slice(-3000));
  t.same(installed(lean).sort(), ['grpo-kernels', 'node-gyp-build'], '--omit=optional installs the package and node-gyp-build only');
  kernelsRun(t, lean);
  const ld = sh(process.execPath, [bin, 'demo', '--out', 'cat.svg'], lean);
  t.ok(ld.ok, `the demo runs without the optional packages: ${ld.out.slice(-2000)}`);
  t.match(ld.out, /every start cell now reaches the meat/);
  t.match(ld.out, /reward curve: not drawn: drawing a chart needs the optional package 'vega'.*run `npm install vega vega-lite`/);
  t.notOk(fs.existsSync(path.join(lean, 'cat.svg')));
});
