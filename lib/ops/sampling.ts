import { describe, fail } from '../errors';
import { addon, call, DTypeCode } from '../native';
import { Placement } from '../device';
import { Tensor } from '../tensor';
import { checkBoolean, checkKnownKeys, checkLogits, checkNumber, checkObject } from '../validate';

export interface SampleOptions {
  /** Softmax temperature T > 0. Default 1. */
  temperature?: number;
  /** Take the most likely token (lowest id on ties); no randomness. Default false. */
  greedy?: boolean;
  /** Keep only the K most likely tokens (ties to the lower id). 0 = off (default). */
  topK?: number;
  /** Then keep the smallest set of most likely tokens whose mass reaches P (of the top-K distribution). 1 = off (default). */
  topP?: number;
  /** Then drop tokens whose probability is below minP × the top probability. 0 = off (default). */
  minP?: number;
  /** Seed of the counter-based generator (Philox-4x32-10). Default 0. */
  seed?: number;
  /** Step counter (e.g. the decoding position): the same seed, row and step give the same draw. Default 0. */
  step?: number;
  /** Counter of the first row, to sample a batch in pieces with the draws of the whole batch. Default 0. */
  rowOffset?: number;
  /** The counter of each row (e.g. the ids of the sequences still being decoded); overrides rowOffset. */
  rowIds?: ArrayLike<number>;
}

export interface SampleResult {
  /** The sampled token per row, int32. */
  tokens: Tensor<'int32'>;
  /** Its log-prob under softmax(logits / T) (the full distribution): store it as the old log-prob. */
  logp: Tensor<'float32'>;
  /** Its log-prob under the truncated, renormalised distribution it was drawn from (0 when greedy). */
  logpTruncated: Tensor<'float32'>;
}

const KEYS = ['temperature', 'greedy', 'topK', 'topP', 'minP', 'seed', 'step', 'rowOffset', 'rowIds'] as const;

/**
 * Samples one token per row of `logits` (spec §8): temperature, topK, topP, minP or greedy, drawn
 * with a counter-based generator keyed by (seed; row, step), so any backend draws the same
 * tokens. Returns each token with its log-prob under the full and the truncated distribution.
 */
export async function sampleTokens(logits: Tensor, options: SampleOptions = {}): Promise<SampleResult> {
  const op = 'sampleTokens';
  checkObject(op, 'options', options);
  checkKnownKeys(op, 'option', options, KEYS);
  const { n, v, dtype, data } = checkLogits(op, logits);
  const o = {
    temperature: options.temperature === undefined ? 1 : checkNumber(op, 'options.temperature', options.temperature, { gt: 0, float32: true, reciprocal: true }),
    greedy: options.greedy === undefined ? false : checkBoolean(op, 'options.greedy', options.greedy),
    topK: options.topK === undefined ? 0 : checkNumber(op, 'options.topK', options.topK, { integer: true, min: 0 }),
    topP: options.topP === undefined ? 1 : checkNumber(op, 'options.topP', options.topP, { gt: 0, max: 1 }),
    minP: options.minP === undefined ? 0 : checkNumber(op, 'options.minP', options.minP, { min: 0, max: 0.999999 }),
    seed: options.seed === undefined ? 0 : checkNumber(op, 'options.seed', options.seed, { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER }),
    step: options.step === undefined ? 0 : checkNumber(op, 'options.step', options.step, { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER }),
    rowOffset: options.rowOffset === undefined ? 0 : checkNumber(op, 'options.rowOffset', options.rowOffset, { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER }),
  };
  let rowIds: BigInt64Array | undefined;
  if (options.rowIds !== undefined) {
    const ids = options.rowIds;
    if (!(Array.isArray(ids) || ArrayBuffer.isView(ids)) || ids.length !== n)
      fail('GK_SHAPE', `${op}: options.rowIds must have one counter per row (${n}), got ${describe(ids)}`);
    rowIds = BigInt64Array.from({ length: n }, (_, i) => BigInt(checkNumber(op, `options.rowIds[${i}]`, ids[i], { integer: true, min: 0, max: Number.MAX_SAFE_INTEGER })));
  }
  const at = Placement.of(op, [logits]);
  const tokens = at.array('int32', n) as Int32Array;
  const logp = at.f32(n);
  const logpTruncated = at.f32(n);
  const native = addon();
  await at.run(call(op, () =>
    native.sampleTokens({ device: at.device, logits: data, dtype: DTypeCode[dtype], n, v, ...o, ...(rowIds ? { rowIds } : {}), tokens, logp, logpTruncated }),
  ));
  const shape = logits.shape.slice(0, -1);
  return { tokens: at.tensor(tokens, 'int32', shape), logp: at.tensor(logp, 'float32', shape), logpTruncated: at.tensor(logpTruncated, 'float32', shape) };
}
