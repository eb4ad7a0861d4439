// Spec §2 on the GPU: group-relative advantages in float64.
// Every pointer in the args is device memory; the work is enqueued on `stream`.
#pragma once
#include <cuda_runtime.h>

#include "../backend.h"
#include "common.cuh"

namespace gk {
namespace cuda {

// The GPU version of gk::cpu::group_advantages, bit-identical to it: `combined`, the group
// statistics and the advantages come from the same float64 formulas in the same order (one thread
// per group walks its members like the CPU loop; products are rounded before the sums, as the CPU
// build never fuses them). Only scale 'batch' has a global reduction (the batch std): it is a
// fixed-order two-level reduction, deterministic run to run (its last bits may differ from the
// CPU's sequential sum). Fills a.zero_variance_groups; synchronises the stream.
Status group_advantages(AdvantageArgs& a, cudaStream_t stream);

}  // namespace cuda
}  // namespace gk
