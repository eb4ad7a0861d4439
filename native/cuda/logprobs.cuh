// Spec §1 on the GPU: fused log-softmax + target gather (+ entropy), and its backward.
// Every pointer in the args is device memory; work is enqueued on `stream`.
#pragma once
#include <cuda_runtime.h>

#include "../backend.h"
#include "common.cuh"

namespace gk {
namespace cuda {

// Forward. Writes logp (and entropy, lse where non-null) for every row; ignored rows get 0s.
// Returns kTargetRange naming the smallest row whose target is outside [0, V) and not
// ignore_index (those rows get NaN, nothing is read out of bounds), else kNonFinite naming the
// smallest non-finite row when check_finite is set. Synchronises the stream (to read the flags).
Status token_logprobs(const LogProbArgs& a, cudaStream_t stream);

// Backward. grad (logits' dtype, may alias the logits) = spec §1's ∂L/∂z for every row; ignored
// rows, rows with gl = gh = 0 and rows with a bad target are written as zeros (the last also
// give kTargetRange). lse/entropy are recomputed where not given. Synchronises the stream.
Status token_logprobs_backward(const LogProbBackwardArgs& a, cudaStream_t stream);

namespace detail {
// The same ops without the synchronisation, for composition (fused.cu): errors are recorded in
// `flags` (device memory, initialised to 0xFF bytes) and only launch errors are returned.
Status enqueue_token_logprobs(const LogProbArgs& a, DeviceFlags* flags, cudaStream_t stream);
// When `abort_if` is non-null the kernel writes nothing at all if any of its four slots is set
// (earlier stages failed; the logits, which grad may alias, stay intact). Bad targets are
// recorded in *bad_target_out when non-null.
Status enqueue_token_logprobs_backward(const LogProbBackwardArgs& a, const DeviceFlags* abort_if,
                                       unsigned long long* bad_target_out, cudaStream_t stream);
}  // namespace detail

}  // namespace cuda
}  // namespace gk
