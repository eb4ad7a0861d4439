// Seeded pseudo-random numbers for the tests (reference oracle side).
//
// The generator is mulberry32 (32-bit state, period 2^32), which is plenty for
// producing test inputs. normal() uses the Box-Muller transform.

import { randomBytes } from 'node:crypto';

export class Rng {
  private state: number;
  private spareNormal: number | null = null;

  constructor(seed: number) {
    if (!Number.isFinite(seed)) throw new Error(`Rng: seed must be a finite number, got ${seed}`);
    // Fold any finite number into 32 bits (negative and fractional seeds are accepted).
    this.state = Math.trunc(seed) >>> 0;
  }

  /** Uniform in [0, 1), 32 bits of randomness. */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Standard normal N(0, 1) via Box-Muller (the second value of each pair is kept for the next call). */
  normal(): number {
    if (this.spareNormal !== null) {
      const v = this.spareNormal;
      this.spareNormal = null;
      return v;
    }
    const u1 = 1 - this.next(); // in (0, 1], so log(u1) is finite
    const u2 = this.next();
    const radius = Math.sqrt(-2 * Math.log(u1));
    const angle = 2 * Math.PI * u2;
    this.spareNormal = radius * Math.sin(angle);
    return radius * Math.cos(angle);
  }

  /** Uniform integer in [lo, hiExclusive). */
  int(lo: number, hiExclusive: number): number {
    if (!(hiExclusive > lo)) throw new Error(`Rng.int: empty range [${lo}, ${hiExclusive})`);
    return lo + Math.floor(this.next() * (hiExclusive - lo));
  }
}

/** The seed for a test: GK_SEED from the environment if set, else a fresh random 32-bit seed. */
export function freshSeed(): number {
  const env = process.env.GK_SEED;
  if (env !== undefined && env.trim() !== '') {
    const seed = Number(env);
    if (!Number.isFinite(seed)) throw new Error(`GK_SEED is not a number: ${JSON.stringify(env)}`);
    return seed;
  }
  return randomBytes(4).readUInt32LE(0);
}
