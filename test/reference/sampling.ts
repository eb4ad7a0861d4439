// Spec §8 in float64: which tokens each filter keeps, the truncated distribution, and the draw
// (Philox-4x32-10 keyed by seed, counted by (row, step); inverse CDF over kept tokens in id order).

const M32 = 0xffffffffn;

/** Philox-4x32-10 on a 4-word counter and 2-word key (the published algorithm, in BigInt for clarity). */
export function philox4x32_10(ctr: [number, number, number, number], key: [number, number]): [number, number, number, number] {
  let [c0, c1, c2, c3] = ctr.map(BigInt) as [bigint, bigint, bigint, bigint];
  let [k0, k1] = key.map(BigInt) as [bigint, bigint];
  for (let r = 0; r < 10; r++) {
    const p0 = 0xd2511f53n * c0;
    const p1 = 0xcd9e8d57n * c2;
    [c0, c1, c2, c3] = [((p1 >> 32n) ^ c1 ^ k0) & M32, p1 & M32, ((p0 >> 32n) ^ c3 ^ k1) & M32, p0 & M32];
    k0 = (k0 + 0x9e3779b9n) & M32;
    k1 = (k1 + 0xbb67ae85n) & M32;
  }
  return [Number(c0), Number(c1), Number(c2), Number(c3)];
}

/** A uniform in [0, 1) with 53 bits from the first two words of Philox(seed; row, step). */
export function philoxUniform(seed: number, row: number, step: number): number {
  const lo = (x: number) => x >>> 0;
  const hi = (x: number) => Math.floor(x / 2 ** 32) >>> 0;
  const [a, b] = philox4x32_10([lo(row), hi(row), lo(step), hi(step)], [lo(seed), hi(seed)]);
  return (Math.floor(a / 32) * 67108864 + Math.floor(b / 64)) / 9007199254740992;
}

export interface RefSampleOptions {
  temperature: number;
  greedy: boolean;
  topK: number;
  topP: number;
  minP: number;
  seed: number;
  step: number;
  rowOffset: number;
}

/** The kept set of one row (topK, then topP on the renormalised top-K distribution, then minP). */
/** The largest entry (a loop: spreading a 150K-entry row into Math.max overflows the stack). */
function maxOf(u: Float64Array): number {
  let m = -Infinity;
  for (const x of u) if (x > m) m = x;
  return m;
}

export function keptTokens(u: Float64Array, o: Pick<RefSampleOptions, 'topK' | 'topP' | 'minP'>): boolean[] {
  const v = u.length;
  const m = maxOf(u);
  const keep = Array.from(u, (x) => x > -Infinity);
  const byProb = [...u.keys()].filter((j) => keep[j]).sort((p, q) => u[q]! - u[p]! || p - q);
  if (o.topK > 0 && o.topK < byProb.length) for (const j of byProb.slice(o.topK)) keep[j] = false;
  if (o.topP < 1) {
    const order = byProb.filter((j) => keep[j]);
    const z = order.reduce((s, j) => s + Math.exp(u[j]! - m), 0);
    let cum = 0;
    let cut = order.length;
    for (let i = 0; i < order.length; i++) {
      cum += Math.exp(u[order[i]!]! - m) / z;
      if (cum >= o.topP) {
        cut = i + 1;
        break;
      }
    }
    for (const j of order.slice(cut)) keep[j] = false;
  }
  if (o.minP > 0) for (let j = 0; j < v; j++) if (u[j]! < m + Math.log(o.minP)) keep[j] = false;
  return keep;
}

export function refSampleTokens(z: ArrayLike<number>, n: number, v: number, o: RefSampleOptions) {
  const tokens = new Int32Array(n);
  const logp = new Float64Array(n);
  const logpTruncated = new Float64Array(n);
  for (let r = 0; r < n; r++) {
    const u = Float64Array.from({ length: v }, (_, j) => z[r * v + j]! / o.temperature);
    const m = maxOf(u);
    const lse = m + Math.log(u.reduce((s, x) => s + Math.exp(x - m), 0));
    if (o.greedy) {
      const best = u.indexOf(m);
      tokens[r] = best;
      logp[r] = u[best]! - lse;
      continue;
    }
    const keep = keptTokens(u, o);
    let zk = 0;
    for (let j = 0; j < v; j++) if (keep[j]) zk += Math.exp(u[j]! - m);
    const target = philoxUniform(o.seed, o.rowOffset + r, o.step) * zk;
    let cum = 0;
    let tok = -1;
    for (let j = 0; j < v; j++) {
      if (!keep[j]) continue;
      tok = j;
      cum += Math.exp(u[j]! - m);
      if (cum > target) break;
    }
    tokens[r] = tok;
    logp[r] = u[tok]! - lse;
    logpTruncated[r] = u[tok]! - m - Math.log(zk);
  }
  return { tokens, logp, logpTruncated };
}
