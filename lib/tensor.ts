import { allocate, arrayTypeOf, decodeFloats, DTYPES, type DType, type FloatDType, type HostArray } from './dtype';
import { describe, fail } from './errors';

export type DeviceKind = 'cpu' | 'cuda';

export interface TensorOptions {
  /** Element type. Inferred from the typed array except for Uint16Array, which needs 'float16' or 'bfloat16'. */
  dtype?: DType;
  /** Shape; its product must equal the array's length. Default: [length]. */
  shape?: readonly number[];
}

function inferDType(data: HostArray): DType | undefined {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  if (data instanceof Uint8Array) return 'uint8';
  return undefined;
}

export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/**
 * A typed n-dimensional array on a device. Host (CPU) tensors wrap a typed array without
 * copying it. Release with `dispose()` or a `using` declaration; a disposed tensor throws
 * GK_DISPOSED when used.
 */
export class Tensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly device: DeviceKind = 'cpu';
  #data: HostArray | null;

  private constructor(data: HostArray, dtype: DType, shape: readonly number[]) {
    this.#data = data;
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
  }

  /** Wraps a typed array (no copy). */
  static from(data: HostArray, options: TensorOptions = {}): Tensor {
    if (!ArrayBuffer.isView(data) || data instanceof DataView)
      fail('GK_DTYPE', `Tensor.from: data must be a typed array, got ${describe(data)}`);
    const inferred = inferDType(data);
    const dtype = options.dtype ?? inferred;
    if (dtype === undefined)
      fail('GK_DTYPE', `Tensor.from: a Uint16Array needs dtype 'float16' or 'bfloat16', got no dtype`);
    if (!DTYPES.includes(dtype)) fail('GK_DTYPE', `Tensor.from: unknown dtype ${describe(dtype)}; expected one of ${DTYPES.join(', ')}`);
    const want = arrayTypeOf(dtype);
    if (data.constructor.name !== want)
      fail('GK_DTYPE', `Tensor.from: dtype '${dtype}' is stored in a ${want}, got ${describe(data)}`);
    const shape = options.shape ?? [data.length];
    if (!Array.isArray(shape) || shape.some((d) => !Number.isInteger(d) || d < 0))
      fail('GK_SHAPE', `Tensor.from: shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    if (shapeSize(shape) !== data.length)
      fail('GK_SHAPE', `Tensor.from: shape [${shape.join(', ')}] holds ${shapeSize(shape)} elements, but the data has ${data.length}`);
    return new Tensor(data, dtype, shape);
  }

  /** A new zero-filled host tensor. */
  static zeros(shape: readonly number[], dtype: DType = 'float32'): Tensor {
    return Tensor.from(allocate(dtype, shapeSize(shape)), { dtype, shape });
  }

  /** Number of elements. */
  get size(): number {
    return shapeSize(this.shape);
  }

  get disposed(): boolean {
    return this.#data === null;
  }

  /** The host storage (no copy). Throws GK_DISPOSED after dispose(). */
  get data(): HostArray {
    if (this.#data === null) fail('GK_DISPOSED', `Tensor [${this.shape.join(', ')}] ${this.dtype} was disposed`);
    return this.#data;
  }

  /** Resolves with the tensor's values (for a host tensor, its own storage). */
  async toArray(): Promise<HostArray> {
    return this.data;
  }

  /** The values as float32 (16-bit floats decoded; float32 storage returned as is). */
  toFloat32(): Float32Array {
    const d = this.data;
    if (this.dtype === 'float32' || this.dtype === 'float16' || this.dtype === 'bfloat16')
      return decodeFloats(d as Float32Array | Uint16Array, this.dtype as FloatDType);
    if (this.dtype === 'int64') return Float32Array.from(d as BigInt64Array, (x) => Number(x));
    return Float32Array.from(d as ArrayLike<number>);
  }

  /** Releases the storage; further use throws GK_DISPOSED. Idempotent. */
  dispose(): void {
    this.#data = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

/** Shorthand for Tensor.from. */
export function tensor(data: HostArray, options?: TensorOptions): Tensor {
  return Tensor.from(data, options);
}
