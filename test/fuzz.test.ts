// The fuzzer: test/fuzz/run.ts in a child process under a memory limit, at least 10,000 seeded
// calls of the public API and the raw addon per run. It passes only with no crash (the child
// exits 0, no signal), no hang (no call unsettled after 30 s, no 45 s without output) and every
// rejection coded. The seed is printed; GK_FUZZ_SEED=<seed> reproduces a run (GK_FUZZ_CALLS
// changes the number of calls).
//
// Memory limit: `ulimit -v` of GK_FUZZ_ULIMIT_KB (default 8 GiB; 0 turns it off, as the
// AddressSanitizer run must, its shadow memory being a huge reservation) plus a cap on the
// addon's scratch (GK_MAX_SCRATCH_BYTES, 64 MiB: a few calls with one very wide row must fail
// with GK_OOM) and on the V8 heap (1 GiB).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { freshSeed } from './reference/random';

const root = path.resolve(__dirname, '..');
const seed = process.env.GK_FUZZ_SEED ? Number(process.env.GK_FUZZ_SEED) : freshSeed();
const calls = Number(process.env.GK_FUZZ_CALLS ?? 10000);
const ulimitKb = Number(process.env.GK_FUZZ_ULIMIT_KB ?? 8 * 2 ** 20);
const SILENCE_MS = 45_000;

interface Summary {
  seed: number;
  calls: number;
  byCode: Record<string, number>;
  bad: { call: string; error: string }[];
  hang?: string;
  fatal?: string;
  ms?: number;
  rssMiB?: number;
}

t.test(`fuzz: ${calls} calls, seed ${seed}`, { timeout: 20 * 60_000 }, async (t) => {
  t.comment(`fuzz seed ${seed} (reproduce with GK_FUZZ_SEED=${seed})`);
  const trace = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'gk-fuzz-')), 'trace.txt');
  const node = [process.execPath, ...process.execArgv, '--expose-gc', '--max-old-space-size=1024', path.join(root, 'test/fuzz/run.ts')]
    .map((a) => `'${a.replace(/'/g, `'\\''`)}'`)
    .join(' ');
  const script = `${ulimitKb > 0 ? `ulimit -v ${ulimitKb} && ` : ''}exec ${node}`;
  const env = {
    ...process.env, GK_FUZZ_SEED: String(seed), GK_FUZZ_CALLS: String(calls), GK_FUZZ_TRACE: trace,
    GK_MAX_SCRATCH_BYTES: String(64 * 2 ** 20),
  };
  const child = spawn('bash', ['-c', script], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  let last = Date.now();
  let silent = false;
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
    last = Date.now();
  });
  child.stderr.on('data', (d: Buffer) => {
    err += d.toString();
    if (err.length > 1e6) err = err.slice(-5e5);
  });
  const watchdog = setInterval(() => {
    if (Date.now() - last > SILENCE_MS) {
      silent = true;
      child.kill('SIGKILL');
    }
  }, 1000);
  const [status, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('close', (c, s) => resolve([c, s])));
  clearInterval(watchdog);

  const lastCalls = fs.existsSync(trace) ? fs.readFileSync(trace, 'utf8').trim().split('\n').slice(-4).join('\n  ') : '';
  const line = out.split('\n').find((l) => l.startsWith('GKFUZZ '));
  const summary = line ? (JSON.parse(line.slice(7)) as Summary) : undefined;
  const where = `seed ${seed}; last calls started:\n  ${lastCalls}\n${err.slice(-3000)}`;

  const diag = (ok: boolean) => (ok ? '' : ` (${where})`);
  t.notOk(silent, `no hang: output at least every ${SILENCE_MS / 1000} s${diag(!silent)}`);
  t.equal(signal, null, `no crash: the child was not killed by a signal${diag(signal === null)}`);
  t.equal(status, 0, `the child exited 0${diag(status === 0)}`);
  t.ok(summary, 'the child printed its summary');
  if (!summary) return;
  t.notOk(summary.hang, `no call took more than 30 s (${summary.hang ?? ''})`);
  t.notOk(summary.fatal, `the harness did not fail (${summary.fatal ?? ''})`);
  t.ok(summary.calls >= calls, `${summary.calls} calls made`);
  t.same(summary.bad, [], 'every rejection is coded (GrpoKernelsError with a GK_ code; raw addon errors carry a GK_ code)');
  t.notOk(summary.byCode.UNCODED, 'no uncoded rejection');
  const codes = Object.entries(summary.byCode).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ');
  t.comment(`fuzz outcomes (${summary.calls} calls in ${((summary.ms ?? 0) / 1000).toFixed(1)} s, RSS ${summary.rssMiB} MiB): ${codes}`);
  // The run must reach valid calls and each kind of refusal, or it tests nothing.
  t.ok((summary.byCode.ok ?? 0) > calls / 10, `at least 10% of the calls succeed (${summary.byCode.ok})`);
  for (const code of ['GK_SHAPE', 'GK_DTYPE', 'GK_INVALID_ARG', 'GK_TARGET_RANGE', 'GK_DISPOSED', 'GK_NONFINITE', 'GK_OOM'])
    t.ok((summary.byCode[code] ?? 0) > 0, `some calls are refused with ${code}`);
});
