// The command line: `grpo-kernels info`, `grpo-kernels selftest`.
import { parseArgs } from 'node:util';
import { runAll, type CaseResult } from '../test/reference/cases';
import { freshSeed } from '../test/reference/random';
import { backendInfo, Device, resolveDevice, setDefaultDevice, type DeviceRequest } from './device';
import { runDeviceChecks } from '../test/reference/device-cases';
import { runCrossBackendChecks } from '../test/reference/cross-cases';
import { GrpoKernelsError } from './errors';

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
  grpo-kernels help
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

function intOption(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new GrpoKernelsError('GK_INVALID_ARG', `--${name} must be a non-negative integer, got '${v}'`);
  return n;
}

async function demo(which: string, values: { steps?: string; seed?: string; out?: string; device?: string }): Promise<number> {
  const steps = intOption('steps', values.steps);
  const seed = intOption('seed', values.seed);
  // The demos' kernels run on the chosen device ('auto': the GPU when one is usable).
  const dev = setDefaultDevice(Device.open((values.device ?? 'auto') as DeviceRequest));
  if (dev.kind === 'cuda') out(`kernels on ${dev.toString()}`);
  if (which === 'cat') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { runCatDemo } = require('./demos/cat') as typeof import('./demos/cat');
    out('A cat learns, by GRPO, to reach the meat 🍖 (T bathtub −10, b broom −1, meat +100; each move discounts by 0.98).');
    const r = await runCatDemo({ ...(steps !== undefined ? { steps } : {}), ...(seed !== undefined ? { seed } : {}), chartFile: values.out ?? 'cat-reward.svg' });
    out(`\nThe learned policy (greedy move in every cell):\n${r.arrows}\n`);
    out(`${r.steps} GRPO steps in ${r.seconds.toFixed(1)} s; final mean reward ${r.rewardCurve.at(-1)?.toFixed(1)}`);
    out(r.failures.length === 0
      ? `every start cell now reaches the meat by a shortest path around the bathtub (first at step ${r.solvedAtStep! + 1})`
      : `${r.failures.length} start cells do not yet take a shortest bathtub-free path`);
    out(`reward curve: ${r.chartFile}`);
    return r.failures.length === 0 ? 0 : 1;
  }
  if (which === 'arithmetic') {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { runArithmeticDemo } = require('./demos/arithmetic') as typeof import('./demos/arithmetic');
    out('R1-Zero in miniature: a tiny language model learns a+b= (cold-start SFT on the format, then GRPO with format + accuracy rewards).');
    const r = await runArithmeticDemo({ ...(steps !== undefined ? { grpoSteps: steps } : {}), ...(seed !== undefined ? { seed } : {}), chartFile: values.out ?? 'arithmetic-rewards.svg' });
    out(`\ncold start: ${r.sftSteps} steps in ${r.sftSeconds.toFixed(1)} s; held-out accuracy ${(100 * r.accuracyBefore).toFixed(0)}% (format ${(100 * r.formatBefore).toFixed(0)}%)`);
    out(`GRPO:       ${r.grpoSteps} steps in ${r.grpoSeconds.toFixed(1)} s; held-out accuracy ${(100 * r.accuracyAfter).toFixed(0)}% (format ${(100 * r.formatAfter).toFixed(0)}%)`);
    out(`\nheld-out samples:\n${r.samples.map((x) => `  ${x}`).join('\n')}`);
    out(`reward curves: ${r.chartFile}`);
    return r.accuracyAfter >= 0.9 && r.formatAfter >= 0.9 ? 0 : 1;
  }
  throw new GrpoKernelsError('GK_INVALID_ARG', `unknown demo '${which}'; expected 'cat' or 'arithmetic'`);
}

export async function main(argv: string[]): Promise<number> {
  try {
    const cmd = argv[0] ?? 'help';
    const { values, positionals } = parseArgs({
      args: argv.slice(1),
      options: {
        json: { type: 'boolean', default: false },
        device: { type: 'string', default: 'auto' },
        seed: { type: 'string' },
        quick: { type: 'boolean', default: false },
        steps: { type: 'string' },
        out: { type: 'string' },
      },
      allowPositionals: true,
      strict: true,
    });
    switch (cmd) {
      case 'info':
        return info(values.json!);
      case 'selftest': {
        const seed = values.seed !== undefined ? Number(values.seed) : freshSeed();
        if (!Number.isInteger(seed)) throw new GrpoKernelsError('GK_INVALID_ARG', `--seed must be an integer, got '${values.seed}'`);
        return await selftest(values.device as DeviceRequest, seed, values.quick!, values.json!);
      }
      case 'demo':
        return await demo(positionals[0] ?? 'cat', values);
      case 'help':
      case '--help':
      case '-h':
        out(HELP);
        return 0;
      default:
        process.stderr.write(`grpo-kernels: unknown command '${cmd}'\n\n${HELP}`);
        return 2;
    }
  } catch (e) {
    const err = e as { code?: string; message?: string };
    process.stderr.write(`grpo-kernels: ${err.code ? `[${err.code}] ` : ''}${err.message ?? String(e)}\n`);
    return 2;
  }
}
