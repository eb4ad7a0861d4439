/** Stable error codes of grpo-kernels. Every error the package throws carries one in `code`. */
export type ErrorCode =
  | 'GK_SHAPE'
  | 'GK_DTYPE'
  | 'GK_TARGET_RANGE'
  | 'GK_NONFINITE'
  | 'GK_INVALID_ARG'
  | 'GK_DISPOSED'
  | 'GK_DEVICE'
  | 'GK_NO_ADDON'
  | 'GK_MISSING_PACKAGE'
  | 'GK_CUDA'
  | 'GK_OOM'
  | 'GK_INTERNAL';

export class GrpoKernelsError extends Error {
  readonly code: ErrorCode;
  /** The first offending row or element, where the error is about one. */
  readonly index?: number;
  constructor(code: ErrorCode, message: string, index?: number) {
    super(message);
    this.name = 'GrpoKernelsError';
    this.code = code;
    if (index !== undefined) this.index = index;
  }
}

export function fail(code: ErrorCode, message: string, index?: number): never {
  throw new GrpoKernelsError(code, message, index);
}

/** A short description of a value for error messages ("a Float64Array of length 3", "the string 'x'"). */
export function describe(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (ArrayBuffer.isView(v)) return `a ${v.constructor.name} of length ${(v as unknown as ArrayLike<unknown>).length}`;
  if (Array.isArray(v)) return `an array of length ${v.length}`;
  if (typeof v === 'string') return `the string '${v.length > 40 ? v.slice(0, 40) + '…' : v}'`;
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return `${typeof v} ${String(v)}`;
  if (typeof v === 'function') return 'a function';
  const name = (v as object).constructor?.name;
  return name && name !== 'Object' ? `a ${name}` : 'an object';
}

/** Edit distance (insertions, deletions, substitutions, adjacent swaps) between two short strings. */
export function editDistance(a: string, b: string): number {
  const d: number[][] = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++)
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  return d[a.length]![b.length]!;
}

/** The candidate nearest to `word` (case-insensitive edit distance), if it is near enough to be a likely typo. */
export function nearest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  const w = word.toLowerCase();
  for (const c of candidates) {
    const dist = editDistance(w, c.toLowerCase());
    if (dist < bestD) [best, bestD] = [c, dist];
  }
  return best !== undefined && bestD <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

/** " (did you mean 'x'?)" for a likely typo, else ''. */
export function didYouMean(word: string, candidates: readonly string[], quote = (s: string) => `'${s}'`): string {
  const n = nearest(word, candidates);
  return n === undefined ? '' : ` (did you mean ${quote(n)}?)`;
}

/**
 * What the package reads of an AbortSignal (only `aborted`): a structural type, so that the
 * declaration files need neither the DOM lib nor Node's types. An AbortSignal fits it.
 */
export interface AbortSignalLike {
  readonly aborted: boolean;
}
