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
export const EstimatorCode = { grpo: 0, rloo: 1 } as const;
export const SurrogateCode = { clip: 0, cispo: 1, sapo: 2 } as const;
export const IsLevelCode = { token: 0, sequence: 1, sequenceToken: 2 } as const;
export const KlCode = { k1: 0, k2: 1, k3: 2 } as const;
export const DivergenceCode = { forwardKL: 0, reverseKL: 1, jsd: 2 } as const;
export const AggregationCode = { seqMeanTokenMean: 0, tokenMean: 1, constant: 2, seqMeanTokenSum: 3 } as const;

type Targets = Int32Array | BigInt64Array;
type Logits = Float32Array | Uint16Array;

export interface NativeLogitsArgs {
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
}

export interface NativeLossInputs {
  s: number;
  seqOffsets: BigInt64Array;
  advantages: Float32Array;
  oldLogp?: Float32Array;
  refLogp?: Float32Array;
  mask?: Uint8Array;
  truncated?: Uint8Array;
  tokenLoss?: Float32Array;
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
}

export interface NativeInfo {
  version: string;
  napiVersion: number;
  threads: number;
  simd: string;
  cuda: {
    compiled: boolean;
    deviceCount: number;
    runtimeVersion: number;
    driverVersion: number;
    error: string;
    devices: { index: number; name: string; computeCapability: string; memoryBytes: number }[];
  };
}

export interface NativeAddon {
  info(): NativeInfo;
  tokenLogProbs(a: NativeLogitsArgs & { checkFinite: boolean; logp: Float32Array; entropy?: Float32Array; lse?: Float32Array }): Promise<void>;
  tokenLogProbsBackward(a: NativeLogitsArgs & { gradLogp?: Float32Array; gradEntropy?: Float32Array; lse?: Float32Array; entropy?: Float32Array; grad: Logits }): Promise<void>;
  groupAdvantages(a: {
    rewards: Float64Array; k: number; n: number; groupSize: number; weights?: Float64Array; scale: number; estimator: number; eps: number;
    advantages: Float32Array; combined: Float64Array; groupMean: Float64Array; groupStd: Float64Array;
  }): Promise<number>;
  grpoLossStep(a: NativeLossInputs & { n: number; logp: Float32Array; entropy?: Float32Array; dlogp: Float32Array; dentropy?: Float32Array }): Promise<NativeLossMetrics>;
  distillLoss(a: {
    n: number; v: number; student: Logits; studentDtype: number; teacher: Logits; teacherDtype: number; targets?: Targets; ignoreIndex: number;
    mask?: Uint8Array; s: number; seqOffsets: BigInt64Array; divergence: number; beta: number; temperature: number; hardLabelWeight: number;
    aggregation: number; normalizer: number; maxCompletionLength: number; grad?: Logits; rowLoss?: Float32Array;
  }): Promise<{ loss: number; tokens: number }>;
  sampleTokens(a: {
    logits: Logits; dtype: number; n: number; v: number; temperature: number; greedy: boolean; topK: number; topP: number; minP: number;
    seed: number; step: number; rowOffset: number; rowIds?: BigInt64Array; tokens: Int32Array; logp: Float32Array; logpTruncated: Float32Array;
  }): Promise<void>;
  bradleyTerryLoss(a: {
    n: number; chosen: Float32Array; rejected: Float32Array; margins?: Float32Array; margin: number; sum: boolean;
    gradChosen: Float32Array; gradRejected: Float32Array;
  }): Promise<{ loss: number; accuracy: number; meanMargin: number }>;
  grpoLossFused(a: NativeLogitsArgs & NativeLossInputs & {
    checkFinite: boolean; logp: Float32Array; entropy: Float32Array; lse: Float32Array; grad: Logits;
  }): Promise<NativeLossMetrics>;
}

let cached: NativeAddon | undefined;
let loadError: GrpoKernelsError | undefined;

/** Loads the addon once; throws GK_NO_ADDON with what to do when the binary is missing. */
export function addon(): NativeAddon {
  if (cached) return cached;
  if (loadError) throw loadError;
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const load = require('node-gyp-build') as (dir: string) => NativeAddon;
    cached = load(packageRoot);
    return cached;
  } catch (e) {
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
