// Spec §8 on the GPU: sampling with log-probs, drawing the same tokens as native/cpu/sampling.cc.
// Every pointer in the args is device memory; the work is enqueued on `stream`.
#pragma once
#include <cuda_runtime.h>

#include "../backend.h"
#include "common.cuh"

namespace gk {
namespace cuda {

// The GPU version of gk::cpu::sample_tokens (see sampling.cu for the algorithm). Per row: the
// token drawn by Philox(seed; row_ids[r] or row_offset + r, step) by inverse CDF over the kept
// tokens (greedy / temperature / topK / topP / minP as the CPU), its log-prob under the full
// temperature-scaled distribution and under the truncated one. The per-token probabilities are
// core/softmax.h's exp_nonpos bit for bit, and the sums are exact to 2^-90 (fixed point) or
// float64, so the token equals the CPU's unless the uniform target lies within a few float64
// ulps of a CDF boundary (the CPU sums sequentially, in a different order). Rows with no finite
// distribution get token -1 and NaN log-probs, and the call returns kNonFinite naming the
// smallest such row, with the CPU's message. Synchronises the stream.
Status sample_tokens(const SampleArgs& a, cudaStream_t stream);

}  // namespace cuda
}  // namespace gk
