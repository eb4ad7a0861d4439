// Spec §6 on the GPU: the GRPO loss from logits, with only O(N) extra device memory.
// Every pointer in the args is device memory; the scalars land in a.step.out (host).
#pragma once
#include <cuda_runtime.h>

#include "../backend.h"
#include "common.cuh"

namespace gk {
namespace cuda {

// Forward kernel (lse, logp, H) -> token mask (mask && target != ignore_index) -> loss step ->
// backward kernel (grad, which may alias the logits). All four stages are enqueued back to back
// and the stream is synchronised once at the end. If the forward or the loss step finds an error
// (bad target, non-finite row with check_finite, bad seqOffsets) the backward kernel writes
// nothing, so aliased logits stay intact, and the error is returned (in the CPU's order).
// Scratch (cudaMallocAsync on the stream): mask N bytes, dlogp N floats, dentropy N floats when
// entropyCoef != 0, the unrounded log-probs (N doubles), and O(S) for the loss step.
Status grpo_loss_fused(FusedLossArgs& a, cudaStream_t stream);

}  // namespace cuda
}  // namespace gk
