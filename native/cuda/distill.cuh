// Spec §7 on the GPU: the distillation loss (forward KL, reverse KL, generalised JSD between
// temperature-scaled teacher and student rows, plus the optional hard-label term), aggregated like
// spec §4, and ∂loss/∂student-logits. Every pointer in the args is device memory.
#pragma once
#include <cuda_runtime.h>

#include "../backend.h"
#include "common.cuh"

namespace gk {
namespace cuda {

// The GPU version of gk::cpu::distill_loss: the same Status (code, row, message), the same outputs
// (grad in the student dtype, which may alias the student logits; row_loss when non-null) and the
// same a.loss / a.tokens. Errors are reported in the CPU's order: the sequence layout (kShape;
// nothing written), a target outside [0, V) that is not ignore_index (kTargetRange naming the
// smallest row; nothing written, nothing read out of bounds), then a non-finite row value
// (kNonFinite naming the smallest row, after every output and both scalars are written).
// Deterministic: the loss is a float64 sum in a fixed order, bit-identical run to run. Extra device
// memory is O(N + S). Enqueued on `stream`; synchronises it before returning.
Status distill_loss(DistillArgs& a, cudaStream_t stream);

}  // namespace cuda
}  // namespace gk
