// Devices: which backend runs the ops, the CUDA device runtime (device tensors, uploads,
// downloads, wrapped pointers, memory), and where each op call runs.
import { allocate, type ArrayOf, type DType, type HostArray } from './dtype';
import { describe, fail } from './errors';
import { addon, packageVersion, type DeviceHandle, type NativeInfo } from './native';
import { checkShape, DTYPE_BYTES, shapeSize, Tensor, type TensorOptions } from './tensor';

export type DeviceRequest = 'auto' | 'cpu' | 'cuda';

export interface BackendInfo {
  packageVersion: string;
  addonVersion: string;
  /** The backend `Device.open('auto')` picks. */
  backend: 'cpu' | 'cuda';
  cpu: { threads: number; simd: string };
  cuda: NativeInfo['cuda'] & {
    /** Whether the CUDA backend can be used, and if not, why. */
    used: boolean;
    reason: string;
    /** The NVIDIA driver against what the compiled-in CUDA runtime needs (see driverCheck). */
    driver: DriverCheck;
  };
}

export interface DriverCheck {
  /** The driver's CUDA version (cudaDriverGetVersion, e.g. 13000 for 13.0); 0: no driver found. */
  version: number;
  /** The lowest driver CUDA version the compiled-in runtime accepts (0 when CUDA is not compiled in). */
  required: number;
  /** Whether the driver found is new enough; undefined when there is nothing to check (CPU-only build). */
  sufficient: boolean | undefined;
  /** One line for people: the version, and what to do when it is too old. */
  summary: string;
}

/** Formats a CUDA version number (13000 -> '13.0'). */
export function formatCudaVersion(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}

/**
 * Whether a driver can run the CUDA runtime linked into the addon. The runtime is linked
 * statically; by CUDA's minor-version compatibility a driver of the same major version runs it
 * (CUDA 13.x: an R580 driver or newer, 580.65.06 on Linux), and the PTX that newer GPUs JIT-compile
 * needs a driver at least as new as the runtime, so the check asks for the runtime's own version.
 */
export function driverCheck(runtimeVersion: number, driverVersion: number, compiled = runtimeVersion > 0): DriverCheck {
  if (!compiled) return { version: driverVersion, required: 0, sufficient: undefined, summary: 'not checked (the addon is a CPU-only build)' };
  const required = runtimeVersion;
  const need = `CUDA ${formatCudaVersion(required)}${Math.floor(required / 1000) === 13 ? ' (an R580 driver or newer)' : ''}`;
  if (driverVersion === 0) return { version: 0, required, sufficient: false, summary: `none found; the CUDA backend needs an NVIDIA driver for ${need}` };
  const sufficient = driverVersion >= required;
  return {
    version: driverVersion, required, sufficient,
    summary: sufficient
      ? `${formatCudaVersion(driverVersion)}: sufficient (needs ${formatCudaVersion(required)} or newer)`
      : `${formatCudaVersion(driverVersion)}: TOO OLD, the CUDA backend needs a driver for ${need}; update the NVIDIA driver (the CPU backend is used meanwhile)`,
  };
}

let probed: NativeInfo | undefined;

/** The addon's probe of the machine, taken once (devices do not come and go in a process). */
function nativeInfo(): NativeInfo {
  probed ??= addon().info();
  return probed;
}

/** What the package and its addon are, and which backend runs the ops (and why not CUDA). */
export function backendInfo(): BackendInfo {
  const i = nativeInfo();
  let reason: string;
  let usable = false;
  if (!i.cuda.compiled) reason = i.cuda.error;
  else if (i.cuda.deviceCount === 0)
    reason = i.cuda.driverVersion === 0 ? `no NVIDIA driver is installed (${i.cuda.error})` : i.cuda.error;
  else {
    usable = true;
    reason = `${i.cuda.deviceCount} CUDA device(s): ${i.cuda.devices.map((d) => d.name).join(', ')}`;
    if (i.cuda.emulated) reason += " (emulated on the CPU: a test build; 'auto' picks the CPU backend, 'cuda' the emulator)";
  }
  return {
    packageVersion,
    addonVersion: i.version,
    // The emulated build (GK_CUDA=emu) verifies the CUDA sources; it is far slower than the CPU
    // backend, so only an explicit 'cuda' uses it.
    backend: usable && !i.cuda.emulated ? 'cuda' : 'cpu',
    cpu: { threads: i.threads, simd: i.simd },
    cuda: { ...i.cuda, used: usable, reason, driver: i.cuda.emulated
      ? { version: 0, required: 0, sufficient: undefined, summary: 'not checked (the emulated build uses no driver)' }
      : driverCheck(i.cuda.runtimeVersion, i.cuda.driverVersion, i.cuda.compiled) },
  };
}

/** Resolves a device request to the backend that will run it; 'cuda' fails with GK_DEVICE when CUDA cannot be used. */
export function resolveDevice(request: DeviceRequest): 'cpu' | 'cuda' {
  if (request !== 'auto' && request !== 'cpu' && request !== 'cuda')
    fail('GK_INVALID_ARG', `device must be 'auto', 'cpu' or 'cuda', got ${describe(request)}`);
  if (request === 'cpu') return 'cpu';
  const info = backendInfo();
  if (request === 'auto') return info.backend;
  if (!info.cuda.used) fail('GK_DEVICE', `device 'cuda' is not available: ${info.cuda.reason}`);
  return 'cuda';
}

export interface DeviceOpenOptions {
  /** CUDA device index. Default 0. */
  index?: number;
}

export interface DeviceMemory {
  /** Bytes in use from the device's memory pool (tensors and scratch of running ops). */
  usedBytes: number;
  /** The most bytes in use since the last resetPeakMemory(). */
  peakBytes: number;
  /** Bytes the pool holds (in use or cached for reuse). */
  reservedBytes: number;
  /** Free and total memory of the whole GPU. */
  freeBytes: number;
  totalBytes: number;
}

export interface WrapOptions {
  shape: readonly number[];
  dtype: DType;
  /**
   * The cudaStream_t (as a BigInt) whose queued work produces this memory: every op that reads
   * the tensor first waits for the work queued on it so far. Omitted: the memory is ready.
   */
  stream?: bigint;
}

/**
 * A compute device: the CPU backend or one CUDA GPU. Ops run where their tensors live; host
 * tensors run on the default device (see setDefaultDevice).
 */
export class Device {
  readonly kind: 'cpu' | 'cuda';
  /** CUDA device index (-1 for the CPU). */
  readonly index: number;
  /** The GPU's name, or the CPU's SIMD level. */
  readonly name: string;

  private constructor(kind: 'cpu' | 'cuda', index: number, name: string) {
    this.kind = kind;
    this.index = index;
    this.name = name;
  }

  static #cpu: Device | undefined;
  static #cuda = new Map<number, Device>();

  /** The CPU backend. */
  static get cpu(): Device {
    if (!Device.#cpu) Device.#cpu = new Device('cpu', -1, `cpu (${nativeInfo().simd})`);
    return Device.#cpu;
  }

  /**
   * Opens a device: 'cuda' (fails with GK_DEVICE saying why when none can be used), 'cpu', or
   * 'auto' (CUDA when usable, else the CPU). The first open of a GPU creates its stream and
   * memory pool.
   */
  static open(request: DeviceRequest = 'auto', options: DeviceOpenOptions = {}): Device {
    if (options === null || typeof options !== 'object') fail('GK_INVALID_ARG', `Device.open: options must be an object, got ${describe(options)}`);
    const index = options.index ?? 0;
    if (!Number.isInteger(index) || index < 0 || index > 7)
      fail('GK_INVALID_ARG', `Device.open: options.index must be an integer in [0, 7], got ${describe(index)}`);
    const known = request === 'cpu' ? undefined : Device.#cuda.get(index);
    if (known) return known; // an open GPU: no probe on the hot path
    const kind = resolveDevice(request);
    if (kind === 'cpu') return Device.cpu;
    const info = nativeInfo();
    const d = info.cuda.devices[index];
    if (!d) fail('GK_DEVICE', `Device.open: there is no CUDA device ${index} (${info.cuda.deviceCount} found)`);
    addon().deviceOpen(index);
    const dev = new Device('cuda', index, d.name);
    Device.#cuda.set(index, dev);
    return dev;
  }

  /** The device a tensor lives on. */
  static of(t: Tensor): Device {
    return t.device === 'cuda' ? Device.open('cuda', { index: t.deviceIndex }) : Device.cpu;
  }

  /** An uninitialised tensor on this device (zeros on the CPU). */
  empty(shape: readonly number[], dtype: DType = 'float32'): Tensor {
    if (this.kind === 'cpu') return Tensor.zeros(shape, dtype);
    const dims = checkShape('Device.empty', shape, false);
    if (!(dtype in DTYPE_BYTES)) fail('GK_DTYPE', `Device.empty: unknown dtype ${describe(dtype)}`);
    return Tensor.fromDevice(this.alloc(dtype, shapeSize(dims)), dtype, dims, this.index);
  }

  /**
   * Copies host data to this device (through pinned staging, without blocking the event loop).
   * On the CPU device it returns a host tensor over the same data (no copy).
   */
  async upload(data: HostArray | Tensor, options: TensorOptions = {}): Promise<Tensor> {
    const host = data instanceof Tensor ? data : Tensor.from(data, options);
    if (host.device === 'cuda') return host.to(this);
    if (this.kind === 'cpu') return host;
    const h = this.alloc(host.dtype, host.size);
    try {
      await addon().deviceUpload(h, host.data);
    } catch (e) {
      addon().deviceRelease(h);
      throw e;
    }
    return Tensor.fromDevice(h, host.dtype, host.shape, this.index);
  }

  /** Wraps device memory allocated elsewhere (never freed here). */
  wrap(pointer: bigint, options: WrapOptions): Tensor {
    if (this.kind !== 'cuda') fail('GK_DEVICE', 'Device.wrap: only CUDA memory can be wrapped');
    if (typeof pointer !== 'bigint') fail('GK_INVALID_ARG', `Device.wrap: pointer must be a BigInt, got ${describe(pointer)}`);
    if (!options || !(options.dtype in DTYPE_BYTES)) fail('GK_DTYPE', `Device.wrap: options.dtype must be one of ${Object.keys(DTYPE_BYTES).join(', ')}, got ${describe(options?.dtype)}`);
    if (!Array.isArray(options.shape) || options.shape.some((d) => !Number.isInteger(d) || d < 0))
      fail('GK_SHAPE', `Device.wrap: options.shape must be an array of non-negative integers, got ${JSON.stringify(options.shape)}`);
    if (options.stream !== undefined && typeof options.stream !== 'bigint')
      fail('GK_INVALID_ARG', `Device.wrap: options.stream must be a BigInt (a cudaStream_t), got ${describe(options.stream)}`);
    // An element-misaligned pointer would make the kernels issue misaligned accesses: the GPU
    // raises the sticky cudaErrorMisalignedAddress and every later op on the device fails.
    if (pointer % BigInt(DTYPE_BYTES[options.dtype]) !== 0n)
      fail('GK_INVALID_ARG', `Device.wrap: pointer 0x${pointer.toString(16)} is not aligned to the ${DTYPE_BYTES[options.dtype]}-byte elements of ${options.dtype}`);
    const size = shapeSize(options.shape);
    const h = addon().deviceWrap(this.index, pointer, size * DTYPE_BYTES[options.dtype], options.stream);
    return Tensor.fromDevice(h, options.dtype, options.shape, this.index);
  }

  /** Resolves when every op queued on this device so far has finished. */
  async synchronize(): Promise<void> {
    if (this.kind === 'cuda') await addon().deviceSynchronize(this.index);
  }

  /** Memory use of the device's pool (and the whole GPU). */
  async memory(): Promise<DeviceMemory> {
    if (this.kind !== 'cuda') fail('GK_DEVICE', 'Device.memory: the CPU device has no memory pool');
    return addon().deviceMemory(this.index);
  }

  /** Starts a new peak for memory().peakBytes. */
  async resetPeakMemory(): Promise<void> {
    if (this.kind !== 'cuda') fail('GK_DEVICE', 'Device.resetPeakMemory: the CPU device has no memory pool');
    await addon().deviceResetPeak(this.index);
  }

  /** GPU time in ms of the last op run on this device (CUDA events around its kernels; for benchmarks). */
  lastOpMs(): number {
    if (this.kind !== 'cuda') fail('GK_DEVICE', 'Device.lastOpMs: only CUDA ops are timed');
    return addon().deviceLastOpMs(this.index);
  }

  /** @internal New device memory for `count` elements of `dtype`. */
  alloc(dtype: DType, count: number): DeviceHandle {
    return addon().deviceAlloc(this.index, count * DTYPE_BYTES[dtype]);
  }

  toString(): string {
    return this.kind === 'cuda' ? `cuda:${this.index} (${this.name})` : 'cpu';
  }
}

let defaultDev: Device | undefined;

/** The device that runs ops on host tensors: the CPU unless setDefaultDevice chose a GPU. */
export function defaultDevice(): Device {
  return defaultDev ?? Device.cpu;
}

/**
 * Makes `device` run the ops whose inputs are all host tensors: they are uploaded for the call
 * and the results come back as host tensors. Ops on CUDA tensors always run on their GPU.
 */
export function setDefaultDevice(device: Device | DeviceRequest): Device {
  defaultDev = device instanceof Device ? device : Device.open(device);
  return defaultDev;
}

/**
 * Where one op call runs and where its outputs go: on the GPU of its CUDA tensors (outputs stay
 * there), else on the default device (outputs come back to the host).
 */
export class Placement {
  /** -1: the CPU backend; k: CUDA device k. */
  readonly device: number;
  /** Outputs are CUDA tensors on this device; null: host tensors. */
  readonly out: Device | null;

  private constructor(device: number, out: Device | null) {
    this.device = device;
    this.out = out;
  }

  /** Placement of a call whose tensor arguments are `inputs` (other values are ignored). */
  static of(op: string, inputs: readonly unknown[]): Placement {
    let index = -1;
    for (const x of inputs) {
      if (!(x instanceof Tensor) || x.device !== 'cuda') continue;
      if (index >= 0 && x.deviceIndex !== index)
        fail('GK_DEVICE', `${op}: the tensors live on different devices (cuda:${index} and cuda:${x.deviceIndex})`);
      index = x.deviceIndex;
    }
    if (index >= 0) return new Placement(index, Device.open('cuda', { index }));
    const d = defaultDevice();
    return new Placement(d.kind === 'cuda' ? d.index : -1, null);
  }

  #allocated: DeviceHandle[] = [];

  /** Output storage for `count` elements. */
  array(dtype: DType, count: number): HostArray | DeviceHandle {
    if (!this.out) return allocate(dtype, count);
    const h = this.out.alloc(dtype, count);
    this.#allocated.push(h);
    return h;
  }

  /** Awaits the op; when it fails, its device outputs are freed at once (not left to the GC). */
  async run<T>(op: Promise<T>): Promise<T> {
    try {
      return await op;
    } catch (e) {
      for (const h of this.#allocated) addon().deviceRelease(h);
      throw e;
    } finally {
      this.#allocated = [];
    }
  }

  f32(count: number): Float32Array | DeviceHandle {
    return this.array('float32', count) as Float32Array | DeviceHandle;
  }

  /** Frees storage from array() that no tensor took (device memory; host arrays are left to the GC). */
  release(storage: HostArray | DeviceHandle): void {
    if (this.out) addon().deviceRelease(storage as DeviceHandle);
  }

  /** The tensor over storage from array(). */
  tensor<D extends DType>(storage: HostArray | DeviceHandle, dtype: D, shape: readonly number[]): Tensor<D> {
    return this.out ? Tensor.fromDevice(storage as DeviceHandle, dtype, shape, this.out.index) : Tensor.from(storage as ArrayOf<D>, { dtype, shape });
  }
}
