// Packs the package, installs the tarball into an empty project, and runs tokenLogProbs through
// the public entry point with both require and import.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

function sh(cmd: string, args: string[], cwd: string) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, npm_config_audit: 'false', npm_config_fund: 'false' } });
  return { ok: r.status === 0, out: `${r.stdout}\n${r.stderr}` };
}

t.test('npm pack → install into an empty project → import and require', async (t) => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gk-consumer-'));
  t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));
  const pre = sh(process.execPath, [path.join(root, 'scripts', 'prebuild.js')], root);
  t.ok(pre.ok, 'scripts/prebuild.js leaves a prebuilt binary');
  const prebuilt = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`, 'node.napi.node');
  t.ok(fs.existsSync(prebuilt), prebuilt);
  const nm = spawnSync('nm', ['--debug-syms', prebuilt], { encoding: 'utf8' });
  if (nm.status === 0) t.notMatch(nm.stdout, /\.debug_info|\bN \.debug/, 'the prebuild is stripped of debug symbols');

  const pack = sh(npm, ['pack', '--pack-destination', tmp, '--silent'], root);
  t.ok(pack.ok, pack.out.slice(-2000));
  const tarball = fs.readdirSync(tmp).find((f) => f.endsWith('.tgz'));
  t.ok(tarball, 'a tarball was written');
  if (!tarball) return;
  const app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'gk-consumer', version: '1.0.0', private: true }));
  const inst = sh(npm, ['install', '--prefer-offline', '--no-audit', '--no-fund', path.join(tmp, tarball)], app);
  t.ok(inst.ok, inst.out.slice(-3000));
  t.match(inst.out, /using the prebuilt native addon|/, 'install script ran');

  const code = `
    const logits = gk.Tensor.from(new Float32Array([0, 1, 2, 3, 2, 1]), { shape: [2, 3] });
    gk.tokenLogProbs(logits, [2, 0], { entropy: true }).then((r) => {
      const lp = Array.from(r.logp.data);
      const ref = [2 - Math.log(1 + Math.E + Math.E ** 2), 3 - Math.log(Math.E ** 3 + Math.E ** 2 + Math.E)];
      const ok = lp.every((x, i) => Math.abs(x - ref[i]) < 1e-5);
      console.log(ok ? 'OK' : 'BAD ' + lp.join(','));
    });`;
  fs.writeFileSync(path.join(app, 'cjs.js'), `const gk = require('grpo-kernels');${code}`);
  fs.writeFileSync(path.join(app, 'esm.mjs'), `import * as gk from 'grpo-kernels';${code}`);
  fs.writeFileSync(path.join(app, 'named.mjs'), `import { tokenLogProbs, Tensor } from 'grpo-kernels'; console.log(typeof tokenLogProbs === 'function' && typeof Tensor === 'function' ? 'OK' : 'BAD');`);
  for (const f of ['cjs.js', 'esm.mjs', 'named.mjs']) {
    const r = sh(process.execPath, [f], app);
    t.ok(r.ok, r.out);
    t.match(r.out.trim(), /^OK/, `${f} runs tokenLogProbs through the public entry point`);
  }
  const types = path.join(app, 'node_modules', 'grpo-kernels', 'dist', 'lib', 'index.d.ts');
  t.ok(fs.existsSync(types), 'type declarations ship');
  const cli = sh(process.execPath, [path.join(app, 'node_modules', '.bin', 'grpo-kernels'), 'info'], app);
  t.ok(cli.ok, cli.out);
  t.match(cli.out, /backend: +cpu/, 'the CLI runs from the installed package');
});
