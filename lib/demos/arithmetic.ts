// Demo 2: R1-Zero in miniature. A tiny language model (an MLP over the previous K tokens, with
// its own backward and Adam) first learns the output format <think>…</think><answer>…</answer>
// by a short supervised cold start on examples whose answers are random, then learns to add by
// GRPO with a format reward and an accuracy reward, and is judged on problems it never saw.
// The cold start's cross-entropy (tokenLogProbs / tokenLogProbsBackward) and GRPO's loss
// (grpoLoss, inside GRPOTrainer) run on the package's kernels.
//
// The problems: a two-digit a plus a one-digit b without carrying (a = 0…99, b = 0…9 with
// a's units digit + b ≤ 9), written with a fixed number of digits: '07+2=' → '09'. Of the 550
// problems, 100 are held out. They can only be solved by composing what the others teach (copy
// the tens digit, add the units), which the MLP picks up in a few hundred GRPO steps.
// Single-digit a+b would not do: its 100 problems share no parts, and an MLP that has learnt
// 80 of them (even by supervised training on the true sums) answers the 20 others at about
// chance.
import type { AbortSignalLike } from '../errors';
import { tokenLogProbs, tokenLogProbsBackward } from '../ops/logprobs';
import { accuracyReward, formatReward } from '../rewards';
import { Tensor } from '../tensor';
import type { Policy, RolloutBatch } from '../trainer/policy';
import { Rng } from '../random';
import { GRPOTrainer, type Prompt, type StepMetrics } from '../trainer/trainer';
import { checkChartFile, tryChart, writeVegaLite } from './chart';
import { WindowMlp, type WindowMlpShape } from './mlp';
import { progressBar } from './progress';

// ---------------------------------------------------------------------------------------------
// Vocabulary

/** The output vocabulary: ids 0-9 are the digits, then '+', '=', the four tags and the end token. */
export const VOCAB = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9', '+', '=', '<think>', '</think>', '<answer>', '</answer>', '<eos>'] as const;
export const TOKEN = {
  plus: 10,
  equals: 11,
  thinkOpen: 12,
  thinkClose: 13,
  answerOpen: 14,
  answerClose: 15,
  eos: 16,
  /** Input-only: fills the window before the start of a sequence; never predicted. */
  pad: 17,
} as const;
/** Size of the output distribution (the policy's vocabSize). */
export const VOCAB_SIZE = VOCAB.length;
/** Ids the model's window may hold: the vocabulary plus the pad. */
export const INPUT_VOCAB_SIZE = VOCAB.length + 1;

const BY_TEXT = new Map<string, number>(VOCAB.map((s, i) => [s, i]));
const MULTI = VOCAB.filter((s) => s.length > 1).sort((a, b) => b.length - a.length);

/** Text → token ids. Tags and '<eos>' are single tokens; whitespace is skipped. */
export function encode(text: string): Int32Array {
  const out: number[] = [];
  let i = 0;
  outer: while (i < text.length) {
    if (/\s/.test(text[i]!)) {
      i++;
      continue;
    }
    for (const m of MULTI)
      if (text.startsWith(m, i)) {
        out.push(BY_TEXT.get(m)!);
        i += m.length;
        continue outer;
      }
    const id = BY_TEXT.get(text[i]!);
    if (id === undefined) throw new Error(`encode: no token for '${text[i]}' at ${i} in ${JSON.stringify(text)}`);
    out.push(id);
    i++;
  }
  return Int32Array.from(out);
}

/** Token ids → text: tags verbatim, no separators; stops at (and drops) the end token. */
export function decode(tokens: ArrayLike<number>): string {
  let s = '';
  for (let i = 0; i < tokens.length; i++) {
    const id = tokens[i]!;
    if (id === TOKEN.eos) break;
    if (id === TOKEN.pad) continue;
    s += VOCAB[id] ?? '?';
  }
  return s;
}

// ---------------------------------------------------------------------------------------------
// The task: a+b= with a ∈ 0…maxA, b ∈ 0…maxB, every number written with a fixed number of
// digits (leading zeros), so that each digit keeps its place in the model's window.

export interface Problem {
  a: number;
  b: number;
  sum: number;
}

export interface ArithmeticTask {
  /** a ∈ [0, maxA]. */
  maxA: number;
  /** b ∈ [0, maxB]. */
  maxB: number;
  /** How many problems are held out (never trained on: not in the cold start, not in GRPO). */
  heldOut: number;
  /** Keep only problems without a carry (every column's digits sum to at most 9). Default false. */
  noCarry?: boolean;
}

/** True when adding a and b carries in some column. */
export function carries(a: number, b: number): boolean {
  for (; a > 0 || b > 0; a = Math.floor(a / 10), b = Math.floor(b / 10)) if ((a % 10) + (b % 10) > 9) return true;
  return false;
}

/** The demo's problems: a two-digit plus a one-digit number without carrying, 100 of 550 held out. */
export const DEFAULT_TASK: Readonly<ArithmeticTask> = { maxA: 99, maxB: 9, heldOut: 100, noCarry: true };

/** Every problem, split into a fixed held-out set and the training set (independent of the demo's seed). */
export function splitProblems(task: ArithmeticTask = DEFAULT_TASK): { train: Problem[]; heldOut: Problem[] } {
  const all: Problem[] = [];
  for (let a = 0; a <= task.maxA; a++)
    for (let b = 0; b <= task.maxB; b++) if (!(task.noCarry && carries(a, b))) all.push({ a, b, sum: a + b });
  new Rng(20250101).shuffle(all);
  const heldOut = all.slice(0, task.heldOut).sort((p, q) => p.a - q.a || p.b - q.b);
  const train = all.slice(task.heldOut);
  return { train, heldOut };
}

export function promptText(p: Problem, task: ArithmeticTask = DEFAULT_TASK): string {
  const pad = (x: number, max: number) => String(x).padStart(String(max).length, '0');
  return `${pad(p.a, task.maxA)}+${pad(p.b, task.maxB)}=`;
}

export function promptOf(p: Problem, task: ArithmeticTask = DEFAULT_TASK): Prompt<Problem> {
  const text = promptText(p, task);
  return { tokens: encode(text), text, sample: p };
}

/** The cold-start target: the format with an empty think block and the given answer (zero-padded to the task's answer width). */
export function formatExample(answer: number, task: ArithmeticTask = DEFAULT_TASK): string {
  return `<think></think><answer>${String(answer).padStart(answerWidth(task), '0')}</answer><eos>`;
}

/** The largest sum of the task's problems. */
export function maxSum(task: ArithmeticTask): number {
  if (!task.noCarry) return task.maxA + task.maxB;
  let m = 0;
  for (let a = 0; a <= task.maxA; a++) for (let b = 0; b <= task.maxB; b++) if (!carries(a, b)) m = Math.max(m, a + b);
  return m;
}

/** Digits of the largest sum: every answer is written with this many digits (zero-padded). */
export function answerWidth(task: ArithmeticTask): number {
  return String(maxSum(task)).length;
}

/** The completion length limit: the well-formed completion (<think></think><answer>…</answer><eos>) plus one. */
export function maxCompletion(task: ArithmeticTask): number {
  return 6 + answerWidth(task);
}

/** The smallest window that sees the whole prompt when the last answer digit is predicted. */
export function defaultWindow(task: ArithmeticTask): number {
  return String(task.maxA).length + String(task.maxB).length + 4 + answerWidth(task);
}

// ---------------------------------------------------------------------------------------------
// The policy

export interface ArithmeticModelOptions {
  window?: number;
  embedDim?: number;
  hidden?: number;
  lr?: number;
  seed?: number;
  /**
   * Initial scale of the embeddings of the non-digit tokens relative to the digits' (default 0.3).
   * Those tokens sit in the same window slots in every problem, so their share of the hidden
   * layer's input is common to all problems; a smaller share leaves the hidden features of
   * different problems less alike, and GRPO's updates for one problem disturb the others less.
   */
  structuralScale?: number;
}

/** The window an MLP sees to predict position t of `seq`: seq[t-K … t-1], padded at the start. */
function fillWindow(out: Int32Array, at: number, seq: ArrayLike<number>, t: number, K: number): void {
  for (let k = 0; k < K; k++) {
    const j = t - K + k;
    out[at + k] = j >= 0 ? seq[j]! : TOKEN.pad;
  }
}

/**
 * The demo's policy: a WindowMlp (embeddings of the previous K tokens → tanh hidden layer →
 * logits over the vocabulary) with its own backward and Adam.
 */
export class ArithmeticPolicy implements Policy {
  readonly vocabSize = VOCAB_SIZE;
  readonly mlp: WindowMlp;
  readonly window: number;

  constructor(o: ArithmeticModelOptions = {}, params?: Float32Array) {
    const shape: WindowMlpShape = {
      inputVocab: INPUT_VOCAB_SIZE,
      outputVocab: VOCAB_SIZE,
      window: o.window ?? defaultWindow(DEFAULT_TASK),
      embedDim: o.embedDim ?? 8,
      hidden: o.hidden ?? 64,
    };
    this.window = shape.window;
    this.mlp = new WindowMlp(shape, { seed: o.seed ?? 0, lr: o.lr ?? 3e-3, ...(params ? { params } : {}) });
    if (!params) {
      const k = o.structuralScale ?? 0.3;
      const D = shape.embedDim;
      for (let i = 10 * D; i < INPUT_VOCAB_SIZE * D; i++) this.mlp.params[i] = this.mlp.params[i]! * k;
    }
  }

  /** Adam's learning rate. */
  get lr(): number {
    return this.mlp.adam.lr;
  }
  set lr(v: number) {
    this.mlp.adam.lr = v;
  }

  /** A frozen copy (the KL reference): same parameters, learning rate 0. */
  clone(): ArithmeticPolicy {
    const s = this.mlp.shape;
    return new ArithmeticPolicy({ window: s.window, embedDim: s.embedDim, hidden: s.hidden, lr: 0 }, this.mlp.params);
  }

  private logits(windows: Int32Array, rows: number): Tensor {
    return Tensor.from(Float32Array.from(this.mlp.forward(windows, rows)), { shape: [rows, VOCAB_SIZE] });
  }

  forward(batch: RolloutBatch): Tensor {
    const K = this.window;
    let rows = 0;
    batch.sequences.forEach((s, i) => (rows += s.length - batch.promptLengths[i]!));
    const windows = new Int32Array(rows * K);
    let r = 0;
    batch.sequences.forEach((s, i) => {
      for (let t = batch.promptLengths[i]!; t < s.length; t++) fillWindow(windows, (r++) * K, s, t, K);
    });
    return this.logits(windows, rows);
  }

  backward(gradLogits: Tensor, scale: number): void {
    this.mlp.backward(gradLogits.toFloat32(), scale);
  }

  step(): void {
    this.mlp.step();
  }

  nextTokenLogits(contexts: readonly Int32Array[]): Tensor {
    const K = this.window;
    const windows = new Int32Array(contexts.length * K);
    contexts.forEach((c, i) => fillWindow(windows, i * K, c, c.length, K));
    return this.logits(windows, contexts.length);
  }
}

/** Greedy completions (argmax at each position, up to the end token or `maxLength`). */
export function greedyComplete(policy: ArithmeticPolicy, prompts: readonly Int32Array[], maxLength: number): Int32Array[] {
  const out: number[][] = prompts.map(() => []);
  const done = prompts.map(() => false);
  for (let t = 0; t < maxLength; t++) {
    const active = out.map((_, i) => i).filter((i) => !done[i]);
    if (active.length === 0) break;
    const ctx = active.map((i) => Int32Array.from([...prompts[i]!, ...out[i]!]));
    const z = policy.nextTokenLogits(ctx).data as Float32Array;
    active.forEach((i, a) => {
      let best = 0;
      for (let v = 1; v < VOCAB_SIZE; v++) if (z[a * VOCAB_SIZE + v]! > z[a * VOCAB_SIZE + best]!) best = v;
      out[i]!.push(best);
      if (best === TOKEN.eos) done[i] = true;
    });
  }
  return out.map((t) => Int32Array.from(t));
}

export interface Evaluation {
  /** Fraction of problems whose greedy completion is well formed and has the right sum. */
  accuracy: number;
  /** Fraction whose greedy completion is well formed (strict formatReward). */
  format: number;
  completions: string[];
}

/** Greedy decoding on `problems`: accuracy counts a completion only when it is also well formed. */
export function evaluate(policy: ArithmeticPolicy, problems: readonly Problem[], task: ArithmeticTask = DEFAULT_TASK): Evaluation {
  const comps = greedyComplete(policy, problems.map((p) => encode(promptText(p, task))), maxCompletion(task));
  let acc = 0;
  let fmt = 0;
  const completions = comps.map((c, i) => {
    const text = decode(c);
    const f = formatReward(text);
    fmt += f;
    if (f === 1 && accuracyReward(text, problems[i]!.sum) === 1) acc++;
    // An unfinished completion shows where it stopped.
    return c.includes(TOKEN.eos) ? text : `${text}…`;
  });
  return { accuracy: acc / problems.length, format: fmt / problems.length, completions };
}

// ---------------------------------------------------------------------------------------------
// Stage 1: supervised cold start on format-only examples

/**
 * One cross-entropy step on sequences (prompt + target completion): loss = −mean log p over
 * the completion tokens from the tokenLogProbs kernel, gradient from tokenLogProbsBackward
 * (∂loss/∂logp = −1/N per row), then the policy's backward and Adam step. Returns the loss.
 */
export async function supervisedStep(policy: ArithmeticPolicy, batch: RolloutBatch): Promise<number> {
  const logits = policy.forward(batch);
  const targets: number[] = [];
  batch.sequences.forEach((s, i) => {
    for (let t = batch.promptLengths[i]!; t < s.length; t++) targets.push(s[t]!);
  });
  const n = targets.length;
  const { logp, lse } = await tokenLogProbs(logits, targets);
  const lp = logp.data as Float32Array;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += lp[i]!;
  const grad = await tokenLogProbsBackward(logits, targets, { gradLogp: new Float32Array(n).fill(-1 / n) }, { lse, inPlace: true });
  policy.backward(grad, 1);
  policy.step();
  return -sum / n;
}

// ---------------------------------------------------------------------------------------------
// The demo

export interface ArithmeticDemoOptions {
  seed?: number;
  /** The problems. Default DEFAULT_TASK. */
  task?: Partial<ArithmeticTask>;
  /** Cold-start steps (format-only examples, random answers). Default 150. */
  sftSteps?: number;
  /** GRPO steps. Default 300. */
  grpoSteps?: number;
  /** Examples per cold-start step. Default 32. */
  sftBatch?: number;
  /** Problems per GRPO step (each gets numGenerations completions). Default 32. */
  promptsPerStep?: number;
  /** G. Default 16. */
  numGenerations?: number;
  /** μ. Default 1. */
  numIterations?: number;
  /** Adam's learning rate in the cold start. Default 1e-2. */
  sftLr?: number;
  /** Adam's learning rate in GRPO. Default 2e-2. */
  grpoLr?: number;
  /** KL coefficient toward the cold-started policy. Default 0.2. */
  beta?: number;
  /** Entropy bonus of the GRPO loss. Default 0.01. */
  entropyCoef?: number;
  /** The MLP. Defaults: window defaultWindow(task), embedDim 8, hidden 64, structuralScale 0.3. */
  model?: Omit<ArithmeticModelOptions, 'seed' | 'lr'>;
  /** Evaluate the held-out problems every this many GRPO steps (and after the last). Default 10. */
  evalEvery?: number;
  /** Where to write the chart (SVG); null: no chart. Default 'arithmetic-rewards.svg'. */
  chartFile?: string | null;
  /** Show progress bars (default: when stdout is a terminal). */
  progress?: boolean;
  /** Stops between steps (the result covers the steps run). */
  signal?: AbortSignalLike;
  onStep?: (m: StepMetrics) => void;
}

export interface ArithmeticDemoResult {
  task: ArithmeticTask;
  sftSeconds: number;
  grpoSeconds: number;
  sftSteps: number;
  grpoSteps: number;
  /**
   * Greedy accuracy on the held-out problems (on every problem when the task holds none out)
   * after the cold start, before GRPO: chance level. An answer counts only when well formed.
   */
  accuracyBefore: number;
  formatBefore: number;
  accuracyAfter: number;
  formatAfter: number;
  /** Greedy accuracy on (up to 200 of) the training problems after GRPO. */
  trainAccuracyAfter: number;
  /** Cross-entropy per cold-start step. */
  sftCurve: number[];
  /** Mean of each reward over the step's completions, per GRPO step. */
  rewardCurves: { format: number[]; accuracy: number[] };
  /** Held-out accuracy during GRPO (step 0: before it). */
  heldOutCurve: { step: number; accuracy: number }[];
  chartFile: string | null;
  /** Why no chart was drawn although one was asked for (an optional package is missing). */
  chartNote?: string;
  /** A few held-out prompts with their greedy completions after training. */
  samples: string[];
  policy: ArithmeticPolicy;
}

export async function runArithmeticDemo(o: ArithmeticDemoOptions = {}): Promise<ArithmeticDemoResult> {
  if (o.chartFile != null) checkChartFile(o.chartFile);
  const task: ArithmeticTask = { ...DEFAULT_TASK, ...o.task };
  const seed = o.seed ?? 1;
  const sftSteps = o.sftSteps ?? 150;
  const grpoSteps = o.grpoSteps ?? 300;
  const sftBatch = o.sftBatch ?? 32;
  const perStep = o.promptsPerStep ?? 32;
  const evalEvery = o.evalEvery ?? 10;
  const { train, heldOut } = splitProblems(task);
  if (train.length === 0) throw new Error('runArithmeticDemo: the task holds out every problem');
  const evalSet = heldOut.length ? heldOut : train;
  const trainSample = train.slice(0, 200);
  const rng = new Rng(seed * 7919 + 17);
  const policy = new ArithmeticPolicy({ window: defaultWindow(task), ...o.model, seed, lr: o.sftLr ?? 1e-2 });

  // Stage 1: the format, with random answers. Only the output layer learns here: training the
  // features on answers that do not depend on the operands would teach them to ignore the
  // operands, and GRPO would then start from features that are alike for every problem.
  const sftCurve: number[] = [];
  policy.mlp.freezeFeatures = true;
  let bar = progressBar(sftSteps, 'SFT', o.progress);
  let t0 = performance.now();
  for (let s = 0; s < sftSteps && !o.signal?.aborted; s++) {
    const sequences: Int32Array[] = [];
    const promptLengths: number[] = [];
    for (let i = 0; i < sftBatch; i++) {
      const prompt = encode(promptText(train[rng.int(0, train.length)]!, task));
      sequences.push(Int32Array.from([...prompt, ...encode(formatExample(rng.int(0, maxSum(task) + 1), task))]));
      promptLengths.push(prompt.length);
    }
    const loss = await supervisedStep(policy, { sequences, promptLengths });
    sftCurve.push(loss);
    bar.update(s + 1, { 'cross-entropy': loss.toFixed(3) });
  }
  bar.stop();
  const sftSeconds = (performance.now() - t0) / 1e3;
  const before = evaluate(policy, evalSet, task);

  // Stage 2: GRPO with the format and accuracy rewards, every parameter learning; a KL term
  // toward the cold-started policy and a small entropy bonus keep it exploring.
  policy.mlp.freezeFeatures = false;
  policy.lr = o.grpoLr ?? 2e-2;
  const beta = o.beta ?? 0.2;
  const trainer = new GRPOTrainer<Problem>({
    policy,
    ...(beta > 0 ? { reference: policy.clone() } : {}),
    rewards: [
      { name: 'format', fn: (ctx) => formatReward(ctx.completion) },
      { name: 'accuracy', fn: (ctx) => accuracyReward(ctx.completion, ctx.sample!.sum) },
    ],
    numGenerations: o.numGenerations ?? 16,
    numIterations: o.numIterations ?? 1,
    maxCompletionLength: maxCompletion(task),
    eosTokenId: TOKEN.eos,
    decode,
    beta,
    entropyCoef: o.entropyCoef ?? 0.01,
    seed,
  });
  // Passes over the training problems, each in a fresh random order: every problem is visited
  // equally often.
  let order: Problem[] = [];
  const pick = () => {
    if (order.length === 0) order = rng.shuffle(train.slice());
    return order.pop()!;
  };
  const rewardCurves = { format: [] as number[], accuracy: [] as number[] };
  const heldOutCurve: { step: number; accuracy: number }[] = [{ step: 0, accuracy: before.accuracy }];
  bar = progressBar(grpoSteps, 'GRPO', o.progress);
  t0 = performance.now();
  let done = 0;
  let last = before;
  for (let s = 0; s < grpoSteps && !o.signal?.aborted; s++) {
    const m = await trainer.step(Array.from({ length: Math.min(perStep, train.length) }, () => promptOf(pick(), task)));
    done++;
    rewardCurves.format.push(m.rewards.format!.mean);
    rewardCurves.accuracy.push(m.rewards.accuracy!.mean);
    o.onStep?.(m);
    if ((s + 1) % evalEvery === 0 || s + 1 === grpoSteps) {
      last = evaluate(policy, evalSet, task);
      heldOutCurve.push({ step: s + 1, accuracy: last.accuracy });
    }
    bar.update(s + 1, {
      format: m.rewards.format!.mean.toFixed(2),
      accuracy: m.rewards.accuracy!.mean.toFixed(2),
      'held-out accuracy': last.accuracy.toFixed(2),
    });
  }
  bar.stop();
  const grpoSeconds = (performance.now() - t0) / 1e3;
  const after = evaluate(policy, evalSet, task);
  const trainAfter = evaluate(policy, trainSample, task);

  let chart: { chartFile: string | null; chartNote?: string } = { chartFile: null };
  if (o.chartFile !== null) {
    const file = o.chartFile ?? 'arithmetic-rewards.svg';
    chart = await tryChart(() => writeVegaLite(file, arithmeticChartSpec(sftCurve, rewardCurves, heldOutCurve, heldOut.length > 0)));
  }
  const samples = evalSet.slice(0, 8).map((p, i) => `${promptText(p, task)}${after.completions[i]}`);
  return {
    task, sftSeconds, grpoSeconds, sftSteps: sftCurve.length, grpoSteps: done,
    accuracyBefore: before.accuracy, formatBefore: before.format, accuracyAfter: after.accuracy, formatAfter: after.format,
    trainAccuracyAfter: trainAfter.accuracy, sftCurve, rewardCurves, heldOutCurve, ...chart, samples, policy,
  };
}

/**
 * The demo's chart: two panels on one step axis, rewards and accuracy (0-1) above, the cold
 * start's cross-entropy (nats) below; SFT steps are negative, GRPO starts at step 0, and a rule
 * marks that boundary in both panels.
 */
export function arithmeticChartSpec(
  sftCurve: number[],
  rewardCurves: { format: number[]; accuracy: number[] },
  heldOutCurve: { step: number; accuracy: number }[],
  hasHeldOut: boolean,
): object {
  const fractions = [
    ...rewardCurves.format.map((y, x) => ({ series: 'format reward', x, y })),
    ...rewardCurves.accuracy.map((y, x) => ({ series: 'accuracy reward', x, y })),
    ...heldOutCurve.map((p) => ({ series: hasHeldOut ? 'held-out accuracy' : 'accuracy (greedy)', x: p.step, y: p.accuracy })),
  ];
  const ce = sftCurve.map((y, i) => ({ series: 'SFT cross-entropy', x: i - sftCurve.length, y }));
  const xMin = -sftCurve.length;
  const xMax = Math.max(1, rewardCurves.format.length);
  const x = { field: 'x', type: 'quantitative', title: 'step (cold-start SFT < 0 ≤ GRPO)', scale: { domain: [xMin, xMax], nice: false } };
  const boundary = (label: boolean) => [
    // (Each mark layer needs data of its own to be drawn: one empty row.)
    { data: { values: [{}] }, mark: { type: 'rule', color: '#444', strokeDash: [6, 4], strokeWidth: 1.5 }, encoding: { x: { datum: 0, type: 'quantitative' } } },
    ...(label ? [{ data: { values: [{}] }, mark: { type: 'text', align: 'right', dx: -6, dy: 6, baseline: 'top', color: '#444', fontWeight: 'bold' }, encoding: { x: { datum: 0, type: 'quantitative' }, y: { datum: 1, type: 'quantitative' }, text: { value: 'SFT | GRPO →' } } }] : []),
  ];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: 'R1-Zero in miniature: a+b= (format-only SFT cold start, then GRPO)',
    background: 'white',
    resolve: { scale: { color: 'independent' } },
    vconcat: [
      {
        width: 640, height: 260,
        layer: [
          {
            data: { values: fractions },
            mark: { type: 'line' },
            encoding: {
              x,
              y: { field: 'y', type: 'quantitative', title: 'reward / accuracy (0-1)', scale: { domain: [0, 1] } },
              color: { field: 'series', type: 'nominal', title: null },
            },
          },
          ...boundary(true),
        ],
      },
      {
        width: 640, height: 140,
        layer: [
          {
            data: { values: ce },
            mark: { type: 'line', color: '#9467bd' },
            encoding: {
              x,
              y: { field: 'y', type: 'quantitative', title: 'SFT cross-entropy (nats)', scale: { zero: true } },
              color: { field: 'series', type: 'nominal', title: null, scale: { range: ['#9467bd'] } },
            },
          },
          ...boundary(false),
        ],
      },
    ],
  };
}
