import t from 'tap';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  ArithmeticPolicy, arithmeticChartSpec, DEFAULT_TASK, TOKEN, VOCAB, decode, encode, evaluate, formatExample, promptText, runArithmeticDemo, splitProblems,
  supervisedStep,
} from '../lib/demos/arithmetic';
import { WindowMlp } from '../lib/demos/mlp';
import { accuracyReward, formatReward } from '../lib/rewards';
import { Rng } from '../lib/random';

t.test('tokenizer: tags and the end token are single tokens; decode gives text the rewards read', async (t) => {
  const text = '07+12=<think></think><answer>19</answer><eos>';
  const ids = encode(text);
  t.same(Array.from(ids), [0, 7, TOKEN.plus, 1, 2, TOKEN.equals, TOKEN.thinkOpen, TOKEN.thinkClose, TOKEN.answerOpen, 1, 9, TOKEN.answerClose, TOKEN.eos]);
  const completion = decode(ids.subarray(6));
  t.equal(completion, '<think></think><answer>19</answer>', 'stops at <eos>, tags verbatim');
  t.equal(formatReward(completion), 1);
  t.equal(accuracyReward(completion, 19), 1);
  t.equal(accuracyReward(decode(encode('<think></think><answer>07</answer>')), 7), 1, 'a zero-padded answer is the number');
  t.equal(decode(encode('<answer>3</answer><eos><think>')), '<answer>3</answer>', 'nothing after <eos>');
  t.equal(VOCAB.length, TOKEN.eos + 1);
  t.throws(() => encode('1-2'), /no token for '-'/);
});

t.test('the held-out problems are never trained on', async (t) => {
  const task = { ...DEFAULT_TASK };
  const { train, heldOut } = splitProblems(task);
  t.equal(heldOut.length, task.heldOut);
  const seen = new Set(train.map((p) => `${p.a}+${p.b}`));
  t.notOk(heldOut.some((p) => seen.has(`${p.a}+${p.b}`)), 'disjoint');
  t.ok(train.every((p) => p.sum === p.a + p.b && p.a <= task.maxA && p.b <= task.maxB));
  t.same(splitProblems(task), { train, heldOut }, 'the split is fixed');
});

t.test('WindowMlp backward matches central finite differences', async (t) => {
  const mlp = new WindowMlp({ inputVocab: 6, outputVocab: 5, window: 3, embedDim: 4, hidden: 7 }, { seed: 11 });
  const rng = new Rng(5);
  const rows = 9;
  const windows = Int32Array.from({ length: rows * 3 }, () => rng.int(0, 6));
  windows[0] = windows[3] = 2; // a token seen in the same slot by two rows, and in another slot
  windows[4] = 2;
  const c = Float64Array.from({ length: rows * 5 }, () => rng.normal());
  // L = Σ c ⊙ logits, so ∂L/∂logits = c.
  const loss = () => mlp.forward(windows, rows).reduce((s, z, i) => s + c[i]! * z, 0);
  loss();
  mlp.grads.fill(0);
  mlp.backward(c, 0.5);
  const analytic = Float64Array.from(mlp.grads, (g) => g / 0.5);
  let worst = 0;
  const p = mlp.params;
  for (let i = 0; i < p.length; i++) {
    const x0 = p[i]!;
    p[i] = x0 + 1e-3;
    const up = p[i]!;
    const lUp = loss();
    p[i] = x0 - 1e-3;
    const down = p[i]!;
    const lDown = loss();
    p[i] = x0;
    const numeric = (lUp - lDown) / (up - down);
    worst = Math.max(worst, Math.abs(numeric - analytic[i]!) / (1e-3 + Math.abs(numeric)));
  }
  t.ok(worst < 1e-4, `every one of ${p.length} parameters: worst relative error ${worst.toExponential(2)}`);
});

t.test('the policy: forward rows are the next-token logits of each prefix; the cold-start step lowers the cross-entropy', async (t) => {
  const policy = new ArithmeticPolicy({ window: 8, embedDim: 4, hidden: 16, seed: 3, lr: 1e-2 });
  const prompt = encode('3+4=');
  const completion = encode('<think></think><answer>07</answer><eos>');
  const seq = Int32Array.from([...prompt, ...completion]);
  const packed = policy.forward({ sequences: [seq, seq.slice(0, 7)], promptLengths: [4, 4] }).data as Float32Array;
  t.equal(packed.length, (completion.length + 3) * VOCAB.length, 'one row per completion token, packed');
  const contexts = Array.from({ length: completion.length }, (_, i) => seq.slice(0, 4 + i));
  const next = policy.nextTokenLogits(contexts).data as Float32Array;
  t.same(Array.from(packed.subarray(0, next.length)), Array.from(next), 'same logits as one context at a time');
  const clone = policy.clone();
  const batch = { sequences: [seq], promptLengths: [4] };
  const first = await supervisedStep(policy, batch);
  let last = first;
  for (let i = 0; i < 20; i++) last = await supervisedStep(policy, batch);
  t.ok(last < first / 2, `cross-entropy ${first.toFixed(3)} → ${last.toFixed(3)}`);
  t.same(Array.from(clone.forward(batch).data as Float32Array), Array.from(next.subarray(0, completion.length * VOCAB.length)), 'the clone is frozen');
  const ev = evaluate(policy, [{ a: 3, b: 4, sum: 7 }], { maxA: 9, maxB: 9, heldOut: 0 });
  t.same(ev, { accuracy: 1, format: 1, completions: ['<think></think><answer>07</answer>'] }, 'greedy decoding of the memorised example');
  t.equal(promptText({ a: 3, b: 4, sum: 7 }), '03+4=', 'operands zero-padded to the task\'s widths');
  t.equal(promptText({ a: 3, b: 4, sum: 7 }, { maxA: 9, maxB: 9, heldOut: 0 }), '3+4=');
  t.equal(formatExample(7), '<think></think><answer>07</answer><eos>');
});

t.test('demo: after a format-only cold start, GRPO lifts held-out accuracy from chance to >= 90% with the format kept', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gk-arith-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  const chartFile = path.join(dir, 'rewards.svg');
  const t0 = performance.now();
  const r = await runArithmeticDemo({ seed: 1, chartFile, progress: false });
  const seconds = (performance.now() - t0) / 1e3;
  t.comment(`cold start ${r.sftSteps} steps ${r.sftSeconds.toFixed(1)} s, GRPO ${r.grpoSteps} steps ${r.grpoSeconds.toFixed(1)} s, total ${seconds.toFixed(1)} s`);
  t.comment(`held-out accuracy ${r.accuracyBefore} → ${r.accuracyAfter}, format ${r.formatBefore} → ${r.formatAfter}, training problems ${r.trainAccuracyAfter}`);
  t.comment(r.samples.join('\n'));
  t.ok(r.accuracyBefore < 0.3, `before GRPO: chance level (${r.accuracyBefore})`);
  t.ok(r.accuracyAfter >= 0.9, `after GRPO: held-out accuracy ${r.accuracyAfter} >= 0.9`);
  t.ok(r.formatAfter >= 0.9, `format kept: ${r.formatAfter} >= 0.9`);
  t.equal(r.rewardCurves.format.length, r.grpoSteps);
  t.equal(r.rewardCurves.accuracy.length, r.grpoSteps);
  t.ok(r.sftCurve.length === r.sftSteps && r.sftCurve.at(-1)! < r.sftCurve[0]!, 'the cold-start loss falls');
  const tail = (a: number[]) => a.slice(-10).reduce((s, x) => s + x, 0) / 10;
  t.ok(tail(r.rewardCurves.accuracy) > r.rewardCurves.accuracy[0]! + 0.5, 'the accuracy reward rises');
  t.ok(tail(r.rewardCurves.format) > 0.9, 'the format reward stays high');
  t.equal(r.chartFile, chartFile);
  const svg = fs.readFileSync(chartFile, 'utf8');
  t.match(svg, /^<svg/);
  t.match(svg, /format reward/);
  t.match(svg, /accuracy reward/);
  // Two panels on one step axis: fractions (0-1) above, cross-entropy in nats below, and the
  // SFT -> GRPO boundary drawn at step 0 in both.
  t.match(svg, /reward \/ accuracy \(0-1\)/, 'the upper panel: rewards and accuracy');
  t.match(svg, /SFT cross-entropy \(nats\)/, 'the lower panel: the cross-entropy in nats');
  t.match(svg, /SFT \| GRPO →/, 'the boundary is labelled');
  const spec = arithmeticChartSpec(r.sftCurve, r.rewardCurves, r.heldOutCurve, true) as { vconcat: { layer: { mark: { type: string }; data?: { values: unknown[] }; encoding: { x: { datum?: number } } }[] }[] };
  t.equal(spec.vconcat.length, 2, 'two panels');
  for (const panel of spec.vconcat) {
    const rule = panel.layer.find((l) => l.mark.type === 'rule');
    t.equal(rule?.encoding.x.datum, 0, 'a rule at step 0 (the first GRPO step)');
    t.same(rule?.data?.values, [{}], 'with a data row of its own, so that it is drawn');
  }
  const rules = svg.match(/class="mark-rule role-mark /g) ?? [];
  t.ok(rules.length >= 2, `the SVG holds the two boundary rules (${rules.length})`);
});

t.test('a chart file that is not .svg is refused before any training', async (t) => {
  const t0 = Date.now();
  await t.rejects(runArithmeticDemo({ chartFile: 'x.png', progress: false }), { code: 'GK_INVALID_ARG', message: /must end in \.svg; got 'x\.png'/ });
  t.ok(Date.now() - t0 < 2000, 'refused at once');
});
