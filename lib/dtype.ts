import { describe, fail } from './errors';

/** Element types. 16-bit floats travel as Uint16Array holding the raw bits. */
export type DType = 'float32' | 'float16' | 'bfloat16' | 'float64' | 'int32' | 'int64' | 'uint8';
export type FloatDType = 'float32' | 'float16' | 'bfloat16';

export const DTYPES: readonly DType[] = ['float32', 'float16', 'bfloat16', 'float64', 'int32', 'int64', 'uint8'];

/** Host storage of each dtype. */
export type HostArray = Float32Array | Float64Array | Uint16Array | Int32Array | BigInt64Array | Uint8Array;

/** The typed array that holds each dtype on the host. */
export interface DTypeArrays {
  float32: Float32Array;
  float16: Uint16Array;
  bfloat16: Uint16Array;
  float64: Float64Array;
  int32: Int32Array;
  int64: BigInt64Array;
  uint8: Uint8Array;
}
/** The host array type of a dtype (of a union of dtypes: the union of their arrays). */
export type ArrayOf<D extends DType> = DTypeArrays[D];
/** The dtype a typed array implies (a Uint16Array: 'float16' or 'bfloat16', which must be given). */
export type DTypeOf<A extends HostArray> = A extends Float32Array ? 'float32'
  : A extends Float64Array ? 'float64'
  : A extends Int32Array ? 'int32'
  : A extends BigInt64Array ? 'int64'
  : A extends Uint8Array ? 'uint8'
  : A extends Uint16Array ? 'float16' | 'bfloat16'
  : DType;

export function arrayTypeOf(dtype: DType): string {
  switch (dtype) {
    case 'float32': return 'Float32Array';
    case 'float16':
    case 'bfloat16': return 'Uint16Array';
    case 'float64': return 'Float64Array';
    case 'int32': return 'Int32Array';
    case 'int64': return 'BigInt64Array';
    case 'uint8': return 'Uint8Array';
  }
}

/** The most elements a typed array can hold here (V8's limit on 64-bit hosts). */
export const MAX_ELEMENTS = 2 ** 32;

/**
 * A new zero-filled typed array for `length` elements of `dtype`: GK_SHAPE past the typed-array
 * limit, GK_OOM when the memory cannot be had (never a bare RangeError).
 */
export function allocate(dtype: DType, length: number, what = 'tensor'): HostArray {
  if (!Number.isSafeInteger(length) || length < 0)
    fail('GK_SHAPE', `${what}: ${describe(length)} is not a valid element count`);
  if (length > MAX_ELEMENTS)
    fail('GK_SHAPE', `${what}: ${length} elements exceed the typed-array limit of ${MAX_ELEMENTS}`);
  try {
    return allocateRaw(dtype, length);
  } catch (e) {
    if (e instanceof RangeError) fail('GK_OOM', `${what}: could not allocate ${length} ${dtype} elements (${e.message})`);
    throw e;
  }
}

function allocateRaw(dtype: DType, length: number): HostArray {
  switch (dtype) {
    case 'float32': return new Float32Array(length);
    case 'float16':
    case 'bfloat16': return new Uint16Array(length);
    case 'float64': return new Float64Array(length);
    case 'int32': return new Int32Array(length);
    case 'int64': return new BigInt64Array(length);
    case 'uint8': return new Uint8Array(length);
  }
}

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** A float array argument of the converters: a numeric typed array or an array of numbers. */
function checkValues(op: string, src: unknown): ArrayLike<number> {
  if (ArrayBuffer.isView(src) && !(src instanceof DataView) && !(src instanceof BigInt64Array) && !(src instanceof BigUint64Array))
    return src as unknown as ArrayLike<number>;
  if (!Array.isArray(src)) fail('GK_INVALID_ARG', `${op}: values must be a typed array or an array of numbers, got ${describe(src)}`);
  for (let i = 0; i < src.length; i++)
    if (typeof src[i] !== 'number') fail('GK_INVALID_ARG', `${op}: values[${i}] must be a number, got ${describe(src[i])}`, i);
  return src as number[];
}

function checkBits(op: string, src: unknown): Uint16Array {
  if (!(src instanceof Uint16Array)) fail('GK_DTYPE', `${op}: the 16-bit values must be a Uint16Array of raw bits, got ${describe(src)}`);
  return src;
}

function checkFloatDType(op: string, dtype: unknown): FloatDType {
  if (dtype !== 'float32' && dtype !== 'float16' && dtype !== 'bfloat16')
    fail('GK_DTYPE', `${op}: dtype must be 'float32', 'float16' or 'bfloat16', got ${describe(dtype)}`);
  return dtype;
}

/** float32 → bfloat16 bits, round to nearest even (NaN stays NaN). */
export function toBFloat16(values: ArrayLike<number>): Uint16Array {
  const src = checkValues('toBFloat16', values);
  const out = allocate('bfloat16', src.length, 'toBFloat16') as Uint16Array;
  for (let i = 0; i < src.length; i++) {
    f32[0] = src[i]!;
    const u = u32[0]!;
    if ((u & 0x7fffffff) > 0x7f800000) out[i] = (u >>> 16) | 0x40;
    else out[i] = ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
  }
  return out;
}

/** bfloat16 bits → float32. */
export function fromBFloat16(bits: Uint16Array): Float32Array {
  const src = checkBits('fromBFloat16', bits);
  const out = allocate('float32', src.length, 'fromBFloat16') as Float32Array;
  const words = new Uint32Array(out.buffer);
  for (let i = 0; i < src.length; i++) words[i] = src[i]! << 16;
  return out;
}

/** float32 → IEEE half bits, round to nearest even, overflow to ±inf, NaN kept. */
export function toFloat16(values: ArrayLike<number>): Uint16Array {
  const src = checkValues('toFloat16', values);
  const out = allocate('float16', src.length, 'toFloat16') as Uint16Array;
  for (let i = 0; i < src.length; i++) out[i] = halfBits(Math.fround(src[i]!));
  return out;
}

function halfBits(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a >= 65520) return sign | 0x7c00; // rounds to inf
  if (a < 6.103515625e-5) {
    // subnormal: units of 2^-24, round half to even
    const q = a / 5.960464477539063e-8;
    let r = Math.round(q);
    if (r - q === 0.5 && r % 2 === 1) r -= 1;
    return sign | r;
  }
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e -= 1;
  if (2 ** (e + 1) <= a) e += 1;
  const m = a / 2 ** e - 1; // [0, 1)
  const q = m * 1024;
  let r = Math.round(q);
  if (r - q === 0.5 && r % 2 === 1) r -= 1;
  if (r === 1024) {
    r = 0;
    e += 1;
  }
  if (e + 15 >= 31) return sign | 0x7c00;
  return sign | ((e + 15) << 10) | r;
}

/** IEEE half bits → float32. */
export function fromFloat16(bits: Uint16Array): Float32Array {
  const src = checkBits('fromFloat16', bits);
  const out = allocate('float32', src.length, 'fromFloat16') as Float32Array;
  for (let i = 0; i < src.length; i++) {
    const h = src[i]!;
    const s = h & 0x8000 ? -1 : 1;
    const e = (h >> 10) & 0x1f;
    const m = h & 0x3ff;
    if (e === 0) out[i] = s * m * 5.960464477539063e-8;
    else if (e === 31) out[i] = m ? NaN : s * Infinity;
    else out[i] = s * 2 ** (e - 15) * (1 + m / 1024);
  }
  return out;
}

/** Converts float32 values to the storage of a float dtype. */
export function encodeFloats(values: ArrayLike<number>, dtype: FloatDType): Float32Array | Uint16Array {
  checkFloatDType('encodeFloats', dtype);
  const src = checkValues('encodeFloats', values);
  if (dtype === 'bfloat16') return toBFloat16(src);
  if (dtype === 'float16') return toFloat16(src);
  const out = allocate('float32', src.length, 'encodeFloats') as Float32Array;
  for (let i = 0; i < src.length; i++) out[i] = src[i]!;
  return out;
}

/** Decodes the storage of a float dtype to float32. */
export function decodeFloats(data: Float32Array | Uint16Array, dtype: FloatDType): Float32Array {
  checkFloatDType('decodeFloats', dtype);
  if (dtype === 'bfloat16') return fromBFloat16(data as Uint16Array);
  if (dtype === 'float16') return fromFloat16(data as Uint16Array);
  if (!(data instanceof Float32Array)) fail('GK_DTYPE', `decodeFloats: float32 data must be a Float32Array, got ${describe(data)}`);
  return data;
}
