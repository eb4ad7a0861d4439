import type { Test } from 'tap';
import { freshSeed } from './reference/random';
import type { CaseResult } from './reference/cases';

/** One seed per test file: fresh each run unless GK_SEED is set, and printed for reproduction. */
export function seedFor(t: Test, file: string): number {
  const seed = freshSeed();
  t.comment(`${file}: seed ${seed} (rerun with GK_SEED=${seed})`);
  return seed;
}

/** Asserts every check of a case, naming the case, the output and the error found. */
export function assertCase(t: Test, r: CaseResult, seed: number): void {
  for (const c of r.checks)
    t.ok(c.pass, `${r.op} ${r.name}: ${c.label} err ${c.err.toExponential(2)} <= ${c.tol}${c.detail ? ` (${c.detail})` : ''}`, { seed });
}

/** The `code` of what f throws (or its promise rejects with), or undefined when it succeeds. */
export async function errorCode(f: () => unknown): Promise<string | undefined> {
  try {
    await f();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
}

/** Asserts that a promise rejects (or a function throws) with the given GK_ code and a message matching `msg`. */
export async function rejectsCode(t: Test, f: () => unknown, code: string, msg?: RegExp): Promise<void> {
  try {
    await f();
    t.fail(`expected ${code}, but it succeeded`);
  } catch (e) {
    const err = e as { code?: string; message?: string };
    t.equal(err.code, code, `error code ${code}: ${err.message}`);
    if (msg) t.match(err.message, msg);
  }
}
