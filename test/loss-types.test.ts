// Spec §9.4 loss types: the float64 reference's gradients against central finite differences of
// the reference loss, the special values the spec names, the presets and the refused
// combinations of the public API, and the library against the reference on §9.4 cases.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import t from 'tap';
import * as gk from '../lib/index';
import { fusedLossTypeCases, lossTypeCases, runFusedCase, runLossCase } from './reference/cases';
import { covKey, refGrpoLoss, vespoPhi, type RefLossInputs, type RefLossOptions } from './reference/loss';
import { philox4x32_10 } from './reference/sampling';
import { Rng } from './reference/random';
import { assertCase, rejectsCode, seedFor } from './helpers';

const seed = seedFor(t, 'loss-types');

const BASE: RefLossOptions = {
  surrogate: 'clip', importanceSamplingLevel: 'token', epsilonLow: 0.2, epsilonHigh: 0.2, delta: null, tauPos: 1, tauNeg: 1.05, beta: 0,
  klEstimator: 'k3', entropyCoef: 0, aggregation: 'tokenMean', normalizer: null, maxCompletionLength: null, maskTruncatedCompletions: false,
  topEntropyQuantile: 1,
};

interface DrawSpec {
  s: number;
  l: number;
  packed?: boolean;
  perTokenAdv?: boolean;
  /** samplerLogp = oldLogp + N(0, sampler²) */
  sampler?: number;
  truncated?: boolean;
  emptySequence?: boolean;
  /** spread of x = logp − old (default 0.3) */
  spread?: number;
}

interface Drawn {
  inp: RefLossInputs & { logp: Float64Array; oldLogp: Float64Array; samplerLogp: Float64Array | null; advantages: Float64Array };
  n: number;
  s: number;
  mask: Uint8Array;
}

/** Fresh random inputs; x = logp − old kept 2e-3 away from every kink of §3/§9.4 (log(1±ε), ±ε, 0). */
function draw(rng: Rng, c: DrawSpec, o: RefLossOptions): Drawn {
  const offsets = [0];
  for (let i = 0; i < c.s; i++) offsets.push(offsets[i]! + (c.packed ? (c.emptySequence && i === 0 ? 0 : rng.int(1, c.l + 1)) : c.l));
  const n = offsets[c.s]!;
  const mask = new Uint8Array(n).fill(1);
  if (!c.packed)
    for (let i = 0; i < c.s; i++) {
      const len = c.emptySequence && i === 0 ? 0 : rng.int(1, c.l + 1);
      for (let k = len; k < c.l; k++) mask[i * c.l + k] = 0;
    }
  const kinks = [Math.log(1 + o.epsilonHigh), Math.log(1 - o.epsilonLow), o.epsilonHigh, -o.epsilonLow, 0];
  const logp = Float64Array.from({ length: n }, () => -Math.abs(rng.normal()) * 2 - 0.01);
  const oldLogp = Float64Array.from(logp, (lp) => {
    let x = rng.normal() * (c.spread ?? 0.3);
    while (kinks.some((k) => Math.abs(x - k) < 2e-3)) x = rng.normal() * (c.spread ?? 0.3);
    return lp - x;
  });
  const refLogp = Float64Array.from(logp, (x) => x + rng.normal() * 0.5);
  const entropy = Float64Array.from(logp, () => rng.next() * 3);
  const advantages = c.perTokenAdv ? Float64Array.from({ length: n }, (_, k) => (mask[k] ? rng.normal() : NaN)) : Float64Array.from({ length: c.s }, () => rng.normal());
  const samplerLogp = c.sampler ? Float64Array.from(oldLogp, (x) => x + rng.normal() * c.sampler!) : null;
  const truncated = c.truncated ? Uint8Array.from({ length: c.s }, () => (rng.next() < 0.3 ? 1 : 0)) : null;
  return {
    inp: { logp, oldLogp, refLogp, entropy, advantages, samplerLogp, seqOffsets: offsets, mask: c.packed ? null : mask, truncated } as Drawn['inp'],
    n, s: c.s, mask: c.packed ? new Uint8Array(n).fill(1) : mask,
  };
}

/** Sequence s's valid-token count and exp(mean over them of logp − oldLogp), independently of the reference. */
function seqMeanRatio(d: Drawn, s: number): { rho: number; cnt: number } {
  let sx = 0;
  let cnt = 0;
  for (let k = d.inp.seqOffsets[s]!; k < d.inp.seqOffsets[s + 1]!; k++)
    if (d.mask[k]) {
      sx += d.inp.logp[k]! - d.inp.oldLogp[k]!;
      cnt++;
    }
  return { rho: Math.exp(sx / cnt), cnt };
}

const relErr = (a: ArrayLike<number>, b: ArrayLike<number>): number => {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num += (a[i]! - b[i]!) ** 2;
    den += b[i]! ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-300));
};

/**
 * Central differences of the reference loss at step h. 'plain' moves logp alone; 'comove' moves
 * logp, oldLogp and samplerLogp together, so x = logp − old and d = old − sampler stay fixed:
 * what a stop-gradient surrogate (cispoTwoSided, vespo) differentiates. `stable` is false when the
 * covariance selection (clipCov, klCov) is not the same at every ±h.
 */
function fd(inp: Drawn['inp'], o: RefLossOptions, mode: 'plain' | 'comove', h = 1e-6) {
  const base = refGrpoLoss(inp, o);
  const chosenKey = (r: ReturnType<typeof refGrpoLoss>) => (r.covChosen ? Array.from(r.covChosen).join('') : '');
  const key0 = chosenKey(base);
  const logp = Float64Array.from(inp.logp);
  const old = Float64Array.from(inp.oldLogp);
  const q = inp.samplerLogp ? Float64Array.from(inp.samplerLogp) : null;
  const g = new Float64Array(logp.length);
  let stable = true;
  for (let i = 0; i < logp.length; i++) {
    const at = (d: number) => {
      logp[i] = inp.logp[i]! + d;
      if (mode === 'comove') {
        old[i] = inp.oldLogp[i]! + d;
        if (q) q[i] = inp.samplerLogp![i]! + d;
      }
      const r = refGrpoLoss({ ...inp, logp, oldLogp: old, samplerLogp: q }, o);
      logp[i] = inp.logp[i]!;
      old[i] = inp.oldLogp[i]!;
      if (q) q[i] = inp.samplerLogp![i]!;
      if (chosenKey(r) !== key0) stable = false;
      return r.loss;
    };
    g[i] = (at(h) - at(-h)) / (2 * h);
  }
  return { base, fd: g, err: relErr(base.dlogp, g), stable };
}

interface FdCase {
  name: string;
  spec: DrawSpec;
  o: Partial<RefLossOptions>;
  mode: 'plain' | 'comove';
  /** the covariance selection must choose some tokens and leave some valid tokens unchosen */
  needsChoice?: boolean;
}

const FD_CASES: FdCase[] = [
  { name: 'gpg', spec: { s: 4, l: 6 }, o: { surrogate: 'gpg' }, mode: 'plain' },
  { name: 'gpg + bias-corrected k3 KL, top-entropy, entropy bonus, seqMeanTokenMean', spec: { s: 4, l: 6 }, o: { surrogate: 'gpg', beta: 0.1, biasCorrectedKl: true, topEntropyQuantile: 0.5, entropyCoef: 0.01, aggregation: 'seqMeanTokenMean' }, mode: 'plain' },
  { name: 'gpg + token IS truncate, per-token A, off-policy mask', spec: { s: 5, l: 6, sampler: 0.4, perTokenAdv: true }, o: { surrogate: 'gpg', rolloutCorrection: { level: 'token', mode: 'truncate', clipMin: 0, clipMax: 1.5, batchNormalize: false }, offPolicyMaskThreshold: 0.02 }, mode: 'plain' },
  { name: 'cispoTwoSided', spec: { s: 4, l: 6 }, o: { surrogate: 'cispoTwoSided', epsilonHigh: 0.28 }, mode: 'comove' },
  { name: 'cispoTwoSided, sequence ratio, k2 KL', spec: { s: 4, l: 6 }, o: { surrogate: 'cispoTwoSided', importanceSamplingLevel: 'sequence', beta: 0.05, klEstimator: 'k2', aggregation: 'seqMeanTokenMean' }, mode: 'comove' },
  { name: 'vespo', spec: { s: 4, l: 6 }, o: { surrogate: 'vespo' }, mode: 'comove' },
  { name: 'vespo + token IS mask, KL, top-entropy, entropy bonus', spec: { s: 5, l: 6, sampler: 0.4 }, o: { surrogate: 'vespo', rolloutCorrection: { level: 'token', mode: 'mask', clipMin: 0.7, clipMax: 1.4, batchNormalize: false }, beta: 0.05, topEntropyQuantile: 0.6, entropyCoef: 0.02 }, mode: 'comove' },
  { name: 'vespo + per-token A, token IS truncate + batchNormalize, (k, λ) given, off-policy mask', spec: { s: 5, l: 6, sampler: 0.3, perTokenAdv: true }, o: { surrogate: 'vespo', rolloutCorrection: { level: 'token', mode: 'truncate', clipMin: 0, clipMax: 2, batchNormalize: true }, vespoKPos: 1.5, vespoLambdaPos: 2.5, vespoKNeg: 2, vespoLambdaNeg: 1, offPolicyMaskThreshold: 0.01 }, mode: 'comove' },
  { name: 'geoMean', spec: { s: 4, l: 6 }, o: { surrogate: 'geoMean', aggregation: 'seqMeanTokenMean' }, mode: 'plain' },
  { name: 'geoMean, tokenMean KL/entropy, bias-corrected KL, truncated', spec: { s: 5, l: 6, truncated: true }, o: { surrogate: 'geoMean', aggregation: 'tokenMean', beta: 0.1, biasCorrectedKl: true, entropyCoef: 0.01, maskTruncatedCompletions: true }, mode: 'plain' },
  { name: 'geoMean + token IS mask, per-token A', spec: { s: 5, l: 6, sampler: 0.4, perTokenAdv: true }, o: { surrogate: 'geoMean', aggregation: 'seqMeanTokenMean', rolloutCorrection: { level: 'token', mode: 'mask', clipMin: 0.6, clipMax: 1.6, batchNormalize: false } }, mode: 'plain' },
  { name: 'geoMean + sequence IS truncate, packed, empty sequence', spec: { s: 5, l: 6, sampler: 0.2, packed: true, emptySequence: true }, o: { surrogate: 'geoMean', aggregation: 'seqMeanTokenMean', rolloutCorrection: { level: 'sequence', mode: 'truncate', clipMin: 0, clipMax: 2, batchNormalize: false } }, mode: 'plain' },
  { name: 'geoMean + sequenceMean IS, batchNormalize, rejection', spec: { s: 6, l: 6, sampler: 0.3 }, o: { surrogate: 'geoMean', aggregation: 'seqMeanTokenSum', rolloutCorrection: { level: 'sequenceMean', mode: 'truncate', clipMin: 0.8, clipMax: 1.2, batchNormalize: true }, rolloutRejection: [{ statistic: 'token_k3', threshold: 0.05 }] }, mode: 'plain' },
  { name: 'clipCov', spec: { s: 5, l: 8 }, o: { surrogate: 'clipCov', clipCovRatio: 0.2, clipCovLb: 0.05, clipCovUb: 5 }, mode: 'plain', needsChoice: true },
  { name: 'clipCov + KL, token IS, per-token A, top-entropy, covSeed > 2^32', spec: { s: 6, l: 8, sampler: 0.3, perTokenAdv: true }, o: { surrogate: 'clipCov', clipCovRatio: 0.3, clipCovLb: 0.1, clipCovUb: 3, covSeed: 12345678901, beta: 0.05, rolloutCorrection: { level: 'token', mode: 'truncate', clipMin: 0, clipMax: 1.5, batchNormalize: false }, topEntropyQuantile: 0.5 }, mode: 'plain', needsChoice: true },
  { name: 'klCov', spec: { s: 5, l: 8 }, o: { surrogate: 'klCov', klCovRatio: 0.2 }, mode: 'plain', needsChoice: true },
  { name: 'klCov + κ, token IS, top-entropy, KL, per-token A, off-policy mask', spec: { s: 6, l: 8, sampler: 0.3, perTokenAdv: true }, o: { surrogate: 'klCov', klCovRatio: 0.15, ppoKlCoef: 0.5, rolloutCorrection: { level: 'token', mode: 'truncate', clipMin: 0, clipMax: 1.5, batchNormalize: false }, topEntropyQuantile: 0.5, beta: 0.05, offPolicyMaskThreshold: 0.02 }, mode: 'plain', needsChoice: true },
];

t.test('reference: Philox-4x32-10 known-answer vectors (Random123)', async (t) => {
  const hex = (a: number[]) => a.map((x) => x.toString(16).padStart(8, '0')).join(' ');
  t.equal(hex(philox4x32_10([0, 0, 0, 0], [0, 0])), '6627e8d5 e169c58d bc57ac4c 9b00dbd8');
  t.equal(hex(philox4x32_10([0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff], [0xffffffff, 0xffffffff])), '408f276d 41c83b0e a20bc7c6 6d5451fd');
  t.equal(hex(philox4x32_10([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0])), 'd16cfe09 94fdcceb 5001e420 24126ea1');
  // covKey: counter (t lo, t hi, 0, 0x636F7600), key (seed lo, seed hi), (r0 << 32) | r1.
  const bigT = 2 ** 32 + 5;
  const bigSeed = 3 * 2 ** 32 + 7;
  const r = philox4x32_10([5, 1, 0, 0x636f7600], [7, 3]);
  t.equal(covKey(bigT, bigSeed), (BigInt(r[0]) << 32n) | BigInt(r[1]), 'high words of t and covSeed are used');
});

t.test('reference: §9.4 gradients agree with central finite differences of the reference loss', async (t) => {
  const rng = new Rng(seed + 1);
  for (const c of FD_CASES) {
    const o: RefLossOptions = { ...BASE, ...c.o };
    let done = false;
    for (let attempt = 0; attempt < 20 && !done; attempt++) {
      const d = draw(rng, c.spec, o);
      const r = fd(d.inp, o, c.mode);
      if (!r.stable) continue;
      if (c.needsChoice) {
        const chosen = r.base.covChosen!.reduce((a, b) => a + b, 0);
        if (chosen === 0 || chosen === r.base.metrics.tokens) continue;
      }
      done = true;
      t.ok(r.err < 1e-6, `${c.name} (${c.mode}): dlogp vs FD ${r.err.toExponential(2)}`);
      t.ok(r.base.dlogp.some((x) => x !== 0), `${c.name}: a non-zero gradient`);
      t.ok(Number.isFinite(r.base.loss), `${c.name}: finite loss`);
    }
    t.ok(done, `${c.name}: found a usable draw${c.needsChoice ? ' (covariance selection stable at ±h, some tokens chosen, some not)' : ''}`);
  }
});

t.test('reference: the stop-gradient surrogates are not the derivative of their own value', async (t) => {
  // cispoTwoSided and vespo stop ρ and φ: plain FD (x moving) must differ from the spec gradient,
  // else the comove FD above would prove nothing.
  const rng = new Rng(seed + 2);
  for (const surrogate of ['cispoTwoSided', 'vespo'] as const) {
    const o: RefLossOptions = { ...BASE, surrogate };
    const d = draw(rng, { s: 4, l: 6 }, o);
    const r = fd(d.inp, o, 'plain');
    t.ok(r.err > 1e-3, `${surrogate}: plain FD differs from the stop-gradient gradient (${r.err.toExponential(2)})`);
  }
});

t.test('reference: vespo φ(w = 1) = 1, and on-policy vespo is gpg', async (t) => {
  for (const [k, lam] of [[2, 3], [3, 2], [0.5, 7], [4, 0], [1, 1e-6]] as const) t.equal(vespoPhi(0, k, lam), 1, `φ(log w = 0; k=${k}, λ=${lam}) = 1`);
  t.equal(vespoPhi(Math.log(1e-8), 2, 1e9), 0, 'φ underflows to 0 (never NaN)');
  t.equal(vespoPhi(NaN, 2, 3), 0, 'a NaN φ becomes 0');
  const rng = new Rng(seed + 3);
  const o: RefLossOptions = { ...BASE, surrogate: 'vespo' };
  const d = draw(rng, { s: 5, l: 6, perTokenAdv: true }, o);
  const on = { ...d.inp, oldLogp: d.inp.logp };
  const v = refGrpoLoss(on, o);
  const g = refGrpoLoss(on, { ...o, surrogate: 'gpg' });
  t.ok(Math.abs(v.loss - g.loss) <= 1e-14 * Math.abs(g.loss), `loss ${v.loss} = gpg's ${g.loss}`);
  t.ok(relErr(v.dlogp, g.dlogp) < 1e-14, 'gradient = gpg gradient');
  t.equal(v.metrics.phiMean, 1, 'phiMean = 1');
  t.equal(g.metrics.phiMean, undefined, 'phiMean only for vespo');
  // Off-policy: φ ≠ 1, and the gradient is φ_t·A_t per token (tokenMean weight 1/tokens).
  const off = refGrpoLoss(d.inp, o);
  t.not(off.metrics.phiMean, 1);
  let ok = true;
  for (let s = 0; s < d.s; s++) {
    let lw = 0;
    for (let k = d.inp.seqOffsets[s]!; k < d.inp.seqOffsets[s + 1]!; k++) if (d.mask[k]) lw += d.inp.logp[k]! - d.inp.oldLogp[k]!;
    for (let k = d.inp.seqOffsets[s]!; k < d.inp.seqOffsets[s + 1]!; k++) {
      if (!d.mask[k]) continue;
      const A = d.inp.advantages[k]!;
      const [kk, lam] = A >= 0 ? [2, 3] : [3, 2];
      const phi = Math.exp(lam + kk * lw - lam * Math.exp(lw));
      const want = (-phi * A) / off.metrics.tokens;
      if (Math.abs(off.dlogp[k]! - want) > 1e-12 * Math.max(1, Math.abs(want))) ok = false;
    }
  }
  t.ok(ok, 'dlogp_t = -φ_t·A_t / tokens with φ from the sequence log-weight Σ x_t');
});

t.test('reference: geoMean with every x inside the bounds is exp(mean x)', async (t) => {
  const rng = new Rng(seed + 4);
  const o: RefLossOptions = { ...BASE, surrogate: 'geoMean', aggregation: 'seqMeanTokenMean' };
  const d = draw(rng, { s: 6, l: 7 }, o);
  for (let k = 0; k < d.n; k++) d.inp.oldLogp[k] = d.inp.logp[k]! - (rng.next() * 0.3 - 0.15); // |x| < 0.2
  const r = refGrpoLoss(d.inp, o);
  let want = 0;
  const wantGrad = new Float64Array(d.n);
  for (let s = 0; s < d.s; s++) {
    const { rho, cnt } = seqMeanRatio(d, s);
    const A = d.inp.advantages[s]!;
    want += (-A * rho) / d.s;
    for (let k = d.inp.seqOffsets[s]!; k < d.inp.seqOffsets[s + 1]!; k++) if (d.mask[k]) wantGrad[k] = (-A * rho) / cnt / d.s;
  }
  t.ok(Math.abs(r.loss - want) <= 1e-7 * Math.abs(want), `loss ${r.loss} vs (1/S)Σ -A_s·exp(mean x) ${want} (n_s = |s| + 1e-8)`);
  t.ok(relErr(r.dlogp, wantGrad) < 1e-7, 'gradient -(1/S)·A_s·ρ_s/|s| on every token');
  t.equal(r.metrics.clipFraction, 0, 'no token clipped');
  // A different aggregation leaves the policy part alone.
  const r2 = refGrpoLoss(d.inp, { ...o, aggregation: 'tokenMean' });
  t.equal(r2.loss, r.loss, 'aggregation does not change the geoMean policy loss');
  // Outside the bounds: x > εhigh with A > 0 is clipped (no gradient, counted high).
  const s0 = 1;
  const k0 = d.inp.seqOffsets[s0]!;
  d.inp.advantages[s0] = 1;
  d.inp.oldLogp[k0] = d.inp.logp[k0]! - 0.5;
  const r3 = refGrpoLoss(d.inp, o);
  t.equal(r3.dlogp[k0], 0, 'x = 0.5 > εhigh, A > 0: no gradient');
  t.ok(r3.metrics.clipFractionHigh > 0, 'counted in clipFractionHigh');
  d.inp.advantages[s0] = -1;
  const r4 = refGrpoLoss(d.inp, o);
  t.not(r4.dlogp[k0], 0, 'x = 0.5 with A < 0: the unclamped branch is pessimistic, gradient flows');
  t.ok(r4.metrics.clipFractionLow > 0, 'counted in clipFractionLow (x ≠ c, A < 0)');
});

t.test('reference: klCov on-policy is the plain -A·ρ loss; it chooses the largest covariances', async (t) => {
  const rng = new Rng(seed + 5);
  const o: RefLossOptions = { ...BASE, surrogate: 'klCov', klCovRatio: 1, ppoKlCoef: 2 };
  const d = draw(rng, { s: 5, l: 6, perTokenAdv: true }, o);
  const on = { ...d.inp, oldLogp: Float64Array.from(d.inp.logp) };
  const r = refGrpoLoss(on, o);
  t.equal(r.covChosen!.reduce((a, b) => a + b, 0), r.metrics.tokens, 'klCovRatio 1: every token chosen');
  let want = 0;
  const wantGrad = new Float64Array(d.n);
  for (let k = 0; k < d.n; k++) if (d.mask[k]) {
    want += -d.inp.advantages[k]! / r.metrics.tokens;
    wantGrad[k] = -d.inp.advantages[k]! / r.metrics.tokens;
  }
  t.ok(Math.abs(r.loss - want) <= 1e-12 * Math.max(1, Math.abs(want)), `loss ${r.loss} = -Σ A/tokens ${want}`);
  t.ok(relErr(r.dlogp, wantGrad) < 1e-12, 'gradient -A/tokens (sign(0) = 0)');
  const clip = refGrpoLoss(on, { ...o, surrogate: 'clip' });
  t.ok(Math.abs(r.loss - clip.loss) <= 1e-12 * Math.max(1, Math.abs(clip.loss)), 'same as clip on-policy');
  // Off-policy, ratio 0.2: the k = ⌊0.2·N⌋ largest cov_t = (A_t − Ā)(logp_t − l̄) are chosen.
  const o2 = { ...o, klCovRatio: 0.2 };
  const r2 = refGrpoLoss(d.inp, o2);
  const idx = [...Array(d.n).keys()].filter((k) => d.mask[k]);
  const aBar = idx.reduce((a, k) => a + d.inp.advantages[k]!, 0) / idx.length;
  const lBar = idx.reduce((a, k) => a + d.inp.logp[k]!, 0) / idx.length;
  const cov = (k: number) => (d.inp.advantages[k]! - aBar) * (d.inp.logp[k]! - lBar);
  const kk = Math.max(1, Math.floor(0.2 * idx.length));
  const top = new Set(idx.slice().sort((a, b) => cov(b) - cov(a)).slice(0, kk));
  t.same([...r2.covChosen!.keys()].filter((k) => r2.covChosen![k]), [...top].sort((a, b) => a - b), `the ${kk} largest covariances`);
  // A chosen token's gradient: (-A·ρ + κ·sign(x))/tokens; an unchosen one: -A·ρ/tokens.
  let ok = true;
  for (const k of idx) {
    const x = d.inp.logp[k]! - d.inp.oldLogp[k]!;
    const want2 = (-d.inp.advantages[k]! * Math.exp(x) + (top.has(k) ? 2 * Math.sign(x) : 0)) / idx.length;
    if (Math.abs(r2.dlogp[k]! - want2) > 1e-12 * Math.max(1, Math.abs(want2))) ok = false;
  }
  t.ok(ok, 'per-token gradient of -A·ρ + κ·|x| on the chosen tokens');
  t.equal(r2.metrics.clipFraction, 0, 'no clip metrics');
});

t.test('reference: gpg loss is -Σ w·A·logp', async (t) => {
  const rng = new Rng(seed + 6);
  const o: RefLossOptions = { ...BASE, surrogate: 'gpg' };
  const d = draw(rng, { s: 5, l: 7 }, o);
  const r = refGrpoLoss(d.inp, o);
  let want = 0;
  for (let s = 0; s < d.s; s++)
    for (let k = d.inp.seqOffsets[s]!; k < d.inp.seqOffsets[s + 1]!; k++) if (d.mask[k]) want += (-d.inp.advantages[s]! * d.inp.logp[k]!) / r.metrics.tokens;
  t.ok(Math.abs(r.loss - want) <= 1e-12 * Math.abs(want), `loss ${r.loss} = ${want}`);
  t.equal(r.metrics.clipFraction, 0);
  t.ok(r.metrics.ratioMean !== 1, 'ratioMean is still the token ratio');
});

t.test('reference: cispoTwoSided vs cispo', async (t) => {
  const rng = new Rng(seed + 7);
  const o: RefLossOptions = { ...BASE, surrogate: 'cispoTwoSided', epsilonLow: 0.1, epsilonHigh: 0.1 };
  const d = draw(rng, { s: 6, l: 8, spread: 0.4 }, o);
  const two = refGrpoLoss(d.inp, o);
  const one = refGrpoLoss(d.inp, { ...o, surrogate: 'cispo', epsilonHigh: 1.1 }); // TRL's absolute cap at 1 + εhigh
  let below = 0;
  let sameElsewhere = true;
  let differBelow = true;
  for (let k = 0; k < d.n; k++) {
    if (!d.mask[k]) continue;
    const rho = Math.exp(d.inp.logp[k]! - d.inp.oldLogp[k]!);
    if (rho < 0.9) {
      below++;
      const A = d.inp.advantages[Math.floor(k / 8)]!;
      if (!(Math.abs(two.dlogp[k]! - (-0.9 * A) / two.metrics.tokens) < 1e-14 && Math.abs(one.dlogp[k]! - (-rho * A) / two.metrics.tokens) < 1e-14)) differBelow = false;
    } else if (two.dlogp[k] !== one.dlogp[k]) sameElsewhere = false;
  }
  t.ok(below > 0, `tokens with ρ < 1 − εlow: ${below}`);
  t.ok(differBelow, 'below 1 − εlow: two-sided uses 1 − εlow, cispo uses ρ');
  t.ok(sameElsewhere, 'elsewhere the same gradient');
  let low = 0;
  let high = 0;
  for (let k = 0; k < d.n; k++) if (d.mask[k]) {
    const rho = Math.exp(d.inp.logp[k]! - d.inp.oldLogp[k]!);
    if (rho < 0.9) low++;
    if (rho > 1.1) high++;
  }
  t.equal(two.metrics.clipFractionLow, low / two.metrics.tokens, 'clipFractionLow: ρ < 1 − εlow whatever A');
  t.equal(two.metrics.clipFractionHigh, high / two.metrics.tokens, 'clipFractionHigh: ρ > 1 + εhigh whatever A');
});

t.test('reference: clipCov chooses exactly k candidates, the k smallest Philox keys', async (t) => {
  const rng = new Rng(seed + 8);
  const o: RefLossOptions = { ...BASE, surrogate: 'clipCov', clipCovLb: 0.05, clipCovUb: 5, covSeed: 99 };
  const d = draw(rng, { s: 8, l: 8, perTokenAdv: true, spread: 0.3 }, o);
  const idx = [...Array(d.n).keys()].filter((k) => d.mask[k]);
  const aBar = idx.reduce((a, k) => a + d.inp.advantages[k]!, 0) / idx.length;
  const lBar = idx.reduce((a, k) => a + d.inp.logp[k]!, 0) / idx.length;
  const cand = idx.filter((k) => {
    const A = d.inp.advantages[k]!;
    const rho = Math.exp(d.inp.logp[k]! - d.inp.oldLogp[k]!);
    const clipped = -A * Math.min(Math.max(rho, 0.8), 1.2) > -A * rho;
    const cov = (A - aBar) * (d.inp.logp[k]! - lBar);
    return !clipped && cov > 0.05 && cov < 5;
  });
  t.ok(cand.length >= 3, `candidates: ${cand.length}`);
  const zeros = (g: Float64Array) => idx.filter((k) => g[k] === 0).length;
  const clip = refGrpoLoss(d.inp, { ...o, surrogate: 'clip' });
  for (const ratio of [1, 0.05, 1e-9]) {
    const r = refGrpoLoss(d.inp, { ...o, clipCovRatio: ratio });
    const k = Math.min(Math.max(1, Math.floor(ratio * idx.length)), cand.length);
    t.equal(zeros(r.dlogp) - zeros(clip.dlogp), k, `ratio ${ratio}: ${k} more zero gradients than clip`);
    const chosen = [...r.covChosen!.keys()].filter((j) => r.covChosen![j]);
    const bySmallKey = cand.slice().sort((a, b) => (covKey(a, 99) < covKey(b, 99) ? -1 : 1)).slice(0, k).sort((a, b) => a - b);
    t.same(chosen, bySmallKey, `ratio ${ratio}: the ${k} smallest keys`);
    let unchanged = true;
    for (const j of idx) if (!r.covChosen![j] && r.dlogp[j] !== clip.dlogp[j]) unchanged = false;
    t.ok(unchanged, 'unchosen tokens keep the clip gradient');
    t.equal(r.metrics.clipFraction, clip.metrics.clipFraction, 'clip metrics as clip');
  }
  // Another seed draws another subset of the same size (with k < candidates).
  const k = Math.max(1, Math.floor(0.05 * idx.length));
  if (k < cand.length) {
    const sets = new Set<string>();
    for (const covSeed of [0, 1, 2, 3, 2 ** 40 + 1]) {
      const r = refGrpoLoss(d.inp, { ...o, clipCovRatio: 0.05, covSeed });
      t.equal(r.covChosen!.reduce((a, b) => a + b, 0), k);
      sets.add(Array.from(r.covChosen!).join(''));
    }
    t.ok(sets.size > 1, `covSeed changes the choice (${sets.size} distinct subsets of 5)`);
  }
  // Nothing valid: nothing chosen, no NaN.
  const empty = refGrpoLoss({ ...d.inp, mask: new Uint8Array(d.n) }, { ...o, clipCovRatio: 0.5 });
  t.equal(empty.covChosen!.reduce((a, b) => a + b, 0), 0);
  t.equal(empty.loss, 0);
});

t.test('reference: luspo = clip + sequence ratio + seqMeanTokenSum is (1/S) Σ_s |s|·(-J_s)', async (t) => {
  const rng = new Rng(seed + 9);
  const o: RefLossOptions = { ...BASE, surrogate: 'clip', importanceSamplingLevel: 'sequence', aggregation: 'seqMeanTokenSum' };
  const d = draw(rng, { s: 6, l: 7 }, o);
  const r = refGrpoLoss(d.inp, o);
  let want = 0;
  for (let s = 0; s < d.s; s++) {
    const { rho, cnt } = seqMeanRatio(d, s);
    const A = d.inp.advantages[s]!;
    const J = Math.min(rho * A, Math.min(Math.max(rho, 0.8), 1.2) * A);
    want += (cnt * -J) / d.s;
  }
  t.ok(Math.abs(r.loss - want) <= 1e-12 * Math.abs(want), `loss ${r.loss} = ${want}`);
});

// ---------------------------------------------------------------- the library

t.test('presets: the §9.4 loss types', async (t) => {
  t.match(gk.resolveLossOptions({ lossType: 'sapo' }), { surrogate: 'sapo', aggregation: 'seqMeanTokenMean', tauPos: 1, tauNeg: 1.05 });
  t.match(gk.resolveLossOptions({ lossType: 'luspo' }), { surrogate: 'clip', importanceSamplingLevel: 'sequence', aggregation: 'seqMeanTokenSum' });
  t.match(gk.resolveLossOptions({ lossType: 'vespo' }), { surrogate: 'vespo', aggregation: 'tokenMean', vespoKPos: 2, vespoLambdaPos: 3, vespoKNeg: 3, vespoLambdaNeg: 2 });
  t.match(gk.resolveLossOptions({ lossType: 'geoMean' }), { surrogate: 'geoMean', aggregation: 'seqMeanTokenMean', epsilonLow: 0.2, epsilonHigh: 0.2 });
  t.match(gk.resolveLossOptions({ lossType: 'clipCov' }), { surrogate: 'clipCov', aggregation: 'tokenMean', clipCovRatio: 2e-4, clipCovLb: 1, clipCovUb: 5, covSeed: 0 });
  t.match(gk.resolveLossOptions({ lossType: 'klCov' }), { surrogate: 'klCov', aggregation: 'tokenMean', klCovRatio: 2e-4, ppoKlCoef: 1 });
  t.match(gk.resolveLossOptions({ lossType: 'gpg' }), { surrogate: 'gpg', aggregation: 'tokenMean' });
  t.match(gk.resolveLossOptions({ surrogate: 'cispoTwoSided' }), { surrogate: 'cispoTwoSided', epsilonLow: 0.2, epsilonHigh: 0.2 });
  t.match(gk.resolveLossOptions({ lossType: 'geoMean', aggregation: 'tokenMean' }), { surrogate: 'geoMean', aggregation: 'tokenMean' }, 'explicit options win');
  t.match(gk.resolveLossOptions({ lossType: 'vespo', surrogate: 'gpg' }), { surrogate: 'gpg', aggregation: 'tokenMean' }, 'explicit surrogate wins');
});

t.test('refused combinations and parameters (GK_INVALID_ARG)', async (t) => {
  const logp = [-1, -2, -1.5, -0.5];
  const base = { logp, oldLogp: [-1.1, -1.9, -1.4, -0.6], advantages: [1, -1], entropy: [1, 2, 0.5, 0.1] };
  const withQ = { ...base, samplerLogp: [-1.2, -1.8, -1.3, -0.7] };
  const bad = async (name: string, inputs: gk.GrpoLossInputs, options: gk.GrpoLossOptions) =>
    t.test(name, async (t) => rejectsCode(t, () => gk.grpoLoss(inputs, options), 'GK_INVALID_ARG'));
  for (const lossType of ['vespo', 'geoMean', 'clipCov', 'klCov', 'gpg'] as const) {
    for (const importanceSamplingLevel of ['sequence', 'sequenceToken'] as const) await bad(`${lossType} with ${importanceSamplingLevel}`, base, { lossType, importanceSamplingLevel });
    await bad(`${lossType} with delta`, base, { lossType, delta: 3 });
  }
  for (const level of ['sequence', 'sequenceMean'] as const) await bad(`vespo with rollout level ${level}`, withQ, { lossType: 'vespo', rolloutCorrection: { level } });
  await bad('vespo with samplerLogp and the default (sequence-level) correction', withQ, { lossType: 'vespo' });
  await bad('geoMean with topEntropyQuantile 0.5', base, { lossType: 'geoMean', topEntropyQuantile: 0.5 });
  await bad('geoMean with offPolicyMaskThreshold', base, { lossType: 'geoMean', offPolicyMaskThreshold: 0.1 });
  for (const key of ['vespoKPos', 'vespoKNeg'] as const) for (const v of [NaN, Infinity, -Infinity]) await bad(`vespo ${key} ${v}`, base, { lossType: 'vespo', [key]: v });
  for (const key of ['vespoLambdaPos', 'vespoLambdaNeg'] as const) for (const v of [NaN, Infinity]) await bad(`vespo ${key} ${v}`, base, { lossType: 'vespo', [key]: v });
  for (const key of ['clipCovRatio', 'klCovRatio'] as const) for (const v of [NaN, -0.1, 0, 1.5, Infinity]) await bad(`${key} ${v}`, base, { lossType: key === 'clipCovRatio' ? 'clipCov' : 'klCov', [key]: v });
  await bad('clipCovLb = clipCovUb', base, { lossType: 'clipCov', clipCovLb: 2, clipCovUb: 2 });
  await bad('clipCovLb > clipCovUb', base, { lossType: 'clipCov', clipCovLb: 3, clipCovUb: 2 });
  await bad('clipCovLb NaN', base, { lossType: 'clipCov', clipCovLb: NaN });
  await bad('clipCovUb Infinity', base, { lossType: 'clipCov', clipCovUb: Infinity });
  for (const v of [-0.5, NaN, Infinity]) await bad(`ppoKlCoef ${v}`, base, { lossType: 'klCov', ppoKlCoef: v });
  for (const v of [-1, 1.5, NaN, 2 ** 53, Infinity]) await bad(`covSeed ${v}`, base, { lossType: 'clipCov', covSeed: v });
  // Valid edges resolve.
  for (const options of [
    { lossType: 'klCov', ppoKlCoef: 0 }, { lossType: 'clipCov', clipCovRatio: 1, covSeed: 2 ** 53 - 1 }, { lossType: 'vespo', vespoKPos: 0, vespoKNeg: 0 }, { lossType: 'vespo', vespoLambdaPos: 0, vespoLambdaNeg: -2 },
    { lossType: 'geoMean', rolloutCorrection: { level: 'sequence' } }, { lossType: 'geoMean', rolloutCorrection: { level: 'sequenceMean' } },
    { lossType: 'vespo', rolloutCorrection: { level: 'token' } }, { lossType: 'vespo', rolloutCorrection: false }, { surrogate: 'cispoTwoSided', importanceSamplingLevel: 'sequence' },
    { lossType: 'gpg', rolloutCorrection: { level: 'token', mode: 'mask', clipMin: 0.5, clipMax: 2 } },
  ] as gk.GrpoLossOptions[]) {
    const r = await gk.grpoLoss(options.rolloutCorrection !== undefined ? withQ : base, options);
    t.ok(Number.isFinite(r.loss), `${JSON.stringify(options)} resolves`);
  }
});

t.test('library matches the float64 reference on the §9.4 cases', async (t) => {
  let i = 0;
  for (const c of lossTypeCases(true)) assertCase(t, await runLossCase(seed + 100 + i++, c), seed);
  for (const c of fusedLossTypeCases(true)) assertCase(t, await runFusedCase(seed + 200 + i++, c), seed);
});

t.test('library gradient agrees with central finite differences of the reference loss', async (t) => {
  const rng = new Rng(seed + 10);
  const combos: [gk.GrpoLossOptions, 'plain' | 'comove'][] = [
    [{ lossType: 'gpg', beta: 0.05 }, 'plain'],
    [{ surrogate: 'cispoTwoSided', aggregation: 'tokenMean' }, 'comove'],
    [{ lossType: 'vespo' }, 'comove'],
    [{ lossType: 'geoMean', beta: 0.05 }, 'plain'],
    [{ lossType: 'clipCov', clipCovRatio: 0.2, clipCovLb: 0.05 }, 'plain'],
    [{ lossType: 'klCov', klCovRatio: 0.2 }, 'plain'],
  ];
  for (const [options, mode] of combos) {
    const resolved = gk.resolveLossOptions(options) as unknown as RefLossOptions;
    let done = false;
    for (let attempt = 0; attempt < 20 && !done; attempt++) {
      const d = draw(rng, { s: 4, l: 8 }, resolved);
      const f32 = (a: ArrayLike<number>) => Float32Array.from(a);
      // float32 inputs, and the reference on exactly those values
      const inp = { ...d.inp, logp: Float64Array.from(f32(d.inp.logp)), oldLogp: Float64Array.from(f32(d.inp.oldLogp)), refLogp: Float64Array.from(f32(d.inp.refLogp!)), entropy: Float64Array.from(f32(d.inp.entropy!)), advantages: Float64Array.from(f32(d.inp.advantages)) };
      const r = fd(inp, { ...resolved, maxCompletionLength: 8 }, mode);
      if (!r.stable) continue;
      if (r.base.covChosen && r.base.covChosen.every((x) => x === 0)) continue;
      done = true;
      const out = await gk.grpoLoss({ logp: f32(inp.logp), oldLogp: f32(inp.oldLogp), refLogp: f32(inp.refLogp), entropy: f32(inp.entropy), advantages: f32(inp.advantages), completionMask: d.mask }, options);
      const err = relErr(out.gradLogp.data as Float32Array, r.fd);
      t.ok(err < 1e-5, `${JSON.stringify(options)}: native dlogp vs FD ${err.toExponential(2)}`);
    }
    t.ok(done, `${JSON.stringify(options)}: a stable draw`);
  }
});

t.test('raw entry points refuse the §9.4 combinations and parameters (child process: test/robust/cases.ts loss-type-args)', async (t) => {
  const root = path.resolve(__dirname, '..');
  const r = spawnSync(process.execPath, [...process.execArgv, path.join(root, 'test/robust/cases.ts'), 'loss-type-args'], {
    cwd: root, encoding: 'utf8', timeout: 120_000, env: process.env, maxBuffer: 16 * 2 ** 20,
  });
  t.equal(r.signal, null, `no signal (got ${r.signal})`);
  t.equal(r.status, 0, `exit status 0${r.status !== 0 ? `\n${r.stderr.slice(-2000)}` : ''}`);
  let out: Record<string, string> = {};
  try {
    out = JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as Record<string, string>;
  } catch {
    t.fail(`no result line (stdout: ${r.stdout.slice(-500)}, stderr: ${r.stderr.slice(-1500)})`);
  }
  const keys = Object.keys(out);
  t.ok(keys.length > 60, `${keys.length} outcomes`);
  for (const k of keys) t.equal(out[k], k.startsWith('ok') ? 'ok' : 'GK_INVALID_ARG', k);
});
