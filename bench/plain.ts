// The baseline: the same work as each op, written as a plain single-threaded TypeScript
// float32 loop (what a user would write without the package).

export function plainLogProbs(z: Float32Array, n: number, v: number, y: Int32Array, logp: Float32Array, entropy?: Float32Array): void {
  for (let r = 0; r < n; r++) {
    const o = r * v;
    let m = -Infinity;
    for (let j = 0; j < v; j++) if (z[o + j]! > m) m = z[o + j]!;
    let s = 0;
    let t = 0;
    for (let j = 0; j < v; j++) {
      const d = z[o + j]! - m;
      const e = Math.exp(d);
      s += e;
      if (entropy) t += e * d;
    }
    const lse = m + Math.log(s);
    logp[r] = z[o + y[r]!]! - lse;
    if (entropy) entropy[r] = Math.log(s) - t / s;
  }
}

/** Max and Σ exp(z − max) of the row at offset o (the two passes every softmax loop starts with). */
function maxAndSum(z: Float32Array, o: number, v: number): { m: number; s: number } {
  let m = -Infinity;
  for (let j = 0; j < v; j++) if (z[o + j]! > m) m = z[o + j]!;
  let s = 0;
  for (let j = 0; j < v; j++) s += Math.exp(z[o + j]! - m);
  return { m, s };
}

export function plainBackward(z: Float32Array, n: number, v: number, y: Int32Array, gl: Float32Array, grad: Float32Array): void {
  for (let r = 0; r < n; r++) {
    const o = r * v;
    const { m, s } = maxAndSum(z, o, v);
    const lse = m + Math.log(s);
    const g = gl[r]!;
    for (let j = 0; j < v; j++) grad[o + j] = -g * Math.exp(z[o + j]! - lse);
    grad[o + y[r]!] = grad[o + y[r]!]! + g;
  }
}

/** Token-level clipped GRPO loss with k3 KL, seqMeanTokenMean, padded [S, L]; fills dlogp. */
export function plainLossStep(logp: Float32Array, old: Float32Array, ref: Float32Array, adv: Float32Array, s: number, l: number, beta: number, eps: number, dlogp: Float32Array): number {
  let loss = 0;
  for (let q = 0; q < s; q++) {
    const w = 1 / (s * l);
    const a = adv[q]!;
    for (let t = 0; t < l; t++) {
      const k = q * l + t;
      const rho = Math.exp(logp[k]! - old[k]!);
      const c = Math.min(Math.max(rho, 1 - eps), 1 + eps);
      const unclipped = rho * a <= c * a;
      const x = ref[k]! - logp[k]!;
      const kl = Math.exp(x) - x - 1;
      loss += w * (-(unclipped ? rho * a : c * a) + beta * kl);
      dlogp[k] = w * (-(unclipped ? a * rho : 0) + beta * (1 - Math.exp(x)));
    }
  }
  return loss;
}

export function plainAdvantages(r: Float32Array, g: number, eps: number, out: Float32Array): void {
  for (let b = 0; b < r.length; b += g) {
    let mean = 0;
    for (let i = 0; i < g; i++) mean += r[b + i]!;
    mean /= g;
    let ss = 0;
    for (let i = 0; i < g; i++) ss += (r[b + i]! - mean) ** 2;
    const std = g > 1 ? Math.sqrt(ss / (g - 1)) : 0;
    for (let i = 0; i < g; i++) out[b + i] = (r[b + i]! - mean) / (std + eps);
  }
}

/** Forward KL(p_T‖p_S) per row with its student gradient, written into grad (token mean). */
export function plainForwardKl(s: Float32Array, t: Float32Array, n: number, v: number, grad: Float32Array): number {
  let loss = 0;
  for (let r = 0; r < n; r++) {
    const o = r * v;
    let ms = -Infinity;
    let mt = -Infinity;
    for (let j = 0; j < v; j++) {
      if (s[o + j]! > ms) ms = s[o + j]!;
      if (t[o + j]! > mt) mt = t[o + j]!;
    }
    let zs = 0;
    let zt = 0;
    for (let j = 0; j < v; j++) {
      zs += Math.exp(s[o + j]! - ms);
      zt += Math.exp(t[o + j]! - mt);
    }
    const ls = ms + Math.log(zs);
    const lt = mt + Math.log(zt);
    for (let j = 0; j < v; j++) {
      const lps = s[o + j]! - ls;
      const lpt = t[o + j]! - lt;
      const pt = Math.exp(lpt);
      loss += pt * (lpt - lps);
      grad[o + j] = (Math.exp(lps) - pt) / n;
    }
  }
  return loss / n;
}

/** Inverse-CDF sampling of one token per row from softmax(z). */
export function plainSample(z: Float32Array, n: number, v: number, u: () => number, out: Int32Array): void {
  for (let r = 0; r < n; r++) {
    const o = r * v;
    const { m, s } = maxAndSum(z, o, v);
    let target = u() * s;
    let tok = v - 1;
    for (let j = 0; j < v; j++) {
      target -= Math.exp(z[o + j]! - m);
      if (target <= 0) {
        tok = j;
        break;
      }
    }
    out[r] = tok;
  }
}
