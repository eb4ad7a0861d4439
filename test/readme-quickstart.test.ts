// The README's "Quick start" block, as written: extracted from README.md at test time, compiled
// with TypeScript under strict (skipLibCheck false, lib es2022, no Node types) against this
// package as a consumer sees it (node_modules/grpo-kernels -> the checkout, its dist/ and
// declaration files), then run; its printed loss, KL and gradient norm are checked.
import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const root = path.resolve(__dirname, '..');
const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');

/** The first ```ts block under `## <heading>`. */
export function tsBlockUnder(text: string, heading: string): string {
  const lines = text.split('\n');
  const start = lines.findIndex((l) => l.trim() === `## ${heading}`);
  if (start < 0) throw new Error(`README.md has no "## ${heading}" section`);
  let end = lines.findIndex((l, i) => i > start && /^## /.test(l));
  if (end < 0) end = lines.length;
  const open = lines.findIndex((l, i) => i > start && i < end && /^```(ts|typescript)\s*$/.test(l.trim()));
  if (open < 0) throw new Error(`the "## ${heading}" section has no \`\`\`ts block`);
  const close = lines.findIndex((l, i) => i > open && l.trim() === '```');
  if (close < 0 || close > end) throw new Error(`the \`\`\`ts block of "## ${heading}" is not closed`);
  return lines.slice(open + 1, close).join('\n') + '\n';
}

t.test('the README quick start compiles under strict and runs', async (t) => {
  const code = tsBlockUnder(readme, 'Quick start');
  for (const step of ['sampleTokens', 'tokenLogProbs', 'groupAdvantages', 'grpoLoss', 'beta', 'gradLogits'])
    t.match(code, new RegExp(`\\b${step}\\b`), `the quick start shows ${step}`);
  t.notMatch(code, /\bas (any|unknown|Float32Array)\b/, 'no casts');
  t.ok(fs.existsSync(path.join(root, 'dist', 'lib', 'index.d.ts')), 'dist/ is built (npm test builds it first)');

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gk-quickstart-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'node_modules'));
  fs.symlinkSync(root, path.join(dir, 'node_modules', 'grpo-kernels'), 'dir');
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'quickstart', private: true, type: 'module' }));
  fs.writeFileSync(path.join(dir, 'quickstart.ts'), code);
  // The block prints with console.log; without Node's types or the DOM lib (so that the package's
  // declarations are checked without them) only console needs declaring.
  fs.writeFileSync(path.join(dir, 'console.d.ts'), 'declare const console: { log(...data: unknown[]): void };\n');
  fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      strict: true, skipLibCheck: false, target: 'es2022', lib: ['es2022'], types: [],
      module: 'nodenext', moduleResolution: 'nodenext', outDir: 'out', noUncheckedIndexedAccess: true,
    },
    files: ['quickstart.ts', 'console.d.ts'],
  }));
  const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', dir], { encoding: 'utf8' });
  t.equal(tsc.status, 0, `tsc: ${tsc.stdout}${tsc.stderr}`);
  const run = spawnSync(process.execPath, [path.join(dir, 'out', 'quickstart.js')], { cwd: dir, encoding: 'utf8' });
  t.equal(run.status, 0, run.stderr);
  const m = /^loss (\S+), KL (\S+), \|grad\| (\S+)$/m.exec(run.stdout);
  t.ok(m, `prints the loss, KL and gradient norm: ${run.stdout}`);
  if (!m) return;
  const [loss, kl, grad] = [Number(m[1]), Number(m[2]), Number(m[3])];
  t.ok(Number.isFinite(loss), `loss ${loss} is finite`);
  t.ok(kl > 0 && Number.isFinite(kl), `KL ${kl} > 0 (the reference differs from the policy)`);
  t.ok(grad > 0 && Number.isFinite(grad), `gradient norm ${grad} > 0`);
});
