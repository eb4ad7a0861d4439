/** Adam over one flat float32 parameter vector (used by the demo policies). */
export class Adam {
  private readonly m: Float32Array;
  private readonly v: Float32Array;
  private t = 0;
  constructor(
    readonly params: Float32Array,
    readonly grads: Float32Array,
    public lr = 1e-2,
    readonly beta1 = 0.9,
    readonly beta2 = 0.999,
    readonly eps = 1e-8,
  ) {
    this.m = new Float32Array(params.length);
    this.v = new Float32Array(params.length);
  }
  /** Applies one update from `grads` and zeroes them. */
  step(): void {
    this.t++;
    const c1 = 1 - this.beta1 ** this.t;
    const c2 = 1 - this.beta2 ** this.t;
    const p = this.params;
    const g = this.grads;
    for (let i = 0; i < p.length; i++) {
      const gi = g[i]!;
      this.m[i] = this.beta1 * this.m[i]! + (1 - this.beta1) * gi;
      this.v[i] = this.beta2 * this.v[i]! + (1 - this.beta2) * gi * gi;
      p[i] = p[i]! - (this.lr * (this.m[i]! / c1)) / (Math.sqrt(this.v[i]! / c2) + this.eps);
      g[i] = 0;
    }
  }
}
