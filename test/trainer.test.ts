import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as gk from '../lib/index';
import { GRPOTrainer, type GRPOTrainerOptions, type Policy, type RolloutBatch } from '../lib/trainer';
import { rejectsCode } from './helpers';

/** A context-free toy policy: the same logits θ at every position, plain SGD. */
class Bandit implements Policy {
  readonly vocabSize = 3;
  theta = new Float32Array([0.2, -0.1, 0.05]);
  grad = new Float32Array(3);
  rows = 0;
  forwards = 0;
  constructor(readonly lr: number) {}
  private tile(n: number): gk.Tensor {
    const z = new Float32Array(n * 3);
    for (let i = 0; i < n; i++) z.set(this.theta, i * 3);
    return gk.Tensor.from(z, { shape: [n, 3] });
  }
  forward(b: RolloutBatch): gk.Tensor {
    this.forwards++;
    this.rows = b.sequences.reduce((s, q, i) => s + q.length - b.promptLengths[i]!, 0);
    return this.tile(this.rows);
  }
  backward(g: gk.Tensor, scale: number): void {
    const d = g.data as Float32Array;
    for (let r = 0; r < this.rows; r++) for (let j = 0; j < 3; j++) this.grad[j] = this.grad[j]! + scale * d[r * 3 + j]!;
  }
  step(): void {
    for (let j = 0; j < 3; j++) this.theta[j] = this.theta[j]! - this.lr * this.grad[j]!;
    this.grad.fill(0);
  }
  nextTokenLogits(c: readonly Int32Array[]): gk.Tensor {
    return this.tile(c.length);
  }
}

const zeros = (ctx: gk.RewardContext) => ctx.completion.split(' ').filter((x) => x === '0').length;
const prompts = (n: number) => Array.from({ length: n }, (_, i) => ({ tokens: [i], sample: i }));
const make = (policy: Bandit, o: Partial<GRPOTrainerOptions> = {}) =>
  new GRPOTrainer({ policy, rewards: [{ name: 'zeros', fn: zeros }], numGenerations: 6, maxCompletionLength: 4, eosTokenId: 2, seed: 7, ...o });

t.test('a step samples, scores, and moves the policy toward the reward', async (t) => {
  const p = new Bandit(0.5);
  const tr = make(p);
  const before = p.theta[0]! - p.theta[1]!;
  const m = await tr.step(prompts(4));
  t.equal(tr.lastRollouts.length, 24, 'G completions per prompt');
  t.ok(tr.lastRollouts.every((r) => r.oldLogp.length === r.tokens.length && r.oldLogp.every((x) => x <= 0)), 'old log-probs recorded at sampling');
  t.equal(m.ratioMean, 1, 'μ = 1, one minibatch: on-policy, ρ = 1');
  t.equal(m.clipFraction, 0);
  t.ok(p.theta[0]! - p.theta[1]! > before, 'the rewarded token gains probability');
  t.ok(m.tokensPerSecond > 0 && m.completionLengthMax <= 4 && m.rewards.zeros !== undefined);
  for (let i = 0; i < 15; i++) await tr.step(prompts(4));
  const after = await tr.step(prompts(4));
  t.ok(after.rewardMean > m.rewardMean, `mean reward rises ${m.rewardMean.toFixed(2)} → ${after.rewardMean.toFixed(2)}`);
});

t.test('μ > 1 reuses the rollouts off-policy: new log-probs differ from old, and the ratio is clipped', async (t) => {
  const p = new Bandit(4);
  const tr = make(p, { numIterations: 3 });
  const m = await tr.step(prompts(4));
  t.equal(p.forwards, 3, 'one forward per pass');
  const r = tr.lastRollouts[0]!;
  const logits = p.forward({ sequences: [Int32Array.from([...r.prompt.tokens, ...r.tokens])], promptLengths: [1] });
  const { logp } = await gk.tokenLogProbs(logits, r.tokens);
  t.not(Array.from(logp.data as Float32Array), Array.from(r.oldLogp), 'after the first update the policy no longer matches the sampling one');
  t.not(m.ratioMean, 1, `ratio mean ${m.ratioMean}`);
  t.ok(m.clipFraction > 0, `clip fraction ${m.clipFraction}`);
});

t.test('gradient accumulation over minibatches equals one big batch (global normalizers)', async (t) => {
  for (const lossType of ['dapo', 'grpo', 'dr_grpo'] as const) {
    const a = new Bandit(1);
    const b = new Bandit(1);
    await make(a, { lossType }).step(prompts(4));
    await make(b, { lossType, miniBatchSize: 6, gradientAccumulationSteps: 4 }).step(prompts(4));
    for (let j = 0; j < 3; j++) t.ok(Math.abs(a.theta[j]! - b.theta[j]!) < 1e-5, `${lossType}: θ[${j}] ${a.theta[j]} vs ${b.theta[j]}`);
  }
  const c = new Bandit(1);
  const m = await make(c, { miniBatchSize: 6, gradientAccumulationSteps: 2 }).step(prompts(4));
  t.equal(m.optimizerSteps, 2, '4 minibatches / 2 accumulated = 2 optimizer steps');
});

t.test('NaN / undefined rewards and zero-variance groups', async (t) => {
  const p = new Bandit(1);
  const tr = make(p, {
    rewards: [
      { name: 'zeros', fn: (c) => (c.sample === 0 ? undefined : zeros(c)) },
      { name: 'flat', fn: (c) => (c.sample === 0 ? NaN : 1), weight: 0.5 },
    ],
  });
  const m = await tr.step(prompts(3));
  t.ok(tr.lastRollouts.filter((r) => r.promptIndex === 0).every((r) => r.advantage === 0 && Number.isNaN(r.reward)), 'all-NaN samples: advantage 0');
  t.ok(m.zeroVarianceGroups >= 1);
  t.ok(Number.isNaN(m.rewards.flat!.mean) === false && m.rewards.flat!.mean === 1);
  const q = new Bandit(1);
  const theta = q.theta.slice();
  const flat = await make(q, { rewards: [{ name: 'const', fn: () => 3 }] }).step(prompts(3));
  t.equal(flat.zeroVarianceGroups, 3);
  t.same(Array.from(q.theta), Array.from(theta), 'no signal, no update');
});

t.test('KL to a reference, metrics callback and JSONL, abort between steps', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gk-trainer-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'metrics.jsonl');
  const ref = new Bandit(0);
  const p = new Bandit(2);
  const ac = new AbortController();
  const seen: number[] = [];
  const tr = make(p, { reference: ref, beta: 0.1, metricsFile: file, numIterations: 2, onStep: (m) => (seen.push(m.step), m.step === 2 && ac.abort()) });
  const out = await tr.train(() => prompts(2), { steps: 10, signal: ac.signal });
  t.equal(out.length, 3, 'stopped cleanly after the step that aborted');
  t.same(seen, [0, 1, 2]);
  t.ok(out[2]!.klMean! > 0, `KL to the reference grows: ${out[2]!.klMean}`);
  const lines = fs.readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  t.equal(lines.length, 3);
  t.equal(lines[1].step, 1);
});

t.test('a user sampler and reference log-probs by function', async (t) => {
  const p = new Bandit(1);
  let calls = 0;
  const tr = make(p, {
    numGenerations: 2,
    sampler: (ps, g) => {
      calls++;
      return ps.flatMap((_, i) => Array.from({ length: g }, (_, k) => ({ tokens: [k % 3, (i + k) % 3], ...(k === 0 ? { logp: [-1, -1] } : {}) })));
    },
    reference: (rs) => rs.map((r) => new Float32Array(r.tokens.length).fill(-1.2)),
    beta: 0.1,
  });
  const m = await tr.step(prompts(3));
  t.equal(calls, 1);
  t.same(Array.from(tr.lastRollouts[0]!.tokens), [0, 0]);
  t.same(Array.from(tr.lastRollouts[0]!.oldLogp), [-1, -1], 'given old log-probs are kept');
  const r1 = tr.lastRollouts[1]!;
  const z = Array.from(p.theta); // before the update the sampler's missing logps came from the policy
  t.ok(r1.oldLogp.every((x) => x < 0) && r1.oldLogp.length === 2, `computed old log-probs ${Array.from(r1.oldLogp)} (θ now ${z})`);
  t.same(Array.from(tr.lastRollouts[2]!.refLogp!), [Math.fround(-1.2), Math.fround(-1.2)], 'reference log-probs from the function');
  t.ok(m.klMean! > 0);
  await rejectsCode(t, () => make(new Bandit(1), { sampler: () => [] }).step(prompts(1)), 'GK_SHAPE', /sampler must return 6 completions/);
  await rejectsCode(t, () => make(new Bandit(1), { beta: 0.1, reference: () => [] }).step(prompts(1)), 'GK_SHAPE', /one log-prob array per rollout/);
});

t.test('spec §9.1-9.2 in the trainer: a user sampler\'s log-probs become samplerLogp, the old ones come from the policy', async (t) => {
  const p = new Bandit(1);
  const given = [-0.9, -1.3];
  const tr = make(p, {
    numGenerations: 2,
    sampler: (ps, g) => ps.flatMap((_, i) => Array.from({ length: g }, (_, k) => ({ tokens: [k % 3, (i + k) % 3], logp: given }))),
    rolloutCorrection: { level: 'token', mode: 'truncate', clipMax: 2 },
    rolloutRejection: [{ statistic: 'seqMean_k3', threshold: 50 }],
    offPolicyMaskThreshold: 0.5,
    biasCorrectedKl: true,
    beta: 0.05,
    reference: (rs) => rs.map((r) => new Float32Array(r.tokens.length).fill(-1.2)),
  });
  const before = Array.from(p.theta);
  const m = await tr.step(prompts(3));
  const r0 = tr.lastRollouts[0]!;
  t.same(Array.from(r0.samplerLogp!), given.map(Math.fround), 'the sampler log-probs are kept as samplerLogp');
  t.notSame(Array.from(r0.oldLogp), given.map(Math.fround), 'the old log-probs are the policy\'s');
  t.ok(r0.oldLogp.every((x) => x < 0 && Number.isFinite(x)));
  t.ok(Number.isFinite(m.loss), `finite loss ${m.loss}`);
  t.ok(m.samplerKl! > 0, `samplerKl ${m.samplerKl}`);
  t.ok(m.isWeightMean! > 0 && m.isWeightMean! <= 2, `isWeightMean ${m.isWeightMean}`);
  t.equal(m.rejectedFraction, 0, 'a loose rejection threshold rejects nothing');
  t.ok(m.offPolicyMaskedFraction! >= 0 && m.offPolicyMaskedFraction! <= 1, `offPolicyMaskedFraction ${m.offPolicyMaskedFraction}`);
  t.notSame(Array.from(p.theta), before, 'the policy moved');
  await rejectsCode(t, () => make(new Bandit(1), { rolloutCorrection: { level: 'token' } }), 'GK_INVALID_ARG', /user sampler/);
});

t.test('spec §9.8 adaptive entropy coefficient (TRL use_adaptive_entropy)', async (t) => {
  // Target above any entropy: the coefficient rises by δ per optimizer step up to the max; the
  // term is off during the first optimizer step (no previous entropy) and on after it.
  const up = make(new Bandit(1), { useAdaptiveEntropy: true, entropyCoef: 0.99, entropyTarget: 100, entropyCoefDelta: 0.005 });
  const base = make(new Bandit(1), {});
  const u1 = await up.step(prompts(2));
  const b1 = await base.step(prompts(2));
  t.equal(u1.loss, b1.loss, 'first optimizer step: no entropy term yet (same loss as entropyCoef 0)');
  t.equal(u1.entropyCoef, 0.995, 'c + δ');
  const u2 = await up.step(prompts(2));
  const b2 = await base.step(prompts(2));
  t.not(u2.loss, b2.loss, 'second step: the term applies');
  t.equal(u2.entropyCoef, 1, 'capped at entropyCoefMax');
  // Target below any entropy: the coefficient falls to the min and the term never applies.
  const down = make(new Bandit(1), { useAdaptiveEntropy: true, entropyCoef: 0.01, entropyTarget: -1, entropyCoefDelta: 0.004, entropyCoefMin: 0.005 });
  const base2 = make(new Bandit(1), {});
  for (let k = 0; k < 3; k++) {
    const d = await down.step(prompts(2));
    const b = await base2.step(prompts(2));
    t.equal(d.loss, b.loss, `step ${k}: the term stays off while the entropy is above the target`);
    t.equal(d.entropyCoef, [0.006, 0.005, 0.005][k], 'c - δ, floored at entropyCoefMin');
  }
  await rejectsCode(t, () => make(new Bandit(1), { useAdaptiveEntropy: 1 as never }), 'GK_INVALID_ARG', /useAdaptiveEntropy/);
  await rejectsCode(t, () => make(new Bandit(1), { useAdaptiveEntropy: true, entropyCoefMin: 2, entropyCoefMax: 1 }), 'GK_INVALID_ARG', /entropyCoefMin \(2\) must be <= entropyCoefMax/);
  await rejectsCode(t, () => make(new Bandit(1), { entropyCoefDelta: -1 }), 'GK_INVALID_ARG', /entropyCoefDelta must be >= 0/);
});

t.test('bad options', async (t) => {
  const p = new Bandit(1);
  await rejectsCode(t, () => new GRPOTrainer(undefined as never), 'GK_INVALID_ARG');
  await rejectsCode(t, () => make(p, { policy: {} as never }), 'GK_INVALID_ARG', /policy must implement/);
  await rejectsCode(t, () => make(p, { rewards: [] }), 'GK_INVALID_ARG', /rewards/);
  await rejectsCode(t, () => make(p, { numGenerations: 0 }), 'GK_INVALID_ARG', /numGenerations/);
  await rejectsCode(t, () => make(p, { beta: 0.1 }), 'GK_INVALID_ARG', /reference/);
  await rejectsCode(t, () => make(p, { lossType: 'x' as never }), 'GK_INVALID_ARG', /lossType/);
  await rejectsCode(t, () => make(p, { bogus: 1 } as never), 'GK_INVALID_ARG', /unknown option 'bogus'/);
  await rejectsCode(t, () => make(p).step([]), 'GK_INVALID_ARG', /prompts/);
  await rejectsCode(t, () => make(p, { rewards: [{ name: 'bad', fn: () => Infinity }] }).step(prompts(1)), 'GK_NONFINITE', /'bad'/);
});

t.test('every advantage estimator of spec §9.5 runs in the trainer, with the completion lengths where it needs them', async (t) => {
  for (const estimator of ['grpo', 'rloo', 'opo', 'gpg', 'grpoPassK', 'reinforcePlusPlus', 'reinforcePlusPlusBaseline'] as const) {
    const p = new Bandit(0.5);
    const tr = make(p, { advantageEstimator: estimator });
    const m = await tr.step(prompts(3));
    t.ok(Number.isFinite(m.loss), `${estimator}: a step with a finite loss`);
    const rs = tr.lastRollouts;
    // The trainer's advantages are the op's on the same rewards, with the estimator's own scale.
    const want = await gk.groupAdvantages(Float64Array.from(rs, (r) => r.reward), {
      groupSize: 6, estimator, ...(estimator === 'opo' || estimator.startsWith('reinforce') ? { lengths: rs.map((r) => r.tokens.length) } : {}),
    });
    t.same(rs.map((r) => r.advantage), Array.from(want.advantages.data), `${estimator}: advantages as groupAdvantages gives them`);
  }
});

t.test('every loss type of spec §9.4 trains in the trainer: the mean reward rises', async (t) => {
  for (const lossType of ['sapo', 'luspo', 'vespo', 'geoMean', 'clipCov', 'klCov', 'gpg'] as const) {
    const p = new Bandit(0.5);
    const tr = make(p, { lossType, numIterations: 2, ...(lossType === 'clipCov' ? { clipCovRatio: 0.1, clipCovLb: -10, clipCovUb: 10 } : {}) });
    t.equal(tr.loss.surrogate, lossType === 'luspo' ? 'clip' : lossType, `${lossType}: the preset's surrogate`);
    const first = await tr.step(prompts(4));
    t.ok(Number.isFinite(first.loss), `${lossType}: a finite loss`);
    let last = first;
    for (let i = 0; i < 15; i++) last = await tr.step(prompts(4));
    t.ok(last.rewardMean > first.rewardMean, `${lossType}: mean reward ${first.rewardMean.toFixed(2)} → ${last.rewardMean.toFixed(2)}`);
  }
});

t.test('spec §9.4 combinations the trainer refuses up front', async (t) => {
  const p = new Bandit(0.5);
  const sampler = () => [];
  t.throws(() => make(p, { lossType: 'geoMean', aggregation: 'tokenMean' }), { code: 'GK_INVALID_ARG', message: /geoMean/ }, 'geoMean with tokenMean');
  t.throws(() => make(p, { lossType: 'vespo', sampler, rolloutRejection: [{ statistic: 'token_k3', threshold: 1 }] }), { code: 'GK_INVALID_ARG', message: /vespo refuses/ },
    'vespo with rejection and the default (sequence-level) correction');
  t.ok(make(p, { lossType: 'vespo', sampler, rolloutRejection: [{ statistic: 'token_k3', threshold: 1 }], rolloutCorrection: false }), 'with rolloutCorrection false it is accepted');
  t.ok(make(p, { lossType: 'geoMean', aggregation: 'constant' }), 'geoMean with constant is accepted');
});

t.test('spec §9.3 in the trainer: tokenAdvantages gives the loss one advantage per token', async (t) => {
  const run = async (f?: (r: gk.Rollout) => ArrayLike<number>) => {
    const p = new Bandit(0.5);
    const before = Float32Array.from(p.theta);
    const tr = make(p, f ? { tokenAdvantages: f } : {});
    await tr.step(prompts(4));
    return { delta: Array.from(p.theta, (x, j) => x - before[j]!), rollouts: tr.lastRollouts };
  };
  const plain = await run();
  const same = await run((r) => new Float32Array(r.tokens.length).fill(r.advantage));
  t.same(same.delta, plain.delta, 'each token given its completion\'s advantage: the same update, bit for bit');
  t.ok(same.rollouts.every((r) => r.tokenAdvantages?.length === r.tokens.length), 'the rollouts keep their per-token advantages');
  const twice = await run((r) => new Float32Array(r.tokens.length).fill(2 * r.advantage));
  for (let j = 0; j < 3; j++) t.ok(Math.abs(twice.delta[j]! - 2 * plain.delta[j]!) <= 1e-6 * Math.abs(plain.delta[j]!), `on-policy the update is linear in the advantages (θ${j}: ${twice.delta[j]} vs 2 × ${plain.delta[j]})`);
  const firstOnly = await run((r) => Float32Array.from(r.tokens, (_, i) => (i === 0 ? r.advantage : 0)));
  t.not(firstOnly.delta, plain.delta, 'zeroing all but the first token\'s advantage changes the update');
  const p = new Bandit(0.5);
  // Completions here are 1 to 4 tokens long: an empty array never fits.
  await rejectsCode(t, () => make(p, { tokenAdvantages: () => [] }).step(prompts(2)), 'GK_SHAPE', /returned 0 values/);
  await rejectsCode(t, () => make(p, { tokenAdvantages: (r) => new Array(r.tokens.length).fill(NaN) }).step(prompts(2)), 'GK_INVALID_ARG', /finite/);
  await rejectsCode(t, () => make(p, { tokenAdvantages: () => 3 as unknown as number[] }).step(prompts(2)), 'GK_INVALID_ARG', /array of numbers/);
  t.throws(() => make(p, { tokenAdvantages: 'yes' as unknown as () => number[] }), { code: 'GK_INVALID_ARG' }, 'not a function');
});
