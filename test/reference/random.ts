// Seeded pseudo-random numbers for the tests: the package's generator, and the per-run seed.

import { randomBytes } from 'node:crypto';

export { Rng } from '../../lib/random';

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
