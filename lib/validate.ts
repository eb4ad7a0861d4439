// Argument checks shared by the ops. Every check runs before native code and throws a
// GrpoKernelsError naming the argument, what was expected and what was given.
import type { FloatDType } from './dtype';
import { describe, fail, nearest } from './errors';
import { ArrayTypeCode, type DeviceHandle } from './native';
import { Tensor } from './tensor';

export function checkObject(op: string, name: string, v: unknown): void {
  if (v !== undefined && (v === null || typeof v !== 'object'))
    fail('GK_INVALID_ARG', `${op}: ${name} must be an object, got ${describe(v)}`);
}

export function checkEnum<T extends string>(op: string, name: string, v: unknown, allowed: readonly T[]): T {
  if (typeof v !== 'string' || !allowed.includes(v as T))
    fail('GK_INVALID_ARG', `${op}: ${name} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${describe(v)}`);
  return v as T;
}

export interface NumberRule {
  min?: number;
  max?: number;
  /** min is exclusive */
  gt?: number;
  integer?: boolean;
  /** 1/v must be finite too (a divisor: a denormal normalizer would make every weight infinite). */
  reciprocal?: boolean;
  /** The value travels as float32: it must be finite there, and with `reciprocal` so must 1/v. */
  float32?: boolean;
}

export function checkNumber(op: string, name: string, v: unknown, rule: NumberRule = {}): number {
  if (typeof v !== 'number' || !Number.isFinite(v))
    fail('GK_INVALID_ARG', `${op}: ${name} must be a finite number, got ${describe(v)}`);
  if (rule.integer && !Number.isInteger(v)) fail('GK_INVALID_ARG', `${op}: ${name} must be an integer, got ${v}`);
  if (rule.gt !== undefined && !(v > rule.gt)) fail('GK_INVALID_ARG', `${op}: ${name} must be > ${rule.gt}, got ${v}`);
  if (rule.min !== undefined && v < rule.min) fail('GK_INVALID_ARG', `${op}: ${name} must be >= ${rule.min}, got ${v}`);
  if (rule.max !== undefined && v > rule.max) fail('GK_INVALID_ARG', `${op}: ${name} must be <= ${rule.max}, got ${v}`);
  if (rule.float32) {
    const f = Math.fround(v);
    if (!Number.isFinite(f) || (v !== 0 && f === 0))
      fail('GK_INVALID_ARG', `${op}: ${name} must fit in float32 (finite there, and not rounding to 0), got ${v}`);
    if (rule.reciprocal && !Number.isFinite(Math.fround(1 / f)))
      fail('GK_INVALID_ARG', `${op}: ${name} must have a finite reciprocal in float32, got ${v}`);
  } else if (rule.reciprocal && v !== 0 && !Number.isFinite(1 / v)) {
    fail('GK_INVALID_ARG', `${op}: ${name} must have a finite reciprocal (1/${name} is used as a weight), got ${v}`);
  }
  return v;
}

export function checkBoolean(op: string, name: string, v: unknown): boolean {
  if (typeof v !== 'boolean') fail('GK_INVALID_ARG', `${op}: ${name} must be a boolean, got ${describe(v)}`);
  return v;
}

/** Rejects option names the op does not know (a typo would otherwise be silently ignored). */
export function checkKnownKeys(op: string, name: string, obj: object | undefined, known: readonly string[]): void {
  if (!obj) return;
  for (const k of Object.keys(obj))
    if (!known.includes(k) && (obj as Record<string, unknown>)[k] !== undefined)
    {
      const near = nearest(k, known);
      fail('GK_INVALID_ARG', `${op}: unknown ${name} '${k}'${near !== undefined ? ` (did you mean '${near}'?)` : ''}; expected one of ${known.join(', ')}`);
    }
}

/** GK_DISPOSED naming the op and the argument, for a Tensor argument that was disposed. */
export function checkLive(op: string, name: string, x: unknown): void {
  if (!(x instanceof Tensor)) return;
  if (x.disposed) fail('GK_DISPOSED', `${op}: ${name} is a disposed tensor (${x.toString()}); it cannot be used after dispose() or the end of its \`using\` block`);
}

/** A logits tensor of shape [..., V]: returns N (product of the leading dims) and V. */
export function checkLogits(op: string, logits: unknown): { n: number; v: number; dtype: FloatDType; data: Float32Array | Uint16Array | DeviceHandle } {
  if (!(logits instanceof Tensor)) fail('GK_INVALID_ARG', `${op}: logits must be a Tensor, got ${describe(logits)}`);
  checkLive(op, 'logits', logits);
  if (logits.dtype !== 'float32' && logits.dtype !== 'float16' && logits.dtype !== 'bfloat16')
    fail('GK_DTYPE', `${op}: logits must be float32, float16 or bfloat16, got ${logits.dtype}`);
  if (logits.shape.length < 2)
    fail('GK_SHAPE', `${op}: logits must have shape [N, V] or [S, L, V], got [${logits.shape.join(', ')}]`);
  const v = logits.shape[logits.shape.length - 1]!;
  if (v < 1) fail('GK_SHAPE', `${op}: logits must have V >= 1 columns, got [${logits.shape.join(', ')}]`);
  const data = logits.device === 'cuda' ? logits.handle : (logits.data as Float32Array | Uint16Array);
  return { n: logits.size / v, v, dtype: logits.dtype, data };
}

export type TargetsInput = Tensor | Int32Array | BigInt64Array | ArrayLike<number>;

/**
 * Target ids: one per row, integers in [0, V) or ignoreIndex. Returns an Int32Array or
 * BigInt64Array (int64 kept as is).
 */
export function checkTargets(op: string, targets: unknown, n: number, v: number, ignoreIndex: number): Int32Array | BigInt64Array | DeviceHandle {
  let data: unknown = targets;
  checkLive(op, 'targets', targets);
  if (targets instanceof Tensor) {
    if (targets.dtype !== 'int32' && targets.dtype !== 'int64')
      fail('GK_DTYPE', `${op}: targets must be int32 or int64, got ${targets.dtype}`);
    if (targets.device === 'cuda') {
      // Checked on the GPU: an id outside [0, V) that is not ignoreIndex fails the op with GK_TARGET_RANGE.
      if (targets.size !== n) fail('GK_SHAPE', `${op}: targets must have ${n} elements (one per logits row), got ${targets.size}`);
      return targets.handle;
    }
    data = targets.data;
  }
  if (data instanceof BigInt64Array) {
    if (data.length !== n) fail('GK_SHAPE', `${op}: targets must have ${n} elements (one per logits row), got ${data.length}`);
    const ig = BigInt(ignoreIndex);
    const bv = BigInt(v);
    for (let i = 0; i < n; i++) {
      const y = data[i]!;
      if (y !== ig && (y < 0n || y >= bv))
        fail('GK_TARGET_RANGE', `${op}: targets[${i}] = ${y} is outside [0, ${v}) and is not ignoreIndex (${ignoreIndex})`, i);
    }
    return data;
  }
  if (data instanceof Int32Array || Array.isArray(data)) {
    const arr = data as ArrayLike<number>;
    if (arr.length !== n) fail('GK_SHAPE', `${op}: targets must have ${n} elements (one per logits row), got ${arr.length}`);
    // number[] targets go to int32 storage unless the ids or ignoreIndex need int64.
    const wide = !(data instanceof Int32Array) && (v > 2 ** 31 || ignoreIndex !== (ignoreIndex | 0));
    const out = data instanceof Int32Array ? data : new Int32Array(wide ? 0 : n);
    const out64 = wide ? new BigInt64Array(n) : undefined;
    for (let i = 0; i < n; i++) {
      const y = arr[i]!;
      if (typeof y !== 'number' || !Number.isInteger(y))
        fail('GK_TARGET_RANGE', `${op}: targets[${i}] must be an integer token id, got ${describe(y)}`, i);
      if (y !== ignoreIndex && (y < 0 || y >= v))
        fail('GK_TARGET_RANGE', `${op}: targets[${i}] = ${y} is outside [0, ${v}) and is not ignoreIndex (${ignoreIndex})`, i);
      if (out64) out64[i] = BigInt(y);
      else if (out !== data) out[i] = y;
    }
    return out64 ?? out;
  }
  fail('GK_DTYPE', `${op}: targets must be a Tensor (int32/int64), Int32Array, BigInt64Array or number[], got ${describe(targets)}`);
}

export type FloatInput = Tensor | Float32Array | Float64Array | ArrayLike<number>;

/** The binding's element-type code for CUDA targets (whose typed-array type it cannot see). */
export function targetsType(targets: unknown): number | undefined {
  if (!(targets instanceof Tensor) || targets.device !== 'cuda') return undefined;
  return targets.dtype === 'int32' ? ArrayTypeCode.int32 : ArrayTypeCode.int64;
}

/** A CUDA tensor argument of a known dtype and element count, as its device memory. */
function deviceArg(op: string, name: string, x: Tensor, dtype: string, length: number): DeviceHandle {
  checkLive(op, name, x);
  if (x.dtype !== dtype) fail('GK_DTYPE', `${op}: ${name} on the GPU must be ${dtype}, got ${x.dtype}`);
  if (x.size !== length) fail('GK_SHAPE', `${op}: ${name} must have ${length} elements, got ${x.size}`);
  return x.handle;
}

/** checkFloats for an op argument: a float32 CUDA tensor passes as its device memory (not scanned). */
export function floatArg(op: string, name: string, x: unknown, length: number, opts: { finite?: boolean } = {}): Float32Array | DeviceHandle {
  if (x instanceof Tensor && x.device === 'cuda') return deviceArg(op, name, x, 'float32', length);
  return checkFloats(op, name, x, length, opts);
}

/** checkMask for an op argument: a uint8 CUDA tensor passes as its device memory. */
export function maskArg(op: string, name: string, x: unknown, length: number): Uint8Array | DeviceHandle {
  if (x instanceof Tensor && x.device === 'cuda') return deviceArg(op, name, x, 'uint8', length);
  return checkMask(op, name, x, length);
}

/**
 * A per-row input given as a Tensor of rank >= 2 must have the rows' shape when that has rank
 * >= 2 too ([S, L] against [S, L]; a transposed [L, S] would pass a count check). Flat inputs,
 * or flat rows, are matched by element count elsewhere.
 */
export function checkRowShape(op: string, name: string, x: unknown, rows: readonly number[]): void {
  if (!(x instanceof Tensor) || x.shape.length < 2 || rows.length < 2) return;
  if (x.shape.length !== rows.length || x.shape.some((d, i) => d !== rows[i]))
    fail('GK_SHAPE', `${op}: ${name} has shape [${x.shape.join(', ')}], the rows have shape [${rows.join(', ')}]`);
}

/** The element count of a per-row input (a Tensor's size or an array's length), or undefined. */
export function lengthOf(x: unknown): number | undefined {
  if (x instanceof Tensor) return x.size;
  if (x === null || typeof x !== 'object') return undefined;
  const len = (x as ArrayLike<unknown>).length;
  return typeof len === 'number' && Number.isSafeInteger(len) && len >= 0 ? len : undefined;
}

/**
 * A per-row float vector of a known length, as Float32Array (copied only when needed).
 * Tensors of any float dtype and shape with that many elements are accepted.
 */
export function checkFloats(op: string, name: string, x: unknown, length: number, opts: { finite?: boolean } = {}): Float32Array {
  checkLive(op, name, x);
  let data: unknown = x;
  if (x instanceof Tensor) {
    if (x.dtype === 'int32' || x.dtype === 'int64' || x.dtype === 'uint8')
      fail('GK_DTYPE', `${op}: ${name} must be a float tensor, got ${x.dtype}`);
    data = x.dtype === 'float64' ? x.data : x.toFloat32();
  }
  if (!(Array.isArray(data) || (ArrayBuffer.isView(data) && !(data instanceof DataView) && !(data instanceof BigInt64Array))))
    fail('GK_DTYPE', `${op}: ${name} must be a Tensor, Float32Array, Float64Array or number[], got ${describe(x)}`);
  const arr = data as ArrayLike<number>;
  if (arr.length !== length) fail('GK_SHAPE', `${op}: ${name} must have ${length} elements, got ${arr.length}`);
  if (arr instanceof Float32Array || arr instanceof Float64Array) {
    // Typed float arrays hold numbers only: convert in bulk, scan only when finiteness matters.
    const out = arr instanceof Float32Array ? arr : Float32Array.from(arr);
    if (opts.finite)
      for (let i = 0; i < length; i++)
        if (!Number.isFinite(out[i]!)) fail('GK_NONFINITE', `${op}: ${name}[${i}] must be finite, got ${out[i]}`, i);
    return out;
  }
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    const v = arr[i]!;
    if (typeof v !== 'number') fail('GK_INVALID_ARG', `${op}: ${name}[${i}] must be a number, got ${describe(v)}`, i);
    if (opts.finite && !Number.isFinite(v)) fail('GK_NONFINITE', `${op}: ${name}[${i}] must be finite, got ${v}`, i);
    out[i] = v;
  }
  return out;
}

/** A 0/1 vector (mask) as Uint8Array. Accepts booleans, numbers 0/1, Uint8Array and Tensors. */
export function checkMask(op: string, name: string, x: unknown, length: number): Uint8Array {
  checkLive(op, name, x);
  const data = x instanceof Tensor ? x.data : x;
  if (!(Array.isArray(data) || (ArrayBuffer.isView(data) && !(data instanceof DataView))))
    fail('GK_DTYPE', `${op}: ${name} must be a Tensor, typed array or array of 0/1 or booleans, got ${describe(x)}`);
  const arr = data as ArrayLike<unknown>;
  if (arr.length !== length) fail('GK_SHAPE', `${op}: ${name} must have ${length} elements, got ${arr.length}`);
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) {
    const v = arr[i];
    if (v === true || v === 1 || v === 1n) out[i] = 1;
    else if (v === false || v === 0 || v === 0n) out[i] = 0;
    else fail('GK_INVALID_ARG', `${op}: ${name}[${i}] must be 0, 1 or a boolean, got ${describe(v)}`, i);
  }
  return out;
}

/**
 * The sequence layout of N token rows: packed (S+1 `seqOffsets`, starting at 0, non-decreasing,
 * ending at N) or, without offsets, padded (S sequences of N/S rows). Returns the offsets as
 * int64 and the longest sequence.
 */
export function checkLayout(op: string, so: ArrayLike<number> | BigInt64Array | undefined, s: number, n: number): { seqOffsets: BigInt64Array; maxLen: number } {
  const seqOffsets = new BigInt64Array(s + 1);
  let maxLen = 0;
  if (so !== undefined) {
    if (!(Array.isArray(so) || ArrayBuffer.isView(so)) || so.length !== s + 1)
      fail('GK_SHAPE', `${op}: inputs.seqOffsets must have S+1 = ${s + 1} entries, got ${describe(so)}`);
    for (let i = 0; i <= s; i++) {
      const raw: unknown = so[i];
      if (typeof raw !== 'number' && typeof raw !== 'bigint')
        fail('GK_INVALID_ARG', `${op}: inputs.seqOffsets[${i}] must be an integer, got ${describe(raw)}`, i);
      const v = Number(raw);
      if (!Number.isInteger(v)) fail('GK_INVALID_ARG', `${op}: inputs.seqOffsets[${i}] must be an integer, got ${describe(so[i])}`, i);
      if (i === 0 && v !== 0) fail('GK_SHAPE', `${op}: inputs.seqOffsets[0] must be 0, got ${v}`, 0);
      if (i > 0 && v < Number(seqOffsets[i - 1])) fail('GK_SHAPE', `${op}: inputs.seqOffsets must be non-decreasing; [${i}] = ${v} < [${i - 1}] = ${seqOffsets[i - 1]}`, i);
      seqOffsets[i] = BigInt(v);
      if (i > 0) maxLen = Math.max(maxLen, v - Number(seqOffsets[i - 1]));
    }
    if (Number(seqOffsets[s]) !== n) fail('GK_SHAPE', `${op}: inputs.seqOffsets must end at N = ${n} rows, got ${seqOffsets[s]}`, s);
  } else {
    if (n % s !== 0) fail('GK_SHAPE', `${op}: ${n} token rows do not split into ${s} sequences of equal length; pass seqOffsets for a packed layout`);
    maxLen = n / s;
    for (let i = 0; i <= s; i++) seqOffsets[i] = BigInt(i * maxLen);
  }
  return { seqOffsets, maxLen };
}
