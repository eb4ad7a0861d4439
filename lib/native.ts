// The one place that loads the native addon (node-gyp-build) and types its raw functions.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail, GrpoKernelsError } from './errors';

/** The package root: the nearest folder above this file whose package.json is grpo-kernels'. */
export const packageRoot: string = (() => {
  let dir = __dirname;
  for (;;) {
    const pj = path.join(dir, 'package.json');
    if (fs.existsSync(pj)) {
      try {
        if (JSON.parse(fs.readFileSync(pj, 'utf8')).name === 'grpo-kernels') return dir;
      } catch {
        // keep looking
      }
    }
    const up = path.dirname(dir);
    if (up === dir) return path.resolve(__dirname, '..');
    dir = up;
  }
})();

export const packageVersion: string = JSON.parse(fs.readFileSync(path.join(packageRoot, 'package.json'), 'utf8')).version;

// Codes shared with native/core (enums there); the order is the ABI.
export const DTypeCode = { float32: 0, float16: 1, bfloat16: 2 } as const;
export const ScaleCode = { group: 0, batch: 1, none: 2 } as const;
export const EstimatorCode = { grpo: 0, rloo: 1, reinforcePlusPlus: 2, reinforcePlusPlusBaseline: 3, opo: 4, gpg: 5, grpoPassK: 6 } as const;
export const MultiObjectiveCode = { sumThenNormalize: 0, normalizeThenSum: 1 } as const;
export const SurrogateCode = { clip: 0, cispo: 1, sapo: 2, gpg: 3, cispoTwoSided: 4, vespo: 5, geoMean: 6, clipCov: 7, klCov: 8 } as const;
export const IsLevelCode = { token: 0, sequence: 1, sequenceToken: 2 } as const;
export const KlCode = { k1: 0, k2: 1, k3: 2 } as const;
export const DivergenceCode = { forwardKL: 0, reverseKL: 1, jsd: 2 } as const;
export const AggregationCode = { seqMeanTokenMean: 0, tokenMean: 1, constant: 2, seqMeanTokenSum: 3 } as const;

/** Opaque handle of device memory (an External from the addon); only lib/ code touches it. */
export interface DeviceHandle {
  readonly __gkDeviceBuffer: true;
}
/** A native array argument: a typed array, or device memory holding the same elements. */
type Buf<T> = T | DeviceHandle;
type Targets = Buf<Int32Array | BigInt64Array>;
type Logits = Buf<Float32Array | Uint16Array>;
type F32 = Buf<Float32Array>;
type F64 = Buf<Float64Array>;
type U8 = Buf<Uint8Array>;
type I64 = Buf<BigInt64Array>;

/** napi_typedarray_type codes, for device buffers whose element type the binding cannot see. */
export const ArrayTypeCode = { int32: 5, int64: 9 } as const;

/** Where a call runs: -1 the CPU backend, k the CUDA device k. */
export interface NativePlacement {
  device?: number;
  /** Device targets: ArrayTypeCode of their elements. */
  targetsType?: number;
  /** Write the gradient over the logits (no separate grad array). */
  gradInPlace?: boolean;
}

export interface NativeLogitsArgs extends NativePlacement {
  logits: Logits;
  dtype: number;
  n: number;
  v: number;
  targets: Targets;
  temperature: number;
  ignoreIndex: number;
}

export interface NativeLossOptions {
  surrogate: number;
  importanceSamplingLevel: number;
  klEstimator: number;
  aggregation: number;
  epsilonLow: number;
  epsilonHigh: number;
  delta: number;
  tauPos: number;
  tauNeg: number;
  beta: number;
  entropyCoef: number;
  normalizer: number;
  maxCompletionLength: number;
  maskTruncatedCompletions: boolean;
  topEntropyQuantile: number;
  /** Spec §9.1-9.3 (absent: off). */
  advantagesPerToken?: boolean;
  rolloutLevel?: number;
  rolloutMode?: number;
  rolloutClipMin?: number;
  rolloutClipMax?: number;
  rolloutBatchNormalize?: boolean;
  rejection?: { agg: number; k: number; lo: number; hi: number }[];
  offPolicyMaskThreshold?: number;
  biasCorrectedKl?: boolean;
  entropyForm?: number;
  entropyThreshold?: number;
  /** Spec §9.4. */
  vespoKPos?: number;
  vespoLambdaPos?: number;
  vespoKNeg?: number;
  vespoLambdaNeg?: number;
  covRatio?: number;
  clipCovLb?: number;
  clipCovUb?: number;
  ppoKlCoef?: number;
  covSeed?: number;
}

export interface NativeLossInputs {
  s: number;
  seqOffsets: I64;
  advantages: F32;
  oldLogp?: F32;
  refLogp?: F32;
  samplerLogp?: F32;
  keptMask?: U8;
  mask?: U8;
  truncated?: U8;
  tokenLoss?: F32;
  options: NativeLossOptions;
}

export interface NativeLossMetrics {
  loss: number;
  tokens: number;
  klMean: number;
  ratioMean: number;
  clipFractionLow: number;
  clipFractionHigh: number;
  clipFraction: number;
  entropyMean: number;
  entropyThreshold: number;
  nonFiniteRows: number;
  isTruncatedFraction: number;
  isMaskedFraction: number;
  rejectedFraction: number;
  rejectedSeqFraction: number;
  isWeightMean: number;
  isWeightMax: number;
  samplerKl: number;
  seqLogRatioMin: number;
  seqLogRatioMax: number;
  offPolicyMaskedFraction: number;
  phiMean: number;
}

export interface NativeInfo {
  version: string;
  napiVersion: number;
  threads: number;
  simd: string;
  cuda: {
    compiled: boolean;
    /** The GK_CUDA=emu build: the CUDA backend runs on the CPU emulator (native/emu), no GPU. */
    emulated: boolean;
    deviceCount: number;
    runtimeVersion: number;
    driverVersion: number;
    error: string;
    devices: { index: number; name: string; computeCapability: string; memoryBytes: number }[];
  };
}

export interface NativeAddon {
  info(): NativeInfo;
  /** The CPU benchmark's floor: read and copy (read + write) bandwidth in GB/s, exp in G elements/s. */
  cpuFloor(bytes: number): { readGBs: number; copyGBs: number; expGElems: number; threads: number };
  tokenLogProbs(a: NativeLogitsArgs & { checkFinite: boolean; logp: F32; entropy?: F32; lse?: F32; sumP2?: F32 }): Promise<void>;
  tokenLogProbsBackward(a: NativeLogitsArgs & { gradLogp?: F32; gradEntropy?: F32; lse?: F32; entropy?: F32; grad?: Logits }): Promise<void>;
  groupAdvantages(a: NativePlacement & {
    rewards: F64; k: number; n: number; groupSize: number; weights?: F64; lengths?: F64; scale: number; estimator: number; aggregation?: number; eps: number;
    advantages: F32; combined: F64; groupMean: F64; groupStd: F64; batchStats?: F64; partials?: F64; gpgCounts?: F64; gpgCountsOut?: F64;
  }): Promise<number>;
  grpoLossStep(a: NativePlacement & NativeLossInputs & { n: number; logp: F32; entropy?: F32; dlogp: F32; dentropy?: F32 }): Promise<NativeLossMetrics>;
  distillLoss(a: NativePlacement & {
    n: number; v: number; student: Logits; studentDtype: number; teacher: Logits; teacherDtype: number; targets?: Targets; ignoreIndex: number;
    mask?: U8; s: number; seqOffsets: I64; divergence: number; beta: number; temperature: number; hardLabelWeight: number;
    aggregation: number; normalizer: number; maxCompletionLength: number; grad?: Logits; rowLoss?: F32;
  }): Promise<{ loss: number; tokens: number }>;
  sampleTokens(a: NativePlacement & {
    logits: Logits; dtype: number; n: number; v: number; temperature: number; greedy: boolean; topK: number; topP: number; minP: number;
    seed: number; step: number; rowOffset: number; rowIds?: I64; tokens: Buf<Int32Array>; logp: F32; logpTruncated: F32;
  }): Promise<void>;
  bradleyTerryLoss(a: NativePlacement & {
    n: number; chosen: F32; rejected: F32; margins?: F32; margin: number; sum: boolean;
    gradChosen: F32; gradRejected: F32;
  }): Promise<{ loss: number; accuracy: number; meanMargin: number }>;
  grpoLossFused(a: NativeLogitsArgs & NativeLossInputs & {
    checkFinite: boolean; logp: F32; entropy: F32; lse: F32; sumP2?: F32; grad?: Logits;
  }): Promise<NativeLossMetrics>;
  deviceOpen(index: number): void;
  deviceAlloc(index: number, bytes: number): DeviceHandle;
  deviceWrap(index: number, pointer: bigint, bytes: number, stream?: bigint): DeviceHandle;
  deviceRelease(h: DeviceHandle): void;
  deviceUpload(h: DeviceHandle, data: ArrayBufferView): Promise<void>;
  deviceDownload(h: DeviceHandle, data: ArrayBufferView): Promise<void>;
  deviceCopy(dst: DeviceHandle, src: DeviceHandle, dstOffsetBytes?: number): Promise<void>;
  devicePointer(h: DeviceHandle): Promise<bigint>;
  deviceSynchronize(index: number): Promise<void>;
  deviceMemory(index: number): Promise<{ usedBytes: number; peakBytes: number; reservedBytes: number; freeBytes: number; totalBytes: number }>;
  deviceResetPeak(index: number): Promise<void>;
  deviceLastOpMs(index: number): number;
}

let cached: NativeAddon | undefined;
let loadError: GrpoKernelsError | undefined;

/**
 * GK_ADDON_PATH: load the addon from this file instead of the package's build (a sanitizer build,
 * for instance: scripts/asan.sh). It must be an absolute path to an existing `.node` file.
 */
export function addonPathOverride(env: Readonly<Record<string, string | undefined>> = process.env): string | undefined {
  const p = env.GK_ADDON_PATH;
  if (p === undefined || p === '') return undefined;
  if (!path.isAbsolute(p) || !p.endsWith('.node'))
    fail('GK_NO_ADDON', `grpo-kernels: GK_ADDON_PATH must be an absolute path to a .node file, got '${p}'`);
  let ok = false;
  try {
    ok = fs.statSync(p).isFile();
  } catch {
    ok = false;
  }
  if (!ok) fail('GK_NO_ADDON', `grpo-kernels: GK_ADDON_PATH names no file: '${p}'`);
  return p;
}

/** Loads the addon once; throws GK_NO_ADDON with what to do when the binary is missing. */
export function addon(): NativeAddon {
  if (cached) return cached;
  if (loadError) throw loadError;
  try {
    const override = addonPathOverride();
    if (override !== undefined) {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      cached = require(override) as NativeAddon;
      return cached;
    }
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = (require('node-gyp-build') as (dir: string) => NativeAddon)(packageRoot);
    return cached;
  } catch (e) {
    if (e instanceof GrpoKernelsError) {
      loadError = e;
      throw e;
    }
    loadError = new GrpoKernelsError(
      'GK_NO_ADDON',
      `grpo-kernels: the native addon could not be loaded from ${packageRoot} (${(e as Error).message}). ` +
        'Build it with `npm rebuild grpo-kernels` (needs cmake >= 3.20 and a C++17 compiler; nvcc for CUDA), ' +
        'or install on linux-x64 where a prebuilt binary ships.',
    );
    throw loadError;
  }
}

/** Awaits a native call, turning its errors into GrpoKernelsError with the op's name. */
export async function call<T>(op: string, f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    const err = e as { code?: string; message?: string; row?: number };
    if (e instanceof GrpoKernelsError) throw e;
    const code = typeof err?.code === 'string' && err.code.startsWith('GK_') ? err.code : 'GK_INTERNAL';
    fail(code as never, `${op}: ${err?.message ?? String(e)}`, err?.row);
  }
}
