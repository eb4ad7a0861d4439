// Child-process cases for test/robustness.test.ts: each reproduces a crash that issue 9 found
// (SIGSEGV, heap corruption, a runaway allocation), so it runs in its own process and the parent
// checks the exit status. Usage: node <loader flags> test/robust/cases.ts <case>. Prints one JSON
// line with what each step gave; exits 0 when every step rejected or resolved as expected.
import * as gk from '../../lib/index';
import { addon } from '../../lib/native';

type Outcome = string; // 'ok' or the error code ('NO_CODE:<name>' for an uncoded error)

async function outcome(f: () => unknown): Promise<Outcome> {
  try {
    await f();
    return 'ok';
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    return typeof code === 'string' ? code : `NO_CODE:${(e as Error)?.name}:${(e as Error)?.message}`;
  }
}

const gc = (globalThis as { gc?: () => void }).gc ?? (() => {});

function distillArgs(n: number, v: number): Record<string, unknown> {
  return {
    n, v, student: new Float32Array(n * v), studentDtype: 0, teacher: new Float32Array(n * v), teacherDtype: 0, ignoreIndex: -100,
    s: 1, seqOffsets: BigInt64Array.from([0n, BigInt(n)]), divergence: 0, beta: 0.5, temperature: 1, hardLabelWeight: 0, aggregation: 1,
    normalizer: 0, maxCompletionLength: 0, grad: new Float32Array(n * v),
  };
}

const cases: Record<string, () => Promise<Record<string, Outcome | number>>> = {
  // Finding 1: a denormal normalizer made 1/normalizer infinite, an ignored row's weight NaN,
  // and the hard-label term read studentRow[ignoreIndex] (SIGSEGV with ignoreIndex 2^40).
  async 'distill-denormal-normalizer'() {
    const st = gk.Tensor.from(new Float32Array(4 * 3).fill(1), { shape: [4, 3] });
    const big = 2 ** 40;
    const pub = await outcome(() =>
      gk.distillationLoss({ student: st, teacher: st, targets: [0, big, 1, 2] }, { normalizer: 1e-310, hardLabelWeight: 1, ignoreIndex: big }));
    const raw = await outcome(() => addon().distillLoss({
      ...distillArgs(4, 3), targets: BigInt64Array.from([0n, BigInt(big), 1n, 2n]), ignoreIndex: big, hardLabelWeight: 1, normalizer: 1e-310,
    } as never));
    // A legal normalizer with the same ignored row: the row is skipped, the loss is finite.
    const good = await gk.distillationLoss({ student: st, teacher: st, targets: [0, big, 1, 2] }, { normalizer: 1e-300, hardLabelWeight: 1, ignoreIndex: big });
    const lossGrpo = await outcome(() => gk.grpoLoss({ logp: [-1, -2], advantages: [1] }, { lossType: 'dapo', normalizer: 5e-324 }));
    return { pub, raw, goodFinite: Number.isFinite(good.loss) ? 1 : 0, goodTokens: good.tokens, lossGrpo };
  },

  // Finding 2: offsets beyond N were used before they were checked (heap-buffer-overflow writes).
  async 'distill-offsets-beyond-n'() {
    const a = addon();
    const out: Record<string, Outcome> = {};
    const bad: [string, bigint[], number][] = [
      ['beyond', [0n, 2n ** 40n, 2n], 2],
      ['negative', [0n, -5n, 2n], 2],
      ['lastNotN', [0n, 1n, 3n], 2],
      ['firstNotZero', [1n, 2n], 2],
      ['nZeroBeyond', [0n, 7n, 0n], 0],
    ];
    for (const [name, offs, n] of bad) {
      out[`distill:${name}`] = await outcome(() => a.distillLoss({ ...distillArgs(n, 3), s: offs.length - 1, seqOffsets: BigInt64Array.from(offs) } as never));
      out[`step:${name}`] = await outcome(() => a.grpoLossStep({
        n, logp: new Float32Array(n), s: offs.length - 1, seqOffsets: BigInt64Array.from(offs), advantages: new Float32Array(offs.length - 1),
        dlogp: new Float32Array(n), options: {} as never,
      }));
    }
    out['distill:nZeroOk'] = await outcome(() => a.distillLoss({ ...distillArgs(0, 3), s: 1, seqOffsets: BigInt64Array.from([0n, 0n]) } as never));
    return out;
  },

  // Finding 3: the typed arrays an op reads and writes must stay alive until it settles, even
  // when a getter hands out a fresh array each time or the caller drops them right away. The
  // arrays are large (64 MiB: above glibc's largest mmap threshold, so their memory is unmapped
  // when freed), so a use after free faults instead of reading stale memory.
  async 'binding-lifetime'() {
    const a = addon();
    const n = 1024;
    const v = 16384;
    const out: Record<string, Outcome | number> = {};
    const fresh = (len: number, fill: number) => () => new Float32Array(len).fill(fill);
    // Getters returning fresh arrays for an input and the outputs. Three calls are queued at
    // once: the CPU backend runs one at a time, so the later ones start after the collection.
    const pending: Promise<unknown>[] = [];
    for (let k = 0; k < 3; k++) {
      const o: Record<string, unknown> = { dtype: 0, n, v, targets: new Int32Array(n), temperature: 1, ignoreIndex: -100, checkFinite: false };
      Object.defineProperty(o, 'logits', { get: fresh(n * v, 1), enumerable: true });
      Object.defineProperty(o, 'logp', { get: fresh(n, 0), enumerable: true });
      Object.defineProperty(o, 'lse', { get: fresh(n, 0), enumerable: true });
      pending.push(a.tokenLogProbs(o as never));
    }
    for (let i = 0; i < 3; i++) {
      gc();
      new Float32Array(n * v).fill(7); // reuse whatever was freed
    }
    out.getters = await outcome(() => Promise.all(pending));
    // The caller deletes the arrays right after the call.
    const outputs: Float32Array[] = [];
    const pending2: Promise<unknown>[] = [];
    for (let k = 0; k < 3; k++) {
      const logp = new Float32Array(n);
      outputs.push(logp);
      const o: Record<string, unknown> = {
        dtype: 0, n, v, logits: new Float32Array(n * v).fill(2), targets: new Int32Array(n), temperature: 1, ignoreIndex: -100,
        checkFinite: false, logp,
      };
      pending2.push(a.tokenLogProbs(o as never));
      delete o.logits;
      delete o.targets;
    }
    for (let i = 0; i < 3; i++) {
      gc();
      new Float32Array(n * v).fill(7);
    }
    out.deleted = await outcome(() => Promise.all(pending2));
    out.deletedLogp = outputs[2]![n - 1]!;
    out.expectedLogp = -Math.log(v);
    // Gradient outputs handed out by a getter (written by the worker thread).
    const pending3: Promise<unknown>[] = [];
    for (let k = 0; k < 2; k++) {
      const o: Record<string, unknown> = {
        dtype: 0, n, v, logits: new Float32Array(n * v), targets: new Int32Array(n), temperature: 1, ignoreIndex: -100,
        gradLogp: new Float32Array(n).fill(1),
      };
      Object.defineProperty(o, 'grad', { get: fresh(n * v, 0), enumerable: true });
      pending3.push(a.tokenLogProbsBackward(o as never));
    }
    for (let i = 0; i < 3; i++) {
      gc();
      new Float32Array(n * v).fill(7);
    }
    out.gradGetter = await outcome(() => Promise.all(pending3));
    // A getter that detaches an array bound before it (structuredClone with transfer): refused
    // before the op is queued.
    const victim = new Float32Array(n * v);
    const o4: Record<string, unknown> = { dtype: 0, n, v, logits: victim, targets: new Int32Array(n), ignoreIndex: -100, checkFinite: false, logp: new Float32Array(n) };
    Object.defineProperty(o4, 'temperature', {
      get: () => {
        if (victim.buffer.byteLength > 0) structuredClone(victim.buffer, { transfer: [victim.buffer as ArrayBuffer] });
        return 1;
      },
      enumerable: true,
    });
    out.detachedByGetter = await outcome(() => a.tokenLogProbs(o4 as never));
    return out;
  },

  // Finding 4: no rows with a huge V allocated threads x V scratch (23.5 GB); an impossible
  // scratch request must fail with GK_OOM at once.
  async 'n0-huge-v'() {
    const V = 2 ** 31;
    const t0 = Date.now();
    const empty3 = gk.Tensor.from(new Float32Array(0), { shape: [1, 0, V] });
    const d3 = await gk.distillationLoss({ student: empty3, teacher: empty3 }, { aggregation: 'seqMeanTokenMean' });
    const empty = gk.Tensor.from(new Float32Array(0), { shape: [0, V] });
    const d = await gk.distillationLoss({ student: empty, teacher: empty });
    const f = await gk.grpoLoss({ logits: empty, targets: [], advantages: [1] });
    const lp = await gk.tokenLogProbs(empty, [], { entropy: true });
    const bw = await gk.tokenLogProbsBackward(empty, [], { gradLogp: [] });
    const sm = await outcome(() => gk.sampleTokens(gk.Tensor.from(new Float32Array(0), { shape: [0, 2 ** 30] })));
    const ms = Date.now() - t0;
    // One row of 2^20 bf16 logits: sampling and the JSD keep float32 copies of a row (4 MiB each,
    // over a 1 MiB cap); the log-prob ops, the fused loss and the KL divergences read it by blocks.
    const row = gk.Tensor.from(new Uint16Array(2 ** 20), { dtype: 'bfloat16', shape: [1, 2 ** 20] });
    const oom = await outcome(() => gk.tokenLogProbs(row, [0], { temperature: 0.5 }));
    const oomDistill = await outcome(() => gk.distillationLoss({ student: row, teacher: row }));
    const oomDistillJsd = await outcome(() => gk.distillationLoss({ student: row, teacher: row }, { divergence: 'jsd' }));
    const oomFused = await outcome(() => gk.grpoLoss({ logits: row, targets: [3], advantages: [1] }));
    const oomSample = await outcome(() => gk.sampleTokens(row));
    return {
      distillLoss: d.loss + d3.loss, distillTokens: d.tokens + d3.tokens, fusedLoss: f.loss, fusedTokens: f.metrics.tokens, logpRows: lp.logp.size, gradSize: bw.size,
      sample: sm, ms, rssMiB: Math.round(process.memoryUsage().rss / 2 ** 20), oom, oomDistill, oomDistillJsd, oomFused, oomSample,
    };
  },

  // Spec §9.1-9.3 (issue 12): the rollout-correction inputs and options of the raw loss entry
  // points are checked before any row is indexed: a short samplerLogp or per-token advantages
  // array, rejection criteria of every bad shape, out-of-range enums. Each refuses with a code.
  async 'rollout-correction-args'() {
    const a = addon();
    const n = 6;
    const step = (over: Record<string, unknown>, opts: Record<string, unknown> = {}) => outcome(() => a.grpoLossStep({
      n, logp: new Float32Array(n).fill(-1), s: 2, seqOffsets: BigInt64Array.from([0n, 3n, 6n]), advantages: new Float32Array(2).fill(1),
      dlogp: new Float32Array(n), samplerLogp: new Float32Array(n).fill(-1.1), options: { rolloutLevel: 1, ...opts } as never, ...over,
    } as never));
    const fused = (over: Record<string, unknown>, opts: Record<string, unknown> = {}) => outcome(() => a.grpoLossFused({
      logits: new Float32Array(n * 3), dtype: 0, n, v: 3, targets: new Int32Array(n), temperature: 1, ignoreIndex: -100, checkFinite: false,
      s: 2, seqOffsets: BigInt64Array.from([0n, 3n, 6n]), advantages: new Float32Array(2).fill(1), samplerLogp: new Float32Array(n).fill(-1.1),
      logp: new Float32Array(n), entropy: new Float32Array(n), lse: new Float32Array(n), grad: new Float32Array(n * 3),
      options: { rolloutLevel: 2, rejection: [{ agg: 3, k: 2, lo: -Infinity, hi: 0.1 }], ...opts } as never, ...over,
    } as never));
    const crit = (c: unknown) => step({}, { rejection: c });
    const huge = Array.from({ length: 9 }, () => ({ agg: 0, k: 2, lo: -Infinity, hi: 1 }));
    // groupAdvantages on 4 rewards in groups of 2, with the given estimator / §9.7 arguments.
    const adv = (extra: Record<string, unknown>) => outcome(() => a.groupAdvantages({
      rewards: new Float64Array(4), k: 1, n: 4, groupSize: 2, eps: 1e-4, advantages: new Float32Array(4), combined: new Float64Array(4),
      groupMean: new Float64Array(2), groupStd: new Float64Array(2), ...extra,
    } as never));
    return {
      good: await step({}),
      goodFused: await fused({}),
      shortSampler: await step({ samplerLogp: new Float32Array(2) }),
      shortSamplerFused: await fused({ samplerLogp: new Float32Array(2) }),
      missingSampler: await step({ samplerLogp: undefined }),
      missingSamplerRejection: await step({ samplerLogp: undefined }, { rolloutLevel: 0, rejection: [{ agg: 0, k: 2, hi: 1 }] }),
      shortPerTokenAdv: await step({}, { advantagesPerToken: true }),
      shortPerTokenAdvFused: await fused({}, { advantagesPerToken: true }),
      perTokenAdvOk: await step({ advantages: new Float32Array(n).fill(0.5) }, { advantagesPerToken: true }),
      levelRange: await step({}, { rolloutLevel: 7 }),
      modeRange: await step({}, { rolloutMode: -1 }),
      clipOrder: await step({}, { rolloutClipMin: 3, rolloutClipMax: 1 }),
      clipNaN: await step({}, { rolloutClipMax: NaN }),
      rejectionNotArray: await crit(5),
      rejectionTooMany: await crit(huge),
      rejectionJunk: await crit([7]),
      rejectionAggRange: await crit([{ agg: 9, k: 2, hi: 1 }]),
      rejectionKRange: await crit([{ agg: 0, k: 5, hi: 1 }]),
      rejectionLoHi: await crit([{ agg: 0, k: 0, lo: 1, hi: -1 }]),
      rejectionNaN: await crit([{ agg: 0, k: 0, lo: NaN, hi: 1 }]),
      rejectionSeqMaxK1: await crit([{ agg: 3, k: 0, lo: -1, hi: 1 }]),
      offPolicyNaN: await step({}, { offPolicyMaskThreshold: NaN }),
      entropyFormRange: await step({}, { entropyForm: 2 }),
      entropyThresholdNaN: await step({}, { entropyThreshold: NaN }),
      shortKeptMask: await step({ keptMask: new Uint8Array(2) }),
      keptMaskOk: await step({ keptMask: new Uint8Array(n) }),
      shortBatchStats: await adv({ scale: 1, estimator: 0, batchStats: new Float64Array(2) }),
      shortPartials: await adv({ scale: 1, estimator: 0, partials: new Float64Array(1) }),
      shortGpgCounts: await adv({ scale: 2, estimator: 5, gpgCounts: new Float64Array(1) }),
      shortGpgCountsOut: await adv({ scale: 2, estimator: 5, gpgCountsOut: new Float64Array(1) }),
      gpgCountsNotGpg: await adv({ scale: 2, estimator: 0, gpgCounts: new Float64Array(2) }),
    };
  },

  // Spec §9.4 (loss types): the raw loss entry points refuse every combination and parameter the
  // spec refuses before reading a row (the public API checks them too; these bypass it), and
  // accept the valid edges. Surrogate codes: 3 gpg, 4 cispoTwoSided, 5 vespo, 6 geoMean, 7 clipCov, 8 klCov.
  async 'loss-type-args'() {
    const a = addon();
    const n = 6;
    const base = (opts: Record<string, unknown>, over: Record<string, unknown> = {}) => ({
      n, logp: Float32Array.of(-1, -2, -1.5, -0.5, -0.7, -3), oldLogp: Float32Array.of(-1.1, -1.9, -1.4, -0.6, -0.8, -2.9), s: 2,
      seqOffsets: BigInt64Array.from([0n, 3n, 6n]), advantages: Float32Array.of(1, -1), entropy: Float32Array.of(1, 2, 0.5, 0.1, 3, 1.5),
      dlogp: new Float32Array(n), dentropy: new Float32Array(n), options: opts as never, ...over,
    });
    const step = (opts: Record<string, unknown>, over: Record<string, unknown> = {}) => outcome(() => a.grpoLossStep(base(opts, over) as never));
    const fused = (opts: Record<string, unknown>) => outcome(() => a.grpoLossFused({
      logits: new Float32Array(n * 3).map((_, i) => Math.sin(i)), dtype: 0, n, v: 3, targets: Int32Array.of(0, 1, 2, 0, 1, 2), temperature: 1, ignoreIndex: -100,
      checkFinite: false, s: 2, seqOffsets: BigInt64Array.from([0n, 3n, 6n]), advantages: Float32Array.of(1, -1), oldLogp: new Float32Array(n).fill(-1.1),
      logp: new Float32Array(n), entropy: new Float32Array(n), lse: new Float32Array(n), grad: new Float32Array(n * 3), options: opts as never,
    } as never));
    const q = { samplerLogp: new Float32Array(n).fill(-1.2) };
    const out: Record<string, Outcome> = {};
    for (const sur of [3, 4, 5, 6, 7, 8]) {
      out[`ok:${sur}`] = await step({ surrogate: sur, covRatio: 0.5, clipCovLb: 0, clipCovUb: 5 });
      out[`okFused:${sur}`] = await fused({ surrogate: sur, covRatio: 0.5, clipCovLb: 0, clipCovUb: 5 });
      if (sur === 4) {
        out['ok:4:sequence'] = await step({ surrogate: 4, importanceSamplingLevel: 1 });
        continue;
      }
      out[`bad:${sur}:sequence`] = await step({ surrogate: sur, importanceSamplingLevel: 1 });
      out[`bad:${sur}:sequenceToken`] = await step({ surrogate: sur, importanceSamplingLevel: 2 });
      out[`bad:${sur}:delta`] = await step({ surrogate: sur, delta: 3 });
      out[`badFused:${sur}:sequence`] = await fused({ surrogate: sur, importanceSamplingLevel: 1 });
    }
    out['bad:surrogate9'] = await step({ surrogate: 9 });
    out['bad:surrogate-1'] = await step({ surrogate: -1 });
    out['bad:vespo:rcSequence'] = await step({ surrogate: 5, rolloutLevel: 2 }, q);
    out['bad:vespo:rcSequenceMean'] = await step({ surrogate: 5, rolloutLevel: 3 }, q);
    out['ok:vespo:rcToken'] = await step({ surrogate: 5, rolloutLevel: 1 }, q);
    out['ok:geoMean:rcSequence'] = await step({ surrogate: 6, rolloutLevel: 2 }, q);
    out['bad:geoMean:topEntropy'] = await step({ surrogate: 6, topEntropyQuantile: 0.5 });
    out['bad:geoMean:offPolicy'] = await step({ surrogate: 6, offPolicyMaskThreshold: 0.05 });
    out['badFused:geoMean:topEntropy'] = await fused({ surrogate: 6, topEntropyQuantile: 0.5 });
    for (const [k, v] of [['vespoKPos', NaN], ['vespoKNeg', Infinity], ['vespoLambdaNeg', -Infinity], ['vespoLambdaPos', NaN]] as const)
      out[`bad:vespo:${k}=${v}`] = await step({ surrogate: 5, [k]: v });
    // λ <= 0 is used as 1e-4 (spec §9.4, TRL's clamp), not refused.
    out['ok:vespo:lambdaPos=0'] = await step({ surrogate: 5, vespoLambdaPos: 0 });
    out['ok:vespo:lambdaNeg=-1'] = await step({ surrogate: 5, vespoLambdaNeg: -1 });
    for (const sur of [7, 8]) for (const v of [0, -0.5, 1.5, NaN]) out[`bad:${sur}:covRatio=${v}`] = await step({ surrogate: sur, covRatio: v });
    out['bad:clipCov:lb=ub'] = await step({ surrogate: 7, clipCovLb: 2, clipCovUb: 2 });
    out['bad:clipCov:lb>ub'] = await step({ surrogate: 7, clipCovLb: 3, clipCovUb: 2 });
    out['bad:clipCov:ubInf'] = await step({ surrogate: 7, clipCovUb: Infinity });
    out['bad:klCov:ppoKlCoef=-1'] = await step({ surrogate: 8, ppoKlCoef: -1 });
    out['bad:klCov:ppoKlCoef=NaN'] = await step({ surrogate: 8, ppoKlCoef: NaN });
    out['ok:klCov:ppoKlCoef=0'] = await step({ surrogate: 8, ppoKlCoef: 0 });
    out['bad:clipCov:covSeed=-1'] = await step({ surrogate: 7, covSeed: -1 });
    out['bad:clipCov:covSeed=1.5'] = await step({ surrogate: 7, covSeed: 1.5 });
    out['ok:clipCov:covSeed=2^60'] = await step({ surrogate: 7, covSeed: 2 ** 60 });
    return out;
  },
};

async function main(): Promise<void> {
  const name = process.argv[2] ?? '';
  const c = cases[name];
  if (!c) {
    console.error(`unknown case '${name}'; cases: ${Object.keys(cases).join(', ')}`);
    process.exit(2);
  }
  const r = await c();
  console.log(JSON.stringify(r));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
