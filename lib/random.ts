// A small seeded PRNG (mulberry32: 32-bit state, period 2^32) for sampling, shuffling and test
// data, with Box-Muller normals. Deterministic for a seed.
import { describe, fail } from './errors';

export class Rng {
  private state: number;
  private spareNormal: number | null = null;

  constructor(seed: number) {
    if (typeof seed !== 'number' || !Number.isFinite(seed)) fail('GK_INVALID_ARG', `Rng: seed must be a finite number, got ${describe(seed)}`);
    this.state = Math.trunc(seed) >>> 0; // any finite number folds into 32 bits
  }

  /** Uniform in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Standard normal (Box-Muller; the second value of each pair is kept for the next call). */
  normal(): number {
    if (this.spareNormal !== null) {
      const v = this.spareNormal;
      this.spareNormal = null;
      return v;
    }
    const radius = Math.sqrt(-2 * Math.log(1 - this.next()));
    const angle = 2 * Math.PI * this.next();
    this.spareNormal = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  }

  /** Uniform integer in [lo, hiExclusive). */
  int(lo: number, hiExclusive: number): number {
    if (typeof lo !== 'number' || typeof hiExclusive !== 'number' || !(hiExclusive > lo) || !Number.isFinite(hiExclusive - lo))
      fail('GK_INVALID_ARG', `Rng.int: [${describe(lo)}, ${describe(hiExclusive)}) is not a non-empty finite range`);
    return lo + Math.floor(this.next() * (hiExclusive - lo));
  }

  /** Shuffles in place (Fisher-Yates) and returns the array. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  }
}
