import { describe, fail } from '../errors';
import { checkNumber } from '../validate';

export interface OverlongOptions {
  /** The completion length limit L_max: a positive integer. */
  maxLength: number;
  /** Width L_cache of the linear ramp just before maxLength: an integer in [0, maxLength]. */
  cacheLength: number;
  /** The penalty at maxLength and beyond: a finite number >= 0. Default 1. */
  penalty?: number;
}

/**
 * DAPO's soft overlong punishment for a completion of `length` tokens. With
 * s = maxLength − cacheLength:
 *
 * - 0                                        when length <= s,
 * - −penalty · (length − s) / cacheLength    when s < length <= maxLength (a linear ramp),
 * - −penalty                                 when length > maxLength.
 *
 * With cacheLength 0 there is no ramp: 0 up to maxLength, −penalty beyond.
 * Throws GK_INVALID_ARG for a length that is not a non-negative integer or invalid options.
 */
export function overlongPenalty(length: number, options: OverlongOptions): number {
  const op = 'overlongPenalty';
  checkNumber(op, 'length', length, { integer: true, min: 0 });
  if (typeof options !== 'object' || options === null)
    fail('GK_INVALID_ARG', `${op}: options must be an object { maxLength, cacheLength, penalty? }, got ${describe(options)}`);
  const max = checkNumber(op, 'options.maxLength', options.maxLength, { integer: true, min: 1 });
  const cache = checkNumber(op, 'options.cacheLength', options.cacheLength, { integer: true, min: 0 });
  if (cache > max) fail('GK_INVALID_ARG', `${op}: options.cacheLength must be <= maxLength (${max}), got ${cache}`);
  const penalty = options.penalty === undefined ? 1 : checkNumber(op, 'options.penalty', options.penalty, { min: 0 });
  const start = max - cache;
  if (length <= start) return 0;
  if (length > max) return -penalty;
  return (-penalty * (length - start)) / cache;
}
