// A tiny next-token model for the demos: an MLP over a fixed window of the previous K tokens.
//   x = [E[w_1], …, E[w_K]]  (K·D)    h = tanh(W1·x + b1)  (H)    z = W2·h + b2  (V_out)
// Forward and backward are plain TypeScript loops (float64 arithmetic, float32 parameters);
// the optimizer is the demos' Adam over one flat parameter vector.
import { Rng } from '../random';
import { Adam } from './adam';

export interface WindowMlpShape {
  /** Token ids the window may hold (the output vocabulary plus input-only ids such as a pad). */
  inputVocab: number;
  /** Size of the output distribution (logits per row). */
  outputVocab: number;
  /** K: how many previous tokens the model sees. */
  window: number;
  /** D: embedding width. */
  embedDim: number;
  /** H: hidden units. */
  hidden: number;
}

export class WindowMlp {
  readonly shape: Readonly<WindowMlpShape>;
  /** All parameters, flat: E [inputVocab·D], W1 [H·K·D], b1 [H], W2 [V·H], b2 [V]. */
  readonly params: Float32Array;
  readonly grads: Float32Array;
  readonly adam: Adam;
  private readonly oE: number;
  private readonly oW1: number;
  private readonly oB1: number;
  private readonly oW2: number;
  private readonly oB2: number;
  // What the backward needs from the last forward.
  private lastWindows = new Int32Array(0);
  private lastH = new Float64Array(0);
  private lastRows = 0;

  constructor(shape: WindowMlpShape, o: { seed?: number; lr?: number; params?: Float32Array } = {}) {
    this.shape = { ...shape };
    const { inputVocab: Vi, outputVocab: V, window: K, embedDim: D, hidden: H } = shape;
    this.oE = 0;
    this.oW1 = this.oE + Vi * D;
    this.oB1 = this.oW1 + H * K * D;
    this.oW2 = this.oB1 + H;
    this.oB2 = this.oW2 + V * H;
    const n = this.oB2 + V;
    if (o.params) {
      if (o.params.length !== n) throw new Error(`WindowMlp: expected ${n} parameters, got ${o.params.length}`);
      this.params = o.params.slice();
    } else {
      this.params = new Float32Array(n);
      const rng = new Rng(o.seed ?? 0);
      const gauss = () => {
        const u = Math.max(rng.next(), 1e-12);
        return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
      };
      for (let i = this.oE; i < this.oW1; i++) this.params[i] = gauss();
      const s1 = 1 / Math.sqrt(K * D);
      for (let i = this.oW1; i < this.oB1; i++) this.params[i] = gauss() * s1;
      const s2 = 1 / Math.sqrt(H);
      for (let i = this.oW2; i < this.oB2; i++) this.params[i] = gauss() * s2;
    }
    this.grads = new Float32Array(n);
    this.adam = new Adam(this.params, this.grads, o.lr ?? 1e-3);
  }

  get size(): number {
    return this.params.length;
  }

  /**
   * Logits for `rows` windows (`windows` holds rows·K token ids, oldest first), as float64.
   * Keeps the activations for `backward`.
   *
   * The window's input is one embedding per slot, so the hidden layer's input is a sum of K
   * per-(slot, token) vectors: P[k][t] = W1[:, slot k] · E[t], tabulated once per call
   * (K·V_in·H·D operations) and then looked up per row (K·H additions instead of K·D·H).
   */
  forward(windows: Int32Array, rows: number): Float64Array {
    const { outputVocab: V, window: K, embedDim: D, hidden: H, inputVocab: Vi } = this.shape;
    const KD = K * D;
    if (windows.length !== rows * K) throw new Error(`WindowMlp.forward: expected ${rows * K} window ids, got ${windows.length}`);
    for (let i = 0; i < windows.length; i++)
      if (!(windows[i]! >= 0 && windows[i]! < Vi)) throw new Error(`WindowMlp.forward: token id ${windows[i]} out of range [0, ${Vi})`);
    const p = this.params;
    const P = new Float64Array(K * Vi * H);
    for (let k = 0; k < K; k++)
      for (let t = 0; t < Vi; t++) {
        const po = (k * Vi + t) * H;
        const eo = this.oE + t * D;
        for (let j = 0; j < H; j++) {
          const wo = this.oW1 + j * KD + k * D;
          let s = 0;
          for (let d = 0; d < D; d++) s += p[wo + d]! * p[eo + d]!;
          P[po + j] = s;
        }
      }
    const h = new Float64Array(rows * H);
    const z = new Float64Array(rows * V);
    const pre = new Float64Array(H);
    for (let r = 0; r < rows; r++) {
      for (let j = 0; j < H; j++) pre[j] = p[this.oB1 + j]!;
      for (let k = 0; k < K; k++) {
        const po = (k * Vi + windows[r * K + k]!) * H;
        for (let j = 0; j < H; j++) pre[j] = pre[j]! + P[po + j]!;
      }
      const ho = r * H;
      for (let j = 0; j < H; j++) h[ho + j] = Math.tanh(pre[j]!);
      const zo = r * V;
      for (let v = 0; v < V; v++) {
        const wo = this.oW2 + v * H;
        let s = p[this.oB2 + v]!;
        for (let j = 0; j < H; j++) s += p[wo + j]! * h[ho + j]!;
        z[zo + v] = s;
      }
    }
    this.lastWindows = windows.slice();
    this.lastH = h;
    this.lastRows = rows;
    return z;
  }

  /** Accumulates ∂loss/∂params into `grads` from ∂loss/∂logits ([rows, V]) of the last forward, times `scale`. */
  backward(gradLogits: ArrayLike<number>, scale: number): void {
    const { outputVocab: V, window: K, embedDim: D, hidden: H, inputVocab: Vi } = this.shape;
    const KD = K * D;
    const rows = this.lastRows;
    if (gradLogits.length !== rows * V) throw new Error(`WindowMlp.backward: expected ${rows * V} gradients, got ${gradLogits.length}`);
    const p = this.params;
    const g = this.grads;
    const h = this.lastH;
    const dz = new Float64Array(V);
    const dpre = new Float64Array(H);
    // ∂loss/∂P[k][t], turned into ∂W1 and ∂E after the rows.
    const dP = new Float64Array(K * Vi * H);
    for (let r = 0; r < rows; r++) {
      let any = false;
      for (let v = 0; v < V; v++) {
        dz[v] = scale * gradLogits[r * V + v]!;
        if (dz[v] !== 0) any = true;
      }
      if (!any) continue;
      const ho = r * H;
      // Output layer.
      dpre.fill(0);
      for (let v = 0; v < V; v++) {
        const d = dz[v]!;
        if (d === 0) continue;
        g[this.oB2 + v] = g[this.oB2 + v]! + d;
        const wo = this.oW2 + v * H;
        for (let j = 0; j < H; j++) {
          g[wo + j] = g[wo + j]! + d * h[ho + j]!;
          dpre[j] = dpre[j]! + d * p[wo + j]!;
        }
      }
      // tanh' = 1 - h².
      for (let j = 0; j < H; j++) {
        const d = dpre[j]! * (1 - h[ho + j]! * h[ho + j]!);
        dpre[j] = d;
        g[this.oB1 + j] = g[this.oB1 + j]! + d;
      }
      for (let k = 0; k < K; k++) {
        const po = (k * Vi + this.lastWindows[r * K + k]!) * H;
        for (let j = 0; j < H; j++) dP[po + j] = dP[po + j]! + dpre[j]!;
      }
    }
    // P[k][t][j] = Σ_d W1[j][k·D + d] · E[t][d].
    for (let k = 0; k < K; k++)
      for (let t = 0; t < Vi; t++) {
        const po = (k * Vi + t) * H;
        const eo = this.oE + t * D;
        for (let j = 0; j < H; j++) {
          const d = dP[po + j]!;
          if (d === 0) continue;
          const wo = this.oW1 + j * KD + k * D;
          for (let e = 0; e < D; e++) {
            g[wo + e] = g[wo + e]! + d * p[eo + e]!;
            g[eo + e] = g[eo + e]! + d * p[wo + e]!;
          }
        }
      }
  }

  /** When true, step() leaves the embeddings and the hidden layer as they are (only the output layer learns). */
  freezeFeatures = false;

  /** One Adam step; zeroes the gradients. */
  step(): void {
    if (this.freezeFeatures) this.grads.fill(0, 0, this.oW2);
    this.adam.step();
  }
}
