// The command line: `grpo-kernels info`, `grpo-kernels selftest`.
import { parseArgs } from 'node:util';
import { runAll, type CaseResult } from '../test/reference/cases';
import { freshSeed } from '../test/reference/random';
import { backendInfo, Device, resolveDevice, setDefaultDevice, type DeviceRequest } from './device';
import { runDeviceChecks } from '../test/reference/device-cases';
import { runCrossBackendChecks } from '../test/reference/cross-cases';
import { didYouMean, GrpoKernelsError } from './errors';
import { packageVersion } from './native';
import { checkChartFile } from './demos/chart';

const HELP = `grpo-kernels: fused GRPO kernels for Node.js

Usage:
  grpo-kernels info [--json]
      Package and addon versions, the backend the ops run on, the devices found, and why
      CUDA is not used when it is not.
  grpo-kernels selftest [--device auto|cpu|cuda] [--seed N] [--quick] [--json]
      Runs every op's cases on fresh random data against the float64 reference with the
      spec's tolerances; prints a pass/fail table; exits 1 on any failure.
  grpo-kernels demo [cat|arithmetic] [--steps N] [--seed N] [--out FILE.svg] [--device auto|cpu|cuda]
      Demo 1 (default, 'cat'): a cat learns by GRPO to reach the meat in a house; draws the
      learned policy and writes a reward-curve chart. Demo 2 ('arithmetic'): R1-Zero in
      miniature, a tiny language model learns a+b= with a format and an accuracy reward.
  grpo-kernels help | --help          this text;  grpo-kernels --version | -v   the version

Exit codes: 0 success, 1 a check failed (selftest case, demo goal), 2 usage error, 3 could not run.
`;

function out(s: string): void {
  process.stdout.write(s + '\n');
}

function info(json: boolean): number {
  const i = backendInfo();
  if (json) {
    out(JSON.stringify(i, null, 2));
    return 0;
  }
  out(`grpo-kernels ${i.packageVersion} (addon ${i.addonVersion}, Node-API ${process.versions.napi}, node ${process.version})`);
  out(`backend:   ${i.backend}`);
  out(`cpu:       ${i.cpu.threads} threads, ${i.cpu.simd}`);
  if (i.cuda.emulated) out('cuda:      EMULATED on the CPU (GK_CUDA=emu build: the CUDA sources run under native/emu, no GPU is used)');
  else out(`cuda:      ${i.cuda.compiled ? `compiled in (runtime ${fmtCuda(i.cuda.runtimeVersion)}, driver ${i.cuda.driverVersion ? fmtCuda(i.cuda.driverVersion) : 'none'})` : 'not compiled in'}`);
  if (!i.cuda.emulated) out(`driver:    ${i.cuda.driver.summary}`);
  for (const d of i.cuda.devices) out(`  device ${d.index}: ${d.name} (sm_${d.computeCapability.replace('.', '')}, ${(d.memoryBytes / 2 ** 30).toFixed(1)} GiB)`);
  out(`cuda used: ${i.cuda.used ? 'yes' : `no: ${i.cuda.reason}`}`);
  return 0;
}

function fmtCuda(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}

function worst(r: CaseResult): { label: string; ratio: number; detail?: string } {
  let w = { label: '', ratio: 0, detail: undefined as string | undefined };
  for (const c of r.checks) {
    const ratio = c.pass ? (c.tol > 0 ? c.err / c.tol : 0) : Infinity;
    if (ratio >= w.ratio) w = { label: c.label, ratio, detail: c.pass ? undefined : `${c.label}: err ${c.err} > ${c.tol}${c.detail ? ` (${c.detail})` : ''}` };
  }
  return w;
}

async function selftest(device: DeviceRequest, seed: number, quick: boolean, json: boolean): Promise<number> {
  const backend = resolveDevice(device);
  const t0 = Date.now();
  if (!json) {
    out(`grpo-kernels selftest: backend ${backend}, seed ${seed}${quick ? ', quick' : ''} (rerun with --seed ${seed})`);
    out(`${'op'.padEnd(22)} ${'case'.padEnd(64)} ${'worst err/tol'.padStart(13)}  result`);
  }
  const show = (r: CaseResult) => {
    if (json) return;
    const w = worst(r);
    const name = r.name.length > 64 ? r.name.slice(0, 63) + '…' : r.name;
    out(`${r.op.padEnd(22)} ${name.padEnd(64)} ${(Number.isFinite(w.ratio) ? w.ratio.toFixed(3) : 'inf').padStart(13)}  ${r.pass ? 'pass' : `FAIL  ${w.detail}`}`);
  };
  // On a GPU every op case runs there (host inputs uploaded, results read back), then the
  // device runtime's own checks, then every op on the CPU backend and on the GPU with the same
  // inputs, compared (op names ending in '=cpu'; test/reference/cross-cases.ts).
  const dev = backend === 'cuda' ? setDefaultDevice(Device.open('cuda')) : undefined;
  if (dev && !json) out(`device: ${dev.toString()}`);
  const results = await runAll(seed, !quick, show);
  if (dev) {
    results.push(...(await runDeviceChecks(dev, seed, show)));
    results.push(...(await runCrossBackendChecks(dev, seed, !quick, show)));
  }
  const failed = results.filter((r) => !r.pass);
  const checks = results.reduce((s, r) => s + r.checks.length, 0);
  if (json) out(JSON.stringify({ backend, seed, cases: results.length, failed: failed.length, results }, null, 2));
  else out(`\n${results.length - failed.length}/${results.length} cases passed (${checks} checks) on ${backend} in ${((Date.now() - t0) / 1000).toFixed(1)} s${failed.length ? `; ${failed.length} FAILED` : ''}`);
  return failed.length ? 1 : 0;
}

/** A usage error of the command line: exit code 2, with the command's usage line. */
class UsageError extends GrpoKernelsError {
  constructor(message: string, readonly usage: string) {
    super('GK_INVALID_ARG', message);
  }
}

const USAGE: Record<string, string> = {
  info: 'grpo-kernels info [--json]',
  selftest: 'grpo-kernels selftest [--device auto|cpu|cuda] [--seed N] [--quick] [--json]',
  demo: 'grpo-kernels demo [cat|arithmetic] [--steps N] [--seed N] [--out FILE.svg] [--device auto|cpu|cuda]',
  help: 'grpo-kernels help | --help | --version',
};
const COMMANDS = ['info', 'selftest', 'demo', 'help'];
const FLAGS: Record<string, Record<string, { type: 'string' | 'boolean' }>> = {
  info: { json: { type: 'boolean' } },
  selftest: { device: { type: 'string' }, seed: { type: 'string' }, quick: { type: 'boolean' }, json: { type: 'boolean' } },
  demo: { steps: { type: 'string' }, seed: { type: 'string' }, out: { type: 'string' }, device: { type: 'string' } },
  help: {},
};
const POSITIONALS: Record<string, readonly string[]> = { info: [], selftest: [], demo: ['cat', 'arithmetic'], help: [] };

/** Parses one command's flags strictly: unknown flags and extra words are usage errors with a suggestion. */
function parseCommand(cmd: string, args: string[]): { values: Record<string, string | boolean | undefined>; positional?: string } {
  const usage = USAGE[cmd]!;
  const options = FLAGS[cmd]!;
  let parsed;
  try {
    parsed = parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (e) {
    const m = /Unknown option '(-{1,2}[^']*)'/.exec((e as Error).message);
    if (m) {
      const flag = m[1]!;
      const hint = didYouMean(flag.replace(/^-+/, ''), Object.keys(options), (s) => `'--${s}'`);
      throw new UsageError(`unknown option '${flag}' for '${cmd}'${hint}`, usage);
    }
    const v = /Option '(-{1,2}[^ ']*)[^']*' argument missing/.exec((e as Error).message);
    if (v) throw new UsageError(`option '${v[1]}' needs a value`, usage);
    throw new UsageError((e as Error).message.split('\n')[0]!, usage);
  }
  const allowed = POSITIONALS[cmd]!;
  const pos = parsed.positionals;
  if (pos.length > (allowed.length ? 1 : 0))
    throw new UsageError(`'${cmd}' takes ${allowed.length ? 'at most one argument' : 'no arguments'}; unexpected '${pos.slice(allowed.length ? 1 : 0).join(' ')}'`, usage);
  if (pos[0] !== undefined && !allowed.includes(pos[0]))
    throw new UsageError(`unknown demo '${pos[0]}'${didYouMean(pos[0], allowed)}; expected 'cat' or 'arithmetic'`, usage);
  return { values: parsed.values as Record<string, string | boolean | undefined>, positional: pos[0] };
}

function intOption(cmd: string, name: string, v: string | boolean | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (typeof v !== 'string' || v.trim() === '' || !Number.isSafeInteger(n) || n < min) {
    const what = min === 0 ? 'a non-negative integer' : min === 1 ? 'a positive integer' : 'an integer';
    throw new UsageError(`--${name} must be ${what}, got '${String(v)}'`, USAGE[cmd]!);
  }
  return n;
}

function deviceOption(cmd: string, v: string | boolean | undefined): DeviceRequest {
  const d = v === undefined ? 'auto' : String(v);
  if (d !== 'auto' && d !== 'cpu' && d !== 'cuda') throw new UsageError(`--device must be 'auto', 'cpu' or 'cuda', got '${d}'${didYouMean(d, ['auto', 'cpu', 'cuda'])}`, USAGE[cmd]!);
  return d;
}

async function demo(which: string, values: Record<string, string | boolean | undefined>): Promise<number> {
  const steps = intOption('demo', 'steps', values.steps, 1);
  const seed = intOption('demo', 'seed', values.seed, 0);
  const device = deviceOption('demo', values.device);
  const chartFile = typeof values.out === 'string' ? values.out : which === 'cat' ? 'cat-reward.svg' : 'arithmetic-rewards.svg';
  try {
    checkChartFile(chartFile);
  } catch (e) {
    throw new UsageError(`--out: ${(e as Error).message}`, USAGE.demo!);
  }
  // The demos' kernels run on the chosen device ('auto': the GPU when one is usable).
  const dev = setDefaultDevice(Device.open(device));
  if (dev.kind === 'cuda') out(`kernels on ${dev.toString()}`);
  if (which === 'cat') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { runCatDemo } = require('./demos/cat') as typeof import('./demos/cat');
    out('A cat learns, by GRPO, to reach the meat 🍖 (T bathtub −10, b broom −1, meat +100; each move discounts by 0.98).');
    const r = await runCatDemo({ ...(steps !== undefined ? { steps } : {}), ...(seed !== undefined ? { seed } : {}), chartFile });
    out(`\nThe learned policy (greedy move in every cell):\n${r.arrows}\n`);
    out(`${r.steps} GRPO steps in ${r.seconds.toFixed(1)} s; final mean reward ${r.rewardCurve.at(-1)?.toFixed(1)}`);
    out(r.failures.length === 0
      ? `every start cell now reaches the meat by a shortest path around the bathtub (first at step ${r.solvedAtStep! + 1})`
      : `${r.failures.length} start cells do not yet take a shortest bathtub-free path`);
    out(r.chartFile ? `reward curve: ${r.chartFile}` : `reward curve: not drawn: ${r.chartNote}`);
    return r.failures.length === 0 ? 0 : 1;
  }
  if (which === 'arithmetic') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { runArithmeticDemo } = require('./demos/arithmetic') as typeof import('./demos/arithmetic');
    out('R1-Zero in miniature: a tiny language model learns a+b= (cold-start SFT on the format, then GRPO with format + accuracy rewards).');
    const r = await runArithmeticDemo({ ...(steps !== undefined ? { grpoSteps: steps } : {}), ...(seed !== undefined ? { seed } : {}), chartFile });
    out(`\ncold start: ${r.sftSteps} steps in ${r.sftSeconds.toFixed(1)} s; held-out accuracy ${(100 * r.accuracyBefore).toFixed(0)}% (format ${(100 * r.formatBefore).toFixed(0)}%)`);
    out(`GRPO:       ${r.grpoSteps} steps in ${r.grpoSeconds.toFixed(1)} s; held-out accuracy ${(100 * r.accuracyAfter).toFixed(0)}% (format ${(100 * r.formatAfter).toFixed(0)}%)`);
    out(`\nheld-out samples:\n${r.samples.map((x) => `  ${x}`).join('\n')}`);
    out(r.chartFile ? `reward curves: ${r.chartFile}` : `reward curves: not drawn: ${r.chartNote}`);
    return r.accuracyAfter >= 0.9 && r.formatAfter >= 0.9 ? 0 : 1;
  }
  throw new UsageError(`unknown demo '${which}'; expected 'cat' or 'arithmetic'`, USAGE.demo!);
}

/**
 * Runs the command line. Exit codes: 0 success; 1 a check failed (a selftest case, or a demo
 * that did not reach its goal); 2 a usage error (unknown command or option, a bad value, an extra
 * argument); 3 the command could not run (no usable CUDA device for --device cuda, a missing
 * native addon, another error).
 */
export async function main(argv: string[]): Promise<number> {
  const cmd = argv[0] ?? 'help';
  try {
    if (cmd === '--version' || cmd === '-v' || cmd === 'version') {
      if (argv.length > 1) throw new UsageError(`'${cmd}' takes no arguments`, USAGE.help!);
      out(packageVersion);
      return 0;
    }
    if (cmd === 'help' || cmd === '--help' || cmd === '-h') {
      out(HELP);
      return 0;
    }
    if (!COMMANDS.includes(cmd)) {
      const flag = cmd.startsWith('-');
      throw new UsageError(`unknown ${flag ? 'option' : 'command'} '${cmd}'${didYouMean(cmd.replace(/^-+/, ''), flag ? ['version', 'help'] : [...COMMANDS, 'version'], (s) => `'${flag ? '--' : ''}${s}'`)}`,
        'grpo-kernels <info|selftest|demo|help> [options]   (grpo-kernels help: all of them)');
    }
    const args = argv.slice(1);
    if (args.includes('--help') || args.includes('-h')) {
      out(`usage: ${USAGE[cmd]}`);
      return 0;
    }
    const { values, positional } = parseCommand(cmd, args);
    switch (cmd) {
      case 'info':
        return info(values.json === true);
      case 'selftest': {
        const seed = intOption('selftest', 'seed', values.seed, Number.MIN_SAFE_INTEGER) ?? freshSeed();
        const device = deviceOption('selftest', values.device);
        return await selftest(device, seed, values.quick === true, values.json === true);
      }
      case 'demo':
        return await demo(positional ?? 'cat', values);
      default:
        out(HELP);
        return 0;
    }
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`grpo-kernels: [${e.code}] ${e.message}\nusage: ${e.usage}\n`);
      return 2;
    }
    const err = e as { code?: string; message?: string };
    process.stderr.write(`grpo-kernels: ${err.code ? `[${err.code}] ` : ''}${err.message ?? String(e)}\n`);
    return 3;
  }
}
