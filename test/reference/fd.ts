// Central finite differences, for checking gradients of the float64 reference.

/**
 * ∂f/∂x[i] ≈ (f(x + h·e_i) - f(x - h·e_i)) / (2h) for every i.
 * Entries of x that are not finite (e.g. masked -Infinity logits) are not perturbed; their
 * derivative is reported as 0. x itself is left unchanged.
 */
export function centralDiff(f: (x: Float64Array) => number, x: Float64Array, h: number): Float64Array {
  if (!(h > 0)) throw new Error(`centralDiff: step must be > 0, got ${h}`);
  const work = Float64Array.from(x);
  const out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i]!;
    if (!Number.isFinite(x0)) continue;
    work[i] = x0 + h;
    const fPlus = f(work);
    work[i] = x0 - h;
    const fMinus = f(work);
    work[i] = x0;
    out[i] = (fPlus - fMinus) / (2 * h);
  }
  return out;
}
