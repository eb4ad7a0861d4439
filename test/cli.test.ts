import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const bin = path.resolve(__dirname, '..', 'bin', 'grpo-kernels.js');
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

t.test('info reports versions, the backend and why CUDA is not used', async (t) => {
  const r = run('info', '--json');
  t.equal(r.status, 0, r.stderr);
  const i = JSON.parse(r.stdout);
  t.equal(i.packageVersion, require('../package.json').version);
  t.equal(i.addonVersion, i.packageVersion, 'the addon was built from this package version');
  t.equal(i.backend, 'cpu');
  t.ok(i.cpu.threads >= 1);
  t.type(i.cuda.compiled, 'boolean');
  t.ok(i.cuda.used || i.cuda.reason.length > 0, `reason: ${i.cuda.reason}`);
  const text = run('info');
  t.equal(text.status, 0);
  t.match(text.stdout, /backend: +cpu/);
  t.match(text.stdout, /cuda used: /);
});

t.test('selftest passes every case on the CPU and prints a table', async (t) => {
  const r = run('selftest', '--quick', '--seed', '12345');
  t.equal(r.status, 0, r.stdout.split('\n').filter((l) => l.includes('FAIL')).join('\n'));
  t.match(r.stdout, /seed 12345/);
  t.match(r.stdout, /tokenLogProbs .* pass/);
  t.match(r.stdout, /grpoLoss\(logits\) .* pass/);
  t.match(r.stdout, /(\d+)\/\1 cases passed/);
  const j = run('selftest', '--quick', '--json', '--seed', '7');
  const parsed = JSON.parse(j.stdout);
  t.equal(parsed.failed, 0);
  t.ok(parsed.cases > 40, `${parsed.cases} cases`);
});

t.test('bad commands and options exit 2 with a message', async (t) => {
  const u = run('frobnicate');
  t.equal(u.status, 2);
  t.match(u.stderr, /unknown command 'frobnicate'/);
  const s = run('selftest', '--seed', 'abc');
  t.equal(s.status, 2);
  t.match(s.stderr, /GK_INVALID_ARG.*--seed must be an integer/);
  const o = run('info', '--bogus');
  t.equal(o.status, 2);
  const d = run('selftest', '--device', 'tpu');
  t.equal(d.status, 2);
  t.match(d.stderr, /device must be 'auto', 'cpu' or 'cuda'/);
  const h = run('help');
  t.equal(h.status, 0);
  t.match(h.stdout, /grpo-kernels selftest/);
});

t.test('selftest --device cuda fails clearly where CUDA cannot be used', async (t) => {
  const info = JSON.parse(run('info', '--json').stdout);
  if (info.cuda.used) {
    const r = run('selftest', '--device', 'cuda', '--quick');
    t.equal(r.status, 0);
    return;
  }
  const r = run('selftest', '--device', 'cuda');
  t.equal(r.status, 2);
  t.match(r.stderr, /GK_DEVICE.*device 'cuda' is not available/);
});

t.test('demo (the cat) runs, draws the policy and writes its chart', async (t) => {
  const dir = require('node:fs').mkdtempSync(path.join(require('node:os').tmpdir(), 'gk-demo-'));
  const out = path.join(dir, 'cat.svg');
  const r = run('demo', '--steps', '40', '--out', out);
  t.equal(r.status, 0, r.stderr);
  t.match(r.stdout, /every start cell now reaches the meat by a shortest path/);
  t.match(r.stdout, /🍖/);
  t.ok(require('node:fs').existsSync(out), 'the chart is written where --out says');
  const bad = run('demo', 'chess');
  t.equal(bad.status, 2);
  t.match(bad.stderr, /unknown demo 'chess'/);
});
