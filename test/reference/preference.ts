// The Bradley–Terry reward-model loss in float64: L = reduce_i -log σ(c_i - r_i - m_i).

export function refBradleyTerry(chosen: ArrayLike<number>, rejected: ArrayLike<number>, margins: ArrayLike<number> | null, margin: number, sum: boolean) {
  const n = chosen.length;
  const scale = sum ? 1 : 1 / n;
  let loss = 0;
  let correct = 0;
  let marginSum = 0;
  const gradChosen = new Float64Array(n);
  const gradRejected = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const d = chosen[i]! - rejected[i]! - (margins ? margins[i]! : margin);
    // -log σ(d) = log(1 + e^{-d}), written to stay finite for large |d|.
    loss += d > 0 ? Math.log1p(Math.exp(-d)) : -d + Math.log1p(Math.exp(d));
    const sigNeg = 1 / (1 + Math.exp(d)); // σ(-d)
    gradChosen[i] = -sigNeg * scale;
    gradRejected[i] = sigNeg * scale;
    if (chosen[i]! > rejected[i]!) correct++;
    marginSum += chosen[i]! - rejected[i]!;
  }
  return { loss: loss * scale, accuracy: correct / n, meanMargin: marginSum / n, gradChosen, gradRejected };
}
