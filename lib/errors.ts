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
