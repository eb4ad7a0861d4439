import { describe, fail } from '../errors';
import { checkText, extractAnswer } from './format';

// After whitespace removal: an optional sign, integer digits, optionally '.' and fraction digits.
const NUMBER = /^([+-]?)(\d*)(?:\.(\d*))?$/;

/**
 * The canonical text of a plain decimal number, for comparing answers:
 * all whitespace removed ('- 5' → '-5'), a leading '+' dropped, leading zeros dropped (one '0'
 * kept: '007' → '7', '000' → '0'), trailing zeros of the fraction and a bare trailing '.' dropped
 * ('1.50' → '1.5', '3.' → '3'), and any zero made unsigned ('-0.0' → '0').
 * Undefined when the text is not such a number: empty, more than one sign or decimal point,
 * no digits at all, exponents, or thousands separators ('1,000').
 */
export function normalizeNumber(s: string): string | undefined {
  if (typeof s !== 'string') return undefined;
  const m = NUMBER.exec(s.replace(/\s+/g, ''));
  if (!m) return undefined;
  const sign = m[1]!;
  const intDigits = m[2]!;
  const fracDigits = m[3] ?? '';
  if (intDigits === '' && fracDigits === '') return undefined;
  const int = intDigits.replace(/^0+/, '') || '0';
  const frac = fracDigits.replace(/0+$/, '');
  const body = frac === '' ? int : `${int}.${frac}`;
  return sign === '-' && body !== '0' ? `-${body}` : body;
}

/**
 * Numeric accuracy of the completion's answer:
 * 1 when normalizeNumber(extractAnswer(completion)) equals normalizeNumber(String(expected)),
 * 0 when it differs, is not a number, or the completion has no `<answer>` block;
 * NaN ("not applicable") when `expected` itself is not a number.
 */
export function accuracyReward(completion: string, expected: string | number): number {
  checkText('accuracyReward', completion);
  if (typeof expected !== 'string' && typeof expected !== 'number' && typeof expected !== 'bigint')
    fail('GK_INVALID_ARG', `accuracyReward: expected must be a string or a number, got ${describe(expected)}`);
  const want = normalizeNumber(String(expected));
  if (want === undefined) return NaN;
  const answer = extractAnswer(completion);
  return answer !== undefined && normalizeNumber(answer) === want ? 1 : 0;
}
