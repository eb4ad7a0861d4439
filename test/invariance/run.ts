// Child process of test/invariance.test.ts: runs a fixed set of ops on fixed random inputs and
// prints one JSON line of SHA-256 digests of every output's bytes, so that runs under different
// GK_SIMD_ISA levels and GK_NUM_THREADS counts can be compared bit for bit.
import { createHash } from 'node:crypto';
import * as gk from '../../lib/index';
import { Rng } from '../../lib/random';

function digest(a: ArrayBufferView): string {
  return createHash('sha256').update(Buffer.from(a.buffer, a.byteOffset, a.byteLength)).digest('hex').slice(0, 24);
}

async function main() {
  const r = new Rng(20261205);
  const out: Record<string, string> = {};
  // 70001 columns: three segments of a row (rows.h kSeg = 32768) and a ragged tail; 5 rows split
  // across the threads, 37 rows not.
  for (const [n, v] of [[5, 70001], [37, 4099]] as const) {
    const z = Float32Array.from({ length: n * v }, () => r.normal() * 3);
    for (let i = 0; i < n * v; i += 97) z[i] = -Infinity; // masked vocabulary entries
    const y = Int32Array.from({ length: n }, () => Math.floor(r.next() * v));
    const gl = Float32Array.from({ length: n }, () => r.next() - 0.5);
    const gh = Float32Array.from({ length: n }, () => r.next() - 0.5);
    for (const dtype of ['float32', 'bfloat16', 'float16'] as const) {
      const data = dtype === 'float32' ? z : dtype === 'bfloat16' ? gk.toBFloat16(z) : gk.toFloat16(z);
      const x = gk.Tensor.from(data, { dtype, shape: [n, v] });
      const zt = Float32Array.from(z, (u, i) => (Number.isFinite(u) ? u * 0.5 + Math.sin(i) : u)); // same masked entries
      const teacher = gk.Tensor.from(dtype === 'float32' ? zt : dtype === 'bfloat16' ? gk.toBFloat16(zt) : gk.toFloat16(zt), { dtype, shape: [n, v] });
      for (const temperature of [1, 0.7]) {
        const k = `${n}x${v}/${dtype}/T${temperature}`;
        const f = await gk.tokenLogProbs(x, y, { entropy: true, temperature });
        out[`${k}/logp`] = digest(f.logp.data);
        out[`${k}/entropy`] = digest(f.entropy!.data);
        const g = await gk.tokenLogProbsBackward(x, y, { gradLogp: gl, gradEntropy: gh }, { temperature });
        out[`${k}/grad`] = digest(g.data);
        const s = await gk.sampleTokens(x, { seed: 7, temperature });
        out[`${k}/sample`] = digest(s.tokens.data) + digest(s.logp.data) + digest(s.logpTruncated.data);
        for (const divergence of ['forwardKL', 'reverseKL'] as const) {
          const d = await gk.distillationLoss({ student: x, teacher }, { divergence, temperature });
          out[`${k}/${divergence}`] = digest(new Float64Array([d.loss])) + digest(d.gradStudent!.data);
        }
      }
    }
  }
  console.log(JSON.stringify(out));
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
