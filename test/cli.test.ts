import t from 'tap';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { driverCheck, formatCudaVersion } from '../lib/device';

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
  // The driver line: its version and whether it suffices, or why it is not checked.
  t.type(i.cuda.driver.summary, 'string');
  if (i.cuda.compiled && !i.cuda.emulated) {
    t.equal(i.cuda.driver.required, i.cuda.runtimeVersion, 'the runtime linked in sets the minimum');
    t.equal(i.cuda.driver.sufficient, i.cuda.driverVersion >= i.cuda.runtimeVersion);
  } else t.equal(i.cuda.driver.sufficient, undefined);
  if (!i.cuda.emulated) t.match(text.stdout, /driver: +\S/);
});

t.test('driverCheck says whether a driver runs the compiled-in CUDA runtime', async (t) => {
  t.equal(formatCudaVersion(13000), '13.0');
  t.equal(formatCudaVersion(12080), '12.8');
  const ok = driverCheck(13000, 13010);
  t.equal(ok.sufficient, true);
  t.match(ok.summary, /13\.1: sufficient \(needs 13\.0 or newer\)/);
  const old = driverCheck(13000, 12080);
  t.equal(old.sufficient, false);
  t.match(old.summary, /12\.8: TOO OLD.*CUDA 13\.0 \(an R580 driver or newer\).*update the NVIDIA driver/);
  const none = driverCheck(13000, 0);
  t.equal(none.sufficient, false);
  t.match(none.summary, /none found/);
  const cpu = driverCheck(0, 0);
  t.equal(cpu.sufficient, undefined);
  t.match(cpu.summary, /CPU-only build/);
});

t.test('--version / -v print the package version', async (t) => {
  for (const flag of ['--version', '-v']) {
    const r = run(flag);
    t.equal(r.status, 0);
    t.equal(r.stdout.trim(), require('../package.json').version);
  }
  t.equal(run('--version', 'x').status, 2, 'extra words are refused');
});

t.test('usage errors: a suggestion, the usage line, exit 2, nothing run', async (t) => {
  const cases: [string[], RegExp, RegExp][] = [
    [['selftset'], /unknown command 'selftset' \(did you mean 'selftest'\?\)/, /usage: grpo-kernels <info\|selftest\|demo\|help>/],
    [['--verison'], /unknown option '--verison' \(did you mean '--version'\?\)/, /usage: /],
    [['demo', '--stesp', '3'], /unknown option '--stesp' for 'demo' \(did you mean '--steps'\?\)/, /usage: grpo-kernels demo \[cat\|arithmetic\]/],
    [['info', '--jsn'], /unknown option '--jsn' for 'info' \(did you mean '--json'\?\)/, /usage: grpo-kernels info \[--json\]/],
    [['info', 'extra'], /'info' takes no arguments; unexpected 'extra'/, /usage: grpo-kernels info/],
    [['selftest', 'now'], /'selftest' takes no arguments; unexpected 'now'/, /usage: grpo-kernels selftest/],
    [['demo', 'cat', 'extra'], /'demo' takes at most one argument; unexpected 'extra'/, /usage: grpo-kernels demo/],
    [['demo', 'arithmtic'], /unknown demo 'arithmtic' \(did you mean 'arithmetic'\?\)/, /usage: grpo-kernels demo/],
    [['demo', '--steps', '0'], /--steps must be a positive integer, got '0'/, /usage: grpo-kernels demo/],
    [['demo', '--steps', '2.5'], /--steps must be a positive integer, got '2\.5'/, /usage: /],
    [['demo', '--steps', ''], /--steps must be a positive integer, got ''/, /usage: /],
    [['demo', '--seed=-1'], /--seed must be a non-negative integer, got '-1'/, /usage: /],
    [['demo', '--steps'], /option '--steps' needs a value/, /usage: /],
    [['demo', '--out', 'x.png'], /--out: the chart is written as SVG, so its file name must end in \.svg; got 'x\.png' \(\.png is not supported/, /usage: /],
    [['demo', 'arithmetic', '--out', 'chart'], /must end in \.svg; got 'chart'/, /usage: /],
    [['demo', '--device', 'gpu'], /--device must be 'auto', 'cpu' or 'cuda', got 'gpu'/, /usage: /],
  ];
  for (const [args, msg, usage] of cases) {
    const r = run(...args);
    t.equal(r.status, 2, `${args.join(' ')}: exit 2`);
    t.match(r.stderr, msg, args.join(' '));
    t.match(r.stderr, usage, `${args.join(' ')}: usage line`);
    t.equal(r.stdout, '', `${args.join(' ')}: nothing ran`);
  }
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
  t.equal(r.status, 3, 'exit 3: the command could not run');
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
  t.notOk(require('node:fs').existsSync(path.join(dir, 'x.png')));
});
