// Demo 1: a cat learns, by GRPO, to reach the meat in a house. The policy is a softmax over
// the four moves in every cell; a trajectory's (discounted) return is its reward.
import type { AbortSignalLike } from '../errors';
import { Tensor } from '../tensor';
import type { Policy, RolloutBatch } from '../trainer/policy';
import { GRPOTrainer, type Prompt, type StepMetrics } from '../trainer/trainer';
import { Adam } from './adam';
import { checkChartFile, tryChart, writeLineChart } from './chart';
import { progressBar } from './progress';

/** The house: '#' wall, '.' empty (0), 'M' meat (+100, ends the episode), 'B' broom (−1), 'T' bathtub (−10). */
export const HOUSE: readonly string[] = [
  '#########',
  '#....#..#',
  '#.##.#M.#',
  '#..B....#',
  '#.#.#T#.#',
  '#...#...#',
  '#.B...#.#',
  '#########',
];

export const ACTIONS = ['up', 'down', 'left', 'right'] as const;
const MOVES = [
  [-1, 0],
  [1, 0],
  [0, -1],
  [0, 1],
] as const;
export const REWARD = { meat: 100, broom: -1, tub: -10, empty: 0 } as const;

export class House {
  readonly rows: number;
  readonly cols: number;
  readonly grid: string[];
  readonly meat: number;
  constructor(lines: readonly string[] = HOUSE) {
    this.grid = [...lines];
    this.rows = lines.length;
    this.cols = lines[0]!.length;
    this.meat = this.cells().find((c) => this.kind(c) === 'M')!;
  }
  kind(cell: number): string {
    return this.grid[Math.floor(cell / this.cols)]![cell % this.cols]!;
  }
  /** Every cell the cat can stand on. */
  cells(): number[] {
    const out: number[] = [];
    for (let c = 0; c < this.rows * this.cols; c++) if (this.kind(c) !== '#') out.push(c);
    return out;
  }
  /** Start cells: every open cell but the meat's. */
  starts(): number[] {
    return this.cells().filter((c) => c !== this.meat);
  }
  /** The cell after a move; moving into a wall leaves the cat where it is. */
  move(cell: number, action: number): number {
    const [dr, dc] = MOVES[action]!;
    const next = (Math.floor(cell / this.cols) + dr) * this.cols + (cell % this.cols) + dc;
    return this.kind(next) === '#' ? cell : next;
  }
  reward(cell: number): number {
    const k = this.kind(cell);
    return k === 'M' ? REWARD.meat : k === 'B' ? REWARD.broom : k === 'T' ? REWARD.tub : REWARD.empty;
  }
  /** Cells visited from `start` (start included), stopping at the meat. */
  replay(start: number, actions: ArrayLike<number>): number[] {
    const path = [start];
    let c = start;
    for (let i = 0; i < actions.length && c !== this.meat; i++) path.push((c = this.move(c, actions[i]!)));
    return path;
  }
  /** Discounted return Σ γ^t r_t of a trajectory. */
  trajectoryReturn(start: number, actions: ArrayLike<number>, gamma: number): number {
    const path = this.replay(start, actions);
    let g = 0;
    for (let t = 1; t < path.length; t++) g += gamma ** (t - 1) * this.reward(path[t]!);
    return g;
  }
  /** Length of the shortest path from each cell to the meat that never enters the bathtub (BFS). */
  safeDistances(): Map<number, number> {
    const dist = new Map<number, number>([[this.meat, 0]]);
    const queue = [this.meat];
    while (queue.length) {
      const c = queue.shift()!;
      for (let a = 0; a < 4; a++) {
        const n = this.move(c, a); // moves are symmetric between open cells
        if (n === c || dist.has(n) || this.kind(n) === 'T') continue;
        dist.set(n, dist.get(c)! + 1);
        queue.push(n);
      }
    }
    return dist;
  }
}

/** Softmax policy over the four moves in each cell; its parameters are the logits table. */
export class TabularPolicy implements Policy {
  readonly vocabSize = 4;
  readonly theta: Float32Array;
  readonly grad: Float32Array;
  private readonly adam: Adam;
  private lastRows: number[] = [];
  constructor(readonly house: House, lr = 0.05, theta?: Float32Array) {
    this.theta = theta ? theta.slice() : new Float32Array(house.rows * house.cols * 4);
    this.grad = new Float32Array(this.theta.length);
    this.adam = new Adam(this.theta, this.grad, lr);
  }
  /** A frozen copy (the KL reference). */
  clone(): TabularPolicy {
    return new TabularPolicy(this.house, 0, this.theta);
  }
  private rowsFor(start: number, actions: Int32Array): number[] {
    return this.house.replay(start, actions).slice(0, actions.length);
  }
  private logitsOf(cells: number[]): Tensor {
    const z = new Float32Array(cells.length * 4);
    cells.forEach((c, i) => z.set(this.theta.subarray(c * 4, c * 4 + 4), i * 4));
    return Tensor.from(z, { shape: [cells.length, 4] });
  }
  forward(batch: RolloutBatch): Tensor {
    const rows: number[] = [];
    batch.sequences.forEach((seq, i) => rows.push(...this.rowsFor(seq[0]!, seq.subarray(batch.promptLengths[i]!))));
    this.lastRows = rows;
    return this.logitsOf(rows);
  }
  backward(gradLogits: Tensor, scale: number): void {
    const g = gradLogits.data as Float32Array;
    this.lastRows.forEach((c, i) => {
      for (let a = 0; a < 4; a++) this.grad[c * 4 + a] = this.grad[c * 4 + a]! + scale * g[i * 4 + a]!;
    });
  }
  step(): void {
    this.adam.step();
  }
  nextTokenLogits(contexts: readonly Int32Array[]): Tensor {
    return this.logitsOf(contexts.map((c) => {
      const path = this.house.replay(c[0]!, c.subarray(1));
      return path[path.length - 1]!;
    }));
  }
  greedy(cell: number): number {
    let best = 0;
    for (let a = 1; a < 4; a++) if (this.theta[cell * 4 + a]! > this.theta[cell * 4 + best]!) best = a;
    return best;
  }
}

export interface CatDemoOptions {
  steps?: number;
  seed?: number;
  /** Trajectories per start cell. */
  groupSize?: number;
  numIterations?: number;
  maxSteps?: number;
  gamma?: number;
  /** Where to write the reward-curve chart (SVG); null: no chart. */
  chartFile?: string | null;
  /** Show the progress bar (default: when stdout is a terminal). */
  progress?: boolean;
  /** Stop after the step where every start cell's greedy path is optimal. */
  stopWhenSolved?: boolean;
  signal?: AbortSignalLike;
  onStep?: (m: StepMetrics) => void;
}

export interface CatDemoResult {
  steps: number;
  seconds: number;
  rewardCurve: number[];
  solvedAtStep: number | null;
  /** Start cells whose greedy path is not a shortest bathtub-free path to the meat. */
  failures: number[];
  arrows: string;
  chartFile: string | null;
  /** Why no chart was drawn although one was asked for (an optional package is missing). */
  chartNote?: string;
  policy: TabularPolicy;
}

/** Checks every start cell's greedy path: reaches the meat, in the shortest bathtub-free number of moves. */
export function greedyFailures(house: House, policy: TabularPolicy): number[] {
  const dist = house.safeDistances();
  const bad: number[] = [];
  for (const s of house.starts()) {
    if (house.kind(s) === 'T') continue; // a start in the tub: judged from where it steps out
    let c = s;
    let moves = 0;
    let ok = true;
    while (c !== house.meat && moves <= house.rows * house.cols) {
      c = house.move(c, policy.greedy(c));
      moves++;
      if (house.kind(c) === 'T') ok = false;
    }
    if (!ok || c !== house.meat || moves !== dist.get(s)) bad.push(s);
  }
  return bad;
}

export function drawArrows(house: House, policy: TabularPolicy): string {
  const glyph = ['↑', '↓', '←', '→'];
  const lines: string[] = [];
  for (let r = 0; r < house.rows; r++) {
    let line = '';
    for (let c = 0; c < house.cols; c++) {
      const cell = r * house.cols + c;
      const k = house.kind(cell);
      line += k === '#' ? '██' : k === 'M' ? '🍖' : k === 'T' ? 'T ' : `${glyph[policy.greedy(cell)]}${k === 'B' ? 'b' : ' '}`;
    }
    lines.push(line);
  }
  return lines.join('\n');
}

export async function runCatDemo(o: CatDemoOptions = {}): Promise<CatDemoResult> {
  if (o.chartFile != null) checkChartFile(o.chartFile);
  const house = new House();
  const steps = o.steps ?? 60;
  const gamma = o.gamma ?? 0.98;
  const policy = new TabularPolicy(house, 0.1);
  const reference = policy.clone();
  const starts = house.starts();
  const maxSteps = o.maxSteps ?? 3 * house.safeDistances().size;
  const trainer = new GRPOTrainer<number>({
    policy,
    reference,
    rewards: [{ name: 'return', fn: (ctx) => house.trajectoryReturn(ctx.sample!, Int32Array.from(ctx.completion.split(' ').filter(Boolean), Number), gamma) }],
    numGenerations: o.groupSize ?? 8,
    numIterations: o.numIterations ?? 2,
    maxCompletionLength: maxSteps,
    stop: (p, completion) => house.replay(p.sample!, completion).at(-1) === house.meat,
    beta: 0.005,
    epsilon: 0.2,
    seed: o.seed ?? 1,
  });
  const prompts: Prompt<number>[] = starts.map((s) => ({ tokens: [s], sample: s, text: `cell ${s}` }));
  const bar = progressBar(steps, 'cat GRPO', o.progress);
  const t0 = performance.now();
  const curve: number[] = [];
  let solvedAt: number | null = null;
  let done = 0;
  for (let s = 0; s < steps && !o.signal?.aborted; s++) {
    const m = await trainer.step(prompts);
    curve.push(m.rewardMean);
    done++;
    o.onStep?.(m);
    const failures = greedyFailures(house, policy).length;
    bar.update(s + 1, { 'mean reward': m.rewardMean.toFixed(1), 'cells not yet optimal': String(failures) });
    if (failures === 0 && solvedAt === null) {
      solvedAt = s;
      if (o.stopWhenSolved) break;
    }
  }
  bar.stop();
  const seconds = (performance.now() - t0) / 1e3;
  let chart: { chartFile: string | null; chartNote?: string } = { chartFile: null };
  if (o.chartFile !== null) {
    chart = await tryChart(() => writeLineChart(o.chartFile ?? 'cat-reward.svg', 'The cat learns to reach the meat (GRPO)', 'step', 'mean discounted return', [
      { name: 'mean reward', points: curve.map((y, x) => ({ x, y })) },
    ]));
  }
  return { steps: done, seconds, rewardCurve: curve, solvedAtStep: solvedAt, failures: greedyFailures(house, policy), arrows: drawArrows(house, policy), ...chart, policy };
}
