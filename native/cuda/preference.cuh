// The Bradley–Terry reward-model loss on the GPU (the companion of spec §8, issue 5).
// Every pointer in the args is device memory; the work is enqueued on `stream`.
#pragma once
#include <cuda_runtime.h>

#include "../backend.h"
#include "common.cuh"

namespace gk {
namespace cuda {

// The GPU version of gk::cpu::bradley_terry_loss: per-pair gradients from core/preference.h's
// bradley_terry (the same float64 formula), and loss / accuracy / mean margin reduced in float64
// by a fixed-order two-level reduction (deterministic run to run; the last bits of the sums may
// differ from the CPU's sequential ones). Fills a.loss, a.accuracy, a.mean_margin; synchronises
// the stream.
Status bradley_terry_loss(PreferenceArgs& a, cudaStream_t stream);

}  // namespace cuda
}  // namespace gk
