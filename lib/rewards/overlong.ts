import { fail } from '../errors';
import { checkNumber } from '../validate';

export interface OverlongOptions {
  /** The completion length limit. */
  maxLength: number;
  /** Width of the linear ramp before maxLength. */
  cacheLength: number;
  /** The penalty at and beyond the limit. Default 1. */
  penalty?: number;
}

/**
 * DAPO's soft overlong punishment: 0 up to maxLength − cacheLength, then a linear ramp down to
 * −penalty at maxLength, and −penalty beyond.
 */
export function overlongPenalty(length: number, o: OverlongOptions): number {
  const op = 'overlongPenalty';
  checkNumber(op, 'length', length, { integer: true, min: 0 });
  const max = checkNumber(op, 'options.maxLength', o?.maxLength, { integer: true, min: 1 });
  const cache = checkNumber(op, 'options.cacheLength', o.cacheLength, { integer: true, min: 0 });
  if (cache > max) fail('GK_INVALID_ARG', `${op}: options.cacheLength must be <= maxLength (${max}), got ${cache}`);
  const penalty = o.penalty === undefined ? 1 : checkNumber(op, 'options.penalty', o.penalty, { min: 0 });
  const start = max - cache;
  if (length <= start) return 0;
  if (length > max) return -penalty;
  return (-penalty * (length - start)) / cache;
}
