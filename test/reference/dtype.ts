// 16-bit float decoding and rounding, written from the IEEE-754 definitions with plain
// arithmetic (no typed-array reinterpretation), independent of the library's conversions.

interface Format {
  expBits: number;
  mantBits: number;
}

const BF16: Format = { expBits: 8, mantBits: 7 };
const F16: Format = { expBits: 5, mantBits: 10 };

function decodeOne(bits: number, f: Format): number {
  const expMax = (1 << f.expBits) - 1;
  const bias = (1 << (f.expBits - 1)) - 1;
  const sign = (bits >>> (f.expBits + f.mantBits)) & 1 ? -1 : 1;
  const exp = (bits >>> f.mantBits) & expMax;
  const mant = bits & ((1 << f.mantBits) - 1);
  if (exp === expMax) return mant === 0 ? sign * Infinity : NaN;
  if (exp === 0) {
    // zero or subnormal: mant · 2^(1 - bias - mantBits)
    return sign * mant * Math.pow(2, 1 - bias - f.mantBits);
  }
  return sign * (1 + mant / Math.pow(2, f.mantBits)) * Math.pow(2, exp - bias);
}

function decode(a: Uint16Array, f: Format): Float64Array {
  const out = new Float64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = decodeOne(a[i]!, f);
  return out;
}

export function decodeBF16(a: Uint16Array): Float64Array {
  return decode(a, BF16);
}

export function decodeF16(a: Uint16Array): Float64Array {
  return decode(a, F16);
}

/** Round a float64 value to the nearest value of the format (ties to even), overflow to ±Infinity. */
function roundTo(x: number, f: Format): number {
  if (Number.isNaN(x) || x === 0 || !Number.isFinite(x)) return x;
  const bias = (1 << (f.expBits - 1)) - 1;
  const emin = 1 - bias; // exponent of the smallest normal
  const emax = bias; // exponent of the largest finite value
  const p = f.mantBits + 1; // significand precision in bits
  const sign = x < 0 ? -1 : 1;
  const a = Math.abs(x);

  // e = floor(log2(a)) exactly (Math.log2 may be off by one near powers of two).
  let e = Math.floor(Math.log2(a));
  while (Math.pow(2, e) > a) e--;
  while (Math.pow(2, e + 1) <= a) e++;
  if (e < emin) e = emin; // subnormal range: fixed quantum

  const quantum = Math.pow(2, e - (p - 1));
  const r = a / quantum; // exact: division by a power of two
  const fl = Math.floor(r);
  const frac = r - fl; // exact
  let n: number;
  if (frac > 0.5) n = fl + 1;
  else if (frac < 0.5) n = fl;
  else n = fl % 2 === 0 ? fl : fl + 1;
  const rounded = n * quantum;
  if (rounded >= Math.pow(2, emax + 1)) return sign * Infinity;
  return sign * rounded;
}

export function roundToBF16(x: number): number {
  return roundTo(x, BF16);
}

export function roundToF16(x: number): number {
  return roundTo(x, F16);
}
