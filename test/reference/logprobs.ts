// Spec §1: token log-probs (log-softmax + gather), entropy, and the backward pass, in float64.

export interface RefLogProbs {
  logp: Float64Array;
  entropy: Float64Array;
  lse: Float64Array;
  /** Σ_j p² (spec §9.6). */
  sumP2: Float64Array;
}

export interface RefLogProbsOptions {
  temperature?: number;
  ignoreIndex?: number;
}

function resolveOptions(opts: RefLogProbsOptions | undefined): { T: number; ignoreIndex: number } {
  const T = opts?.temperature ?? 1;
  const ignoreIndex = opts?.ignoreIndex ?? -100;
  if (!(T > 0)) throw new Error(`temperature must be > 0, got ${T}`);
  return { T, ignoreIndex };
}

function checkShapes(z: ArrayLike<number>, N: number, V: number, targets: ArrayLike<number | bigint>): void {
  if (z.length !== N * V) throw new Error(`logits length ${z.length} != N*V = ${N}*${V}`);
  if (targets.length !== N) throw new Error(`targets length ${targets.length} != N = ${N}`);
}

/** Target of row n as a number; throws for an id outside [0, V) that is not ignoreIndex. */
function targetOf(targets: ArrayLike<number | bigint>, n: number, V: number, ignoreIndex: number): number {
  const y = Number(targets[n]);
  if (y === ignoreIndex) return y;
  if (!Number.isInteger(y) || y < 0 || y >= V) throw new Error(`target ${y} of row ${n} is outside [0, ${V})`);
  return y;
}

interface RowStats {
  lse: number;
  entropy: number;
  sumP2: number;
}

/** lse and entropy of one row of u = z/T (u passed in already scaled). */
function rowStats(u: Float64Array): RowStats {
  let max = -Infinity;
  let sawNaN = false;
  for (let j = 0; j < u.length; j++) {
    if (Number.isNaN(u[j]!)) sawNaN = true;
    if (u[j]! > max) max = u[j]!;
  }
  if (sawNaN) return { lse: NaN, entropy: NaN, sumP2: NaN };
  // max = -Infinity (every entry -inf): u - max is NaN, giving NaN outputs naturally.
  let sum = 0;
  for (let j = 0; j < u.length; j++) sum += Math.exp(u[j]! - max);
  const lse = max + Math.log(sum);
  // H = Σ_j p_j (lse - u_j), skipping p_j == 0 (masked -inf entries contribute 0, not 0·inf).
  let entropy = 0;
  let sumP2 = 0;
  for (let j = 0; j < u.length; j++) {
    const p = Math.exp(u[j]! - lse);
    if (p === 0) continue;
    entropy += p * (lse - u[j]!);
    sumP2 += p * p;
  }
  if (!(max > -Infinity)) sumP2 = NaN;
  return { lse, entropy, sumP2 };
}

function scaledRow(z: ArrayLike<number>, n: number, V: number, T: number): Float64Array {
  const u = new Float64Array(V);
  for (let j = 0; j < V; j++) u[j] = z[n * V + j]! / T;
  return u;
}

export function refTokenLogProbs(
  z: ArrayLike<number>,
  N: number,
  V: number,
  targets: ArrayLike<number | bigint>,
  opts?: RefLogProbsOptions,
): RefLogProbs {
  const { T, ignoreIndex } = resolveOptions(opts);
  checkShapes(z, N, V, targets);
  const logp = new Float64Array(N);
  const entropy = new Float64Array(N);
  const lse = new Float64Array(N);
  const sumP2 = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    const y = targetOf(targets, n, V, ignoreIndex);
    if (y === ignoreIndex) continue; // ignored row: all outputs 0
    const u = scaledRow(z, n, V, T);
    const st = rowStats(u);
    lse[n] = st.lse;
    entropy[n] = st.entropy;
    sumP2[n] = st.sumP2;
    logp[n] = u[y]! - st.lse;
  }
  return { logp, entropy, lse, sumP2 };
}

/**
 * ∂L/∂z[n, j] = ( gl[n]·(1[j = y] - p) - gh[n]·p·(u - lse + H) ) / T.
 * A null gl / gh counts as zeros. Where p == 0 (masked -inf entries) the entropy term is 0
 * and the log-prob term is gl·1[j = y]/T (0 for every non-target entry).
 */
export function refTokenLogProbsBackward(
  z: ArrayLike<number>,
  N: number,
  V: number,
  targets: ArrayLike<number | bigint>,
  gl: ArrayLike<number> | null,
  gh: ArrayLike<number> | null,
  opts?: RefLogProbsOptions,
): Float64Array {
  const { T, ignoreIndex } = resolveOptions(opts);
  checkShapes(z, N, V, targets);
  if (gl !== null && gl.length !== N) throw new Error(`gl length ${gl.length} != N = ${N}`);
  if (gh !== null && gh.length !== N) throw new Error(`gh length ${gh.length} != N = ${N}`);
  const grad = new Float64Array(N * V);
  for (let n = 0; n < N; n++) {
    const y = targetOf(targets, n, V, ignoreIndex);
    if (y === ignoreIndex) continue; // ignored row: gradient 0
    const u = scaledRow(z, n, V, T);
    const { lse, entropy: H } = rowStats(u);
    const gLogp = gl === null ? 0 : gl[n]!;
    const gEnt = gh === null ? 0 : gh[n]!;
    for (let j = 0; j < V; j++) {
      const p = Math.exp(u[j]! - lse);
      const onehot = j === y ? 1 : 0;
      let g = gLogp * (onehot - p);
      if (p !== 0) g -= gEnt * p * (u[j]! - lse + H);
      grad[n * V + j] = g / T;
    }
  }
  return grad;
}
