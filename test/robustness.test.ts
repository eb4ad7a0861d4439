// Regression tests of issue 9: inputs that crashed the process, corrupted memory, allocated
// without bound or gave a silently wrong answer. The crashing ones run in a child process
// (test/robust/cases.ts) whose exit status is checked.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import * as gk from '../lib/index';
import { addon, addonPathOverride } from '../lib/native';
import { rejectsCode } from './helpers';

const root = path.resolve(__dirname, '..');

/** Runs a case of test/robust/cases.ts in a child (same TS loader as this file); returns its JSON. */
function child(t: Test, name: string, env: Record<string, string> = {}): Record<string, string | number> | undefined {
  const r = spawnSync(process.execPath, [...process.execArgv, '--expose-gc', path.join(root, 'test/robust/cases.ts'), name], {
    cwd: root, encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env }, maxBuffer: 16 * 2 ** 20,
  });
  t.equal(r.signal, null, `${name}: no signal (got ${r.signal})`);
  t.equal(r.status, 0, `${name}: exit status 0${r.status !== 0 ? `\n${r.stderr.slice(-2000)}` : ''}`);
  const line = r.stdout.trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(line) as Record<string, string | number>;
  } catch {
    t.fail(`${name}: no result line (stdout: ${r.stdout.slice(-500)}, stderr: ${r.stderr.slice(-1500)})`);
    return undefined;
  }
}

t.test('1. a denormal normalizer is rejected, and an ignored row is skipped whatever its weight', async (t) => {
  const r = child(t, 'distill-denormal-normalizer');
  t.equal(r?.pub, 'GK_INVALID_ARG', 'distillationLoss: normalizer 1e-310 (was SIGSEGV with ignoreIndex 2^40)');
  t.equal(r?.raw, 'GK_INVALID_ARG', 'raw distillLoss: normalizer 1e-310 checked natively');
  t.equal(r?.goodFinite, 1, 'a small but legal normalizer: finite loss');
  t.equal(r?.goodTokens, 3, 'the ignored row (ignoreIndex 2^40) leaves the loss');
  t.equal(r?.lossGrpo, 'GK_INVALID_ARG', 'grpoLoss: normalizer 5e-324 rejected too');
  await rejectsCode(t, () => gk.distillationLoss({ student: gk.Tensor.zeros([2, 3]), teacher: gk.Tensor.zeros([2, 3]) }, { normalizer: 1e-310 }),
    'GK_INVALID_ARG', /options\.normalizer must have a finite reciprocal/);
  await rejectsCode(t, () => gk.tokenLogProbs(gk.Tensor.zeros([2, 3]), [0, 0], { temperature: 1e-40 }), 'GK_INVALID_ARG', /options\.temperature must have a finite reciprocal in float32/);
  await rejectsCode(t, () => gk.sampleTokens(gk.Tensor.zeros([2, 3]), { temperature: 1e39 }), 'GK_INVALID_ARG', /options\.temperature must fit in float32/);
});

t.test('2. every sequence offset is checked before memory is touched, in the native entry too', async (t) => {
  const r = child(t, 'distill-offsets-beyond-n');
  for (const name of ['beyond', 'negative', 'lastNotN', 'firstNotZero', 'nZeroBeyond']) {
    t.equal(r?.[`distill:${name}`], 'GK_SHAPE', `raw distillLoss, offsets ${name}`);
    t.equal(r?.[`step:${name}`], 'GK_SHAPE', `raw grpoLossStep, offsets ${name}`);
  }
  t.equal(r?.['distill:nZeroOk'], 'ok', 'n = 0 with offsets [0, 0] resolves');
});

t.test('3. the arrays an op uses stay alive until it settles (getters, deleted arguments, detach by a getter)', async (t) => {
  const r = child(t, 'binding-lifetime');
  t.equal(r?.getters, 'ok', 'getters returning fresh logits and outputs');
  t.equal(r?.deleted, 'ok', 'arguments deleted right after the call');
  t.ok(Math.abs(Number(r?.deletedLogp) - Number(r?.expectedLogp)) < 1e-5, `the op still read the right data (${r?.deletedLogp})`);
  t.equal(r?.gradGetter, 'ok', 'a gradient output from a getter');
  t.equal(r?.detachedByGetter, 'GK_INVALID_ARG', 'an array detached by a later getter is refused before the op is queued');
});

t.test('4. no rows with a huge V returns at once; scratch past the cap is GK_OOM', async (t) => {
  const r = child(t, 'n0-huge-v', { GK_MAX_SCRATCH_BYTES: String(2 ** 20) });
  t.equal(r?.distillLoss, 0, 'distillationLoss N = 0, V = 2^31: loss 0');
  t.equal(r?.distillTokens, 0);
  t.equal(r?.fusedLoss, 0, 'grpoLoss N = 0, V = 2^31: loss 0');
  t.equal(r?.fusedTokens, 0);
  t.equal(r?.logpRows, 0);
  t.equal(r?.gradSize, 0);
  t.equal(r?.sample, 'ok');
  t.ok(Number(r?.ms) < 5000, `all of them in ${r?.ms} ms`);
  t.ok(Number(r?.rssMiB) < 1024, `RSS ${r?.rssMiB} MiB (was 23.5 GB)`);
  for (const k of ['oomDistillJsd', 'oomSample']) t.equal(r?.[k], 'GK_OOM', `${k}: 4 MiB of scratch over a 1 MiB cap`);
  // The log-prob ops, the fused loss and the KL divergences read rows by blocks: no scratch that grows with V.
  for (const k of ['oom', 'oomFused', 'oomDistill']) t.equal(r?.[k], 'ok', `${k}: runs under a 1 MiB scratch cap with V = 2^20`);
});

t.test('5. shapes are checked against each other, never inferred from one input', async (t) => {
  const S = 2;
  const L = 3;
  const V = 5;
  const logits = gk.Tensor.from(new Float32Array(S * L * V), { shape: [S, L, V] });
  const targets = new Array<number>(S * L).fill(1);
  const base = await gk.grpoLoss({ logits, targets, advantages: [1, -1] });
  t.equal(base.metrics.tokens, S * L);
  for (const adv of [[1], [1, -1, 0.5], [1, 1, 1, 1, 1]])
    await rejectsCode(t, () => gk.grpoLoss({ logits, targets, advantages: adv }), 'GK_SHAPE', /must have 2 entries \(one per sequence\) or 6 \(one per token\), got \d/);
  // Spec §9.3: N = S·L advantages are one per token (never a regrouping into N sequences).
  const perToken = await gk.grpoLoss({ logits, targets, advantages: [1, 1, 1, -1, -1, -1] });
  t.equal(perToken.loss, base.loss, 'N advantages constant within each sequence: the per-sequence loss');
  // With seqOffsets the layout is packed and the advantage count follows the offsets.
  const packed = await gk.grpoLoss({ logits, targets, advantages: [1, -1, 0.5], seqOffsets: [0, 2, 4, 6] });
  t.equal(packed.metrics.tokens, S * L);
  const logp = gk.Tensor.from(new Float32Array(S * L).fill(-1), { shape: [S, L] });
  await rejectsCode(t, () => gk.grpoLoss({ logp, advantages: [1, 2, 3] }), 'GK_SHAPE', /must have 2 entries/);
  const mask = gk.Tensor.from(new Uint8Array(S * L).fill(1), { shape: [L, S] });
  await rejectsCode(t, () => gk.grpoLoss({ logits, targets, advantages: [1, -1], completionMask: mask }), 'GK_SHAPE', /completionMask has shape \[3, 2\], the rows have shape \[2, 3\]/);
  const tt = gk.Tensor.from(new Int32Array(S * L), { shape: [L, S] });
  await rejectsCode(t, () => gk.tokenLogProbs(logits, tt), 'GK_SHAPE', /targets has shape \[3, 2\]/);
  const teacher = gk.Tensor.from(new Float32Array(S * L * V), { shape: [L, S, V] });
  await rejectsCode(t, () => gk.distillationLoss({ student: logits, teacher }), 'GK_SHAPE', /teacher logits \[3, 2, 5\] must match the student's \[2, 3, 5\]/);
  // Flat per-row inputs still match by count.
  const flatMask = await gk.grpoLoss({ logits, targets, advantages: [1, -1], completionMask: new Array(S * L).fill(1) });
  t.equal(flatMask.metrics.tokens, S * L);
});

t.test('6. every failure is a GrpoKernelsError with a code and a message naming the argument', async (t) => {
  const cases: [string, () => unknown, string, RegExp][] = [
    ['Tensor.zeros(null)', () => gk.Tensor.zeros(null as never), 'GK_SHAPE', /Tensor\.zeros: shape must be an array/],
    ['Tensor.zeros(5)', () => gk.Tensor.zeros(5 as never), 'GK_SHAPE', /shape must be an array of non-negative integers, got number 5/],
    ['Tensor.zeros([-1])', () => gk.Tensor.zeros([-1]), 'GK_SHAPE', /got \[-1\]/],
    ['Tensor.zeros([2 ** 53])', () => gk.Tensor.zeros([2 ** 53]), 'GK_SHAPE', /non-negative integers/],
    ['Tensor.zeros([1e10, 1e10])', () => gk.Tensor.zeros([1e10, 1e10]), 'GK_SHAPE', /more than a typed array can/],
    ['Tensor.zeros dtype', () => gk.Tensor.zeros([2], 'float8' as never), 'GK_DTYPE', /Tensor\.zeros: unknown dtype/],
    ['encodeFloats(null)', () => gk.encodeFloats(null as never, 'bfloat16'), 'GK_INVALID_ARG', /encodeFloats: values must be/],
    ['encodeFloats dtype', () => gk.encodeFloats([1], 'int8' as never), 'GK_DTYPE', /encodeFloats: dtype must be/],
    ['decodeFloats(null)', () => gk.decodeFloats(null as never, 'float16'), 'GK_DTYPE', /fromFloat16: the 16-bit values must be a Uint16Array/],
    ['decodeFloats float32', () => gk.decodeFloats(null as never, 'float32'), 'GK_DTYPE', /decodeFloats: float32 data must be a Float32Array/],
    ['toBFloat16(null)', () => gk.toBFloat16(null as never), 'GK_INVALID_ARG', /toBFloat16: values must be/],
    ['toFloat16(["a"])', () => gk.toFloat16(['a'] as never), 'GK_INVALID_ARG', /toFloat16: values\[0\] must be a number/],
    ['fromFloat16(null)', () => gk.fromFloat16(null as never), 'GK_DTYPE', /fromFloat16/],
    ['fromBFloat16(Float32Array)', () => gk.fromBFloat16(new Float32Array(2) as never), 'GK_DTYPE', /fromBFloat16/],
    ['seqOffsets with a Symbol', () => gk.grpoLoss({ logp: [-1, -1], advantages: [1], seqOffsets: [0, Symbol('x')] as never }), 'GK_INVALID_ARG', /seqOffsets\[1\] must be an integer/],
    ['rewards as an array-like object', () => gk.groupAdvantages({ length: 2 ** 40 } as never, { groupSize: 1 }), 'GK_DTYPE', /rewards must be/],
    ['lengths as an array-like object', () => gk.groupAdvantages([1, 2], { groupSize: 2, estimator: 'opo', lengths: { length: 2 ** 40 } as never }), 'GK_SHAPE', /options\.lengths must have one length per completion/],
    ['lengths as a BigInt64Array', () => gk.groupAdvantages([1, 2], { groupSize: 2, estimator: 'opo', lengths: new BigInt64Array(2) as never }), 'GK_SHAPE', /options\.lengths/],
    ['lengths with a string', () => gk.groupAdvantages([1, 2], { groupSize: 2, estimator: 'opo', lengths: [1, '2'] as never }), 'GK_INVALID_ARG', /options\.lengths\[1\] must be a finite number/],
  ];
  for (const [name, f, code, msg] of cases) {
    try {
      await f();
      t.fail(`${name}: expected ${code}`);
    } catch (e) {
      t.ok(e instanceof gk.GrpoKernelsError, `${name}: a GrpoKernelsError (got ${(e as Error)?.constructor?.name}: ${(e as Error)?.message})`);
      t.equal((e as gk.GrpoKernelsError).code, code, `${name}: ${code}`);
      t.match((e as Error).message, msg, `${name}: message`);
    }
  }
  // The raw addon refuses the §9.5 options' bad values with a code (it throws plain coded errors).
  const advRaw = { device: -1, rewards: new Float64Array(2), k: 1, n: 2, groupSize: 2, scale: 2, eps: 0, advantages: new Float32Array(2), combined: new Float64Array(2), groupMean: new Float64Array(1), groupStd: new Float64Array(1) };
  const rawCases: [string, Record<string, unknown>, string, RegExp][] = [
    ['opo without lengths', { estimator: 4 }, 'GK_INVALID_ARG', /opo' needs 'lengths'/],
    ['estimator out of range', { estimator: 7 }, 'GK_INVALID_ARG', /'estimator' is not a known value/],
    ['aggregation out of range', { estimator: 0, aggregation: 2 }, 'GK_INVALID_ARG', /'aggregation' is not a known value/],
    ['short lengths', { estimator: 4, lengths: new Float64Array(1) }, 'GK_SHAPE', /'lengths' has 1 elements, expected 2/],
  ];
  for (const [name, extra, code, msg] of rawCases) {
    try {
      await addon().groupAdvantages({ ...advRaw, ...extra } as never);
      t.fail(`raw groupAdvantages ${name}: expected ${code}`);
    } catch (e) {
      t.equal((e as { code?: unknown }).code, code, `raw groupAdvantages ${name}: ${code}`);
      t.match((e as Error).message, msg, `raw groupAdvantages ${name}: message`);
    }
  }
  // A tensor whose buffer was transferred away.
  const x = gk.Tensor.from(new Float32Array(4), { shape: [2, 2] });
  structuredClone(x.data.buffer, { transfer: [x.data.buffer as ArrayBuffer] });
  await rejectsCode(t, () => x.clone(), 'GK_DISPOSED', /storage was detached/);
  await rejectsCode(t, () => gk.tokenLogProbs(x, [0, 0]), 'GK_DISPOSED', /storage was detached/);
  // A view of a resizable ArrayBuffer (its memory could shrink under a running op).
  const rab = new (ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer)(16, { maxByteLength: 64 });
  await rejectsCode(t, () => gk.Tensor.from(new Float32Array(rab)), 'GK_INVALID_ARG', /resizable ArrayBuffer/);
  const raw = addon();
  try {
    raw.tokenLogProbs({ logits: new Float32Array(rab), dtype: 0, n: 1, v: 4, targets: new Int32Array(1), temperature: 1, ignoreIndex: -100, checkFinite: false, logp: new Float32Array(1) });
    t.fail('raw addon: a resizable buffer should be refused');
  } catch (e) {
    t.equal((e as { code?: string }).code, 'GK_INVALID_ARG', 'raw addon refuses a view of a resizable ArrayBuffer');
  }
});

t.test('7. non-finite rows are counted in the loss metrics (checkFinite stays opt-in)', async (t) => {
  const V = 4;
  const vals = new Float32Array(4 * V).fill(0.5);
  vals[1 * V + 2] = NaN; // row 1
  vals.fill(-Infinity, 3 * V, 4 * V); // row 3: no finite logit
  const logits = gk.Tensor.from(vals, { shape: [4, V] });
  const r = await gk.grpoLoss({ logits, targets: [0, 1, 2, 3], advantages: [1, -1], completionMask: [1, 1, 1, 1] });
  t.ok(Number.isNaN(r.loss), 'the loss is NaN');
  t.equal(r.metrics.nonFiniteRows, 2, 'and the metrics say how many rows made it so');
  const masked = await gk.grpoLoss({ logits, targets: [0, 1, 2, 3], advantages: [1, -1], completionMask: [1, 0, 1, 0] });
  t.equal(masked.metrics.nonFiniteRows, 0, 'masked rows do not count');
  t.ok(Number.isFinite(masked.loss), 'and do not poison the loss');
  const ignored = await gk.grpoLoss({ logits, targets: [0, -100, 2, -100], advantages: [1, -1] });
  t.equal(ignored.metrics.nonFiniteRows, 0, 'ignored rows do not count');
  await rejectsCode(t, () => gk.grpoLoss({ logits, targets: [0, 1, 2, 3], advantages: [1, -1] }, { checkFinite: true }), 'GK_NONFINITE', /row 1/);
  const fromLogp = await gk.grpoLoss({ logp: [-1, NaN, -Infinity, -2], advantages: [1, 1] });
  t.equal(fromLogp.metrics.nonFiniteRows, 2, 'from log-probs: NaN and -inf log-probs counted');
  const healthy = await gk.grpoLoss({ logp: [-1, -2], advantages: [1] });
  t.equal(healthy.metrics.nonFiniteRows, 0, 'a healthy step reports 0');
});

t.test('GK_ADDON_PATH (the sanitizer build) is validated before it is loaded', async (t) => {
  t.equal(addonPathOverride({}), undefined, 'unset: the package build');
  t.equal(addonPathOverride({ GK_ADDON_PATH: '' }), undefined, 'empty: the package build');
  const self = path.join(root, 'build/Release/grpo_kernels.node');
  await rejectsCode(t, () => addonPathOverride({ GK_ADDON_PATH: 'build/Release/grpo_kernels.node' }), 'GK_NO_ADDON', /must be an absolute path to a \.node file/);
  await rejectsCode(t, () => addonPathOverride({ GK_ADDON_PATH: path.join(root, 'package.json') }), 'GK_NO_ADDON', /absolute path to a \.node file/);
  await rejectsCode(t, () => addonPathOverride({ GK_ADDON_PATH: path.join(root, 'no-such-dir/x.node') }), 'GK_NO_ADDON', /names no file/);
  if (fs.existsSync(self)) t.equal(addonPathOverride({ GK_ADDON_PATH: self }), self, 'an absolute path to a .node file');
});

t.test('§9.1-9.3, §9.7, §9.8: the raw loss entry points check samplerLogp, per-token advantages and the correction options before indexing', async (t) => {
  const r = child(t, 'rollout-correction-args');
  t.equal(r?.good, 'ok', 'a well-formed token-level correction resolves');
  t.equal(r?.goodFused, 'ok', 'a well-formed fused sequence-level correction with a seqMax rejection resolves');
  t.equal(r?.perTokenAdvOk, 'ok', 'per-token advantages of length N resolve');
  t.equal(r?.keptMaskOk, 'ok', 'a kept-token mask of length N resolves');
  for (const k of ['shortSampler', 'shortSamplerFused', 'shortPerTokenAdv', 'shortPerTokenAdvFused', 'shortKeptMask', 'shortBatchStats', 'shortPartials', 'shortGpgCounts', 'shortGpgCountsOut'])
    t.equal(r?.[k], 'GK_SHAPE', `${k}: GK_SHAPE`);
  for (const k of ['missingSampler', 'missingSamplerRejection', 'levelRange', 'modeRange', 'clipOrder', 'clipNaN', 'rejectionNotArray', 'rejectionTooMany',
    'rejectionJunk', 'rejectionAggRange', 'rejectionKRange', 'rejectionLoHi', 'rejectionNaN', 'rejectionSeqMaxK1', 'offPolicyNaN', 'entropyFormRange', 'entropyThresholdNaN', 'gpgCountsNotGpg'])
    t.equal(r?.[k], 'GK_INVALID_ARG', `${k}: GK_INVALID_ARG`);
});
