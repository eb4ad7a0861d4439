import { extractAnswer } from './format';

/**
 * Canonical form of a numeric answer: whitespace removed, a leading '+' dropped, leading zeros
 * dropped, '-0' → '0', trailing zeros of a fraction (and a bare '.') dropped. Undefined when the
 * text is not a plain decimal number (thousands separators are not accepted).
 */
export function normalizeNumber(s: string): string | undefined {
  const m = /^([+-]?)(\d*)(?:\.(\d*))?$/.exec(s.replace(/\s+/g, ''));
  if (!m || (m[2] === '' && (m[3] ?? '') === '')) return undefined;
  const int = m[2]!.replace(/^0+(?=\d)/, '') || '0';
  const frac = (m[3] ?? '').replace(/0+$/, '');
  const body = frac ? `${int}.${frac}` : int;
  return m[1] === '-' && body !== '0' ? `-${body}` : body;
}

/**
 * 1 when the completion's answer equals `expected` as numbers (after normalizeNumber), 0 when
 * it does not or has no answer; NaN ("not applicable") when `expected` is not a number.
 */
export function accuracyReward(completion: string, expected: string | number): number {
  const want = normalizeNumber(String(expected));
  if (want === undefined) return NaN;
  const answer = extractAnswer(completion);
  return answer !== undefined && normalizeNumber(answer) === want ? 1 : 0;
}
