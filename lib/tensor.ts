/// <reference lib="esnext.disposable" preserve="true" />
// (Kept in the declaration file: Symbol.dispose, for consumers whose lib lacks it.)
import { allocate, arrayTypeOf, decodeFloats, DTYPES, MAX_ELEMENTS, type ArrayOf, type DType, type DTypeOf, type FloatDType, type HostArray } from './dtype';
import { describe, fail } from './errors';
import { addon, type DeviceHandle } from './native';
// Used at call time only (device.ts imports this module).
import { Device, type DeviceRequest } from './device';

export type DeviceKind = 'cpu' | 'cuda';

export interface TensorOptions<D extends DType = DType> {
  /** Element type. Inferred from the typed array except for Uint16Array, which needs 'float16' or 'bfloat16'. */
  dtype?: D;
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

/** Bytes per element of each dtype. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = {
  float32: 4, float16: 2, bfloat16: 2, float64: 8, int32: 4, int64: 8, uint8: 1,
};

/**
 * A typed n-dimensional array on a device. Host (CPU) tensors wrap a typed array without
 * copying it; CUDA tensors hold device memory that stays on the GPU between calls (create them
 * with `Device.upload`, `Device.empty`, `Device.wrap` or `tensor.to(device)`; the ops return
 * CUDA tensors for CUDA inputs). Release with `dispose()` or a `using` declaration (device memory
 * also has a finalizer as a safety net); a disposed tensor throws GK_DISPOSED when used.
 *
 * `D` is its dtype: a `Tensor<'float32'>` has `data: Float32Array`, a `Tensor<'bfloat16'>`
 * `data: Uint16Array`; results of the ops are typed with theirs.
 */
export class Tensor<D extends DType = DType> {
  readonly dtype: D;
  readonly shape: readonly number[];
  /** 'cpu' or 'cuda'. */
  readonly device: DeviceKind;
  /** The CUDA device index (-1 for host tensors). */
  readonly deviceIndex: number;
  #data: HostArray | null;
  #handle: DeviceHandle | null;
  #disposed = false;

  private constructor(data: HostArray | null, handle: DeviceHandle | null, dtype: D, shape: readonly number[], index: number) {
    this.#data = data;
    this.#handle = handle;
    this.dtype = dtype;
    this.shape = Object.freeze([...shape]);
    this.device = handle ? 'cuda' : 'cpu';
    this.deviceIndex = handle ? index : -1;
  }

  /** Wraps a typed array (no copy). With `dtype` given, the array must be that dtype's storage. */
  static from<D extends DType>(data: ArrayOf<D>, options: TensorOptions<D> & { dtype: D }): Tensor<D>;
  static from<A extends HostArray>(data: A, options?: TensorOptions<DTypeOf<A>>): Tensor<DTypeOf<A>>;
  static from(data: HostArray, options: TensorOptions = {}): Tensor {
    if (!ArrayBuffer.isView(data) || data instanceof DataView)
      fail('GK_DTYPE', `Tensor.from: data must be a typed array, got ${describe(data)}`);
    if (options === null || typeof options !== 'object') fail('GK_INVALID_ARG', `Tensor.from: options must be an object { dtype?, shape? }, got ${describe(options)}`);
    const inferred = inferDType(data);
    const dtype = options.dtype ?? inferred;
    if (dtype === undefined)
      fail('GK_DTYPE', `Tensor.from: a Uint16Array needs dtype 'float16' or 'bfloat16', got no dtype`);
    if (!DTYPES.includes(dtype)) fail('GK_DTYPE', `Tensor.from: unknown dtype ${describe(dtype)}; expected one of ${DTYPES.join(', ')}`);
    const want = arrayTypeOf(dtype);
    if (data.constructor.name !== want)
      fail('GK_DTYPE', `Tensor.from: dtype '${dtype}' is stored in a ${want}, got ${describe(data)}`);
    if (isResizable(data.buffer))
      fail('GK_INVALID_ARG', 'Tensor.from: data must not be a view of a resizable ArrayBuffer (its memory could shrink under a running op); copy it into a fixed-length array');
    const shape = checkShape('Tensor.from', options.shape ?? [data.length]);
    if (shapeSize(shape) !== data.length)
      fail('GK_SHAPE', `Tensor.from: shape [${shape.join(', ')}] holds ${shapeSize(shape)} elements, but the data has ${data.length}`);
    return new Tensor<DType>(data, null, dtype, shape, -1);
  }

  /** @internal A tensor over device memory (lib/ code only; users go through Device). */
  static fromDevice<D extends DType>(handle: DeviceHandle, dtype: D, shape: readonly number[], index: number): Tensor<D> {
    return new Tensor<D>(null, handle, dtype, checkShape('Tensor', shape, false), index);
  }

  /** A new zero-filled host tensor. */
  static zeros(shape: readonly number[]): Tensor<'float32'>;
  static zeros<D extends DType>(shape: readonly number[], dtype: D): Tensor<D>;
  static zeros(shape: readonly number[], dtype: DType = 'float32'): Tensor {
    const dims = checkShape('Tensor.zeros', shape);
    if (!DTYPES.includes(dtype)) fail('GK_DTYPE', `Tensor.zeros: unknown dtype ${describe(dtype)}; expected one of ${DTYPES.join(', ')}`);
    return Tensor.from(allocate(dtype, shapeSize(dims), `Tensor.zeros([${dims.join(', ')}])`), { dtype, shape: dims });
  }

  /** Number of elements. */
  get size(): number {
    return shapeSize(this.shape);
  }

  /** Bytes of storage. */
  get byteLength(): number {
    return this.size * DTYPE_BYTES[this.dtype];
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  /** The host storage (no copy). Throws GK_DISPOSED after dispose(), GK_DEVICE for a CUDA tensor (use `await toArray()`). */
  get data(): ArrayOf<D> {
    this.#live();
    if (this.#data === null)
      fail('GK_DEVICE', `${this.toString()} lives on the GPU; read it with \`await tensor.toArray()\` or move it with \`await tensor.to('cpu')\``);
    if (this.#data.length !== this.size)
      fail('GK_DISPOSED', `${this.toString()}: its storage was detached (its ArrayBuffer transferred) or shrunk to ${this.#data.length} elements`);
    return this.#data as ArrayOf<D>;
  }

  /** @internal The device memory of a CUDA tensor. */
  get handle(): DeviceHandle {
    this.#live();
    if (this.#handle === null) fail('GK_DEVICE', `${this.toString()} is a host tensor, not device memory`);
    return this.#handle;
  }

  #live(): void {
    if (this.#disposed) fail('GK_DISPOSED', `Tensor [${this.shape.join(', ')}] ${this.dtype} was disposed`);
  }

  /**
   * Resolves with the tensor's values: for a host tensor its own storage, for a CUDA tensor a new
   * typed array copied from the GPU after the work queued before this call (the event loop is
   * not blocked while it waits).
   */
  async toArray(): Promise<ArrayOf<D>> {
    if (this.#handle === null) return this.data;
    const out = allocate(this.dtype, this.size);
    await addon().deviceDownload(this.handle, out);
    return out as ArrayOf<D>;
  }

  /** The values as float32 (16-bit floats decoded; float32 storage returned as is). Host tensors only. */
  toFloat32(): Float32Array {
    const d = this.data;
    if (this.dtype === 'float32' || this.dtype === 'float16' || this.dtype === 'bfloat16')
      return decodeFloats(d as Float32Array | Uint16Array, this.dtype as FloatDType);
    if (this.dtype === 'int64') return Float32Array.from(d as BigInt64Array, (x) => Number(x));
    return Float32Array.from(d as ArrayLike<number>);
  }

  /**
   * This tensor on `target` ('cpu', 'cuda', 'auto' or a Device): itself when it already lives
   * there, else a copy (host -> GPU through pinned staging, GPU -> host after the queued work).
   */
  async to(target: Device | DeviceRequest): Promise<Tensor<D>> {
    const dev = target instanceof Device ? target : Device.open(target);
    if (dev.kind === 'cpu') return this.device === 'cpu' ? this : (Tensor.from(await this.toArray(), { dtype: this.dtype, shape: this.shape }) as Tensor<D>);
    if (this.device === 'cuda' && this.deviceIndex === dev.index) return this;
    const host = this.device === 'cpu' ? this : Tensor.from(await this.toArray(), { dtype: this.dtype, shape: this.shape });
    return (await dev.upload(host)) as Tensor<D>;
  }

  /** A copy on the same device (device to device for a CUDA tensor). */
  async clone(): Promise<Tensor<D>> {
    if (this.device === 'cpu') return Tensor.from(this.data.slice() as HostArray, { dtype: this.dtype, shape: this.shape }) as Tensor<D>;
    const src = this.handle; // throws GK_DISPOSED before anything is allocated
    const h = addon().deviceAlloc(this.deviceIndex, this.byteLength);
    try {
      await addon().deviceCopy(h, src);
    } catch (e) {
      addon().deviceRelease(h);
      throw e;
    }
    return Tensor.fromDevice(h, this.dtype, this.shape, this.deviceIndex);
  }

  /**
   * The device address of a CUDA tensor's memory, for handing it to other CUDA code (allocated
   * first if nothing has written it yet). Valid until the tensor is disposed.
   */
  async pointer(): Promise<bigint> {
    return addon().devicePointer(this.handle);
  }

  /** Releases the storage (device memory goes back to the pool after the work queued on it); further use throws GK_DISPOSED. Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#handle) addon().deviceRelease(this.#handle);
    this.#data = null;
    this.#handle = null;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    const where = this.device === 'cuda' ? `cuda:${this.deviceIndex}` : 'cpu';
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${where}${this.disposed ? ', disposed' : ''})`;
  }
}

/** A shape: non-negative safe integers; a host tensor's must fit in one typed array. */
export function checkShape(op: string, shape: unknown, host = true): readonly number[] {
  if (!Array.isArray(shape) || shape.some((d) => !Number.isSafeInteger(d) || d < 0))
    fail('GK_SHAPE', `${op}: shape must be an array of non-negative integers, got ${describeShape(shape)}`);
  const size = shapeSize(shape as number[]);
  if (!host && !Number.isSafeInteger(size))
    fail('GK_SHAPE', `${op}: shape [${shape.join(', ')}] holds more than 2^53 elements`);
  if (host && size > MAX_ELEMENTS)
    fail('GK_SHAPE', `${op}: shape [${shape.join(', ')}] holds ${size} elements, more than a typed array can (${MAX_ELEMENTS})`);
  return shape as number[];
}

function describeShape(shape: unknown): string {
  if (!Array.isArray(shape)) return describe(shape);
  const items = shape.slice(0, 8).map((d) => (typeof d === 'number' ? String(d) : describe(d)));
  return `[${items.join(', ')}${shape.length > 8 ? ', …' : ''}]`;
}

/** Whether a typed array's buffer is a resizable (non-shared) ArrayBuffer. */
export function isResizable(buffer: ArrayBufferLike): boolean {
  return buffer instanceof ArrayBuffer && (buffer as { resizable?: boolean }).resizable === true;
}

/** Shorthand for Tensor.from. */
export function tensor<D extends DType>(data: ArrayOf<D>, options: TensorOptions<D> & { dtype: D }): Tensor<D>;
export function tensor<A extends HostArray>(data: A, options?: TensorOptions<DTypeOf<A>>): Tensor<DTypeOf<A>>;
export function tensor(data: HostArray, options?: TensorOptions): Tensor {
  return Tensor.from(data, options);
}
