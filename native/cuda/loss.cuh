// Spec §3-5 on the GPU: the GRPO loss from per-token log-probs, its gradient and metrics.
// Every pointer in the args is device memory; results land in a.out (host).
#pragma once
#include <cuda_runtime.h>

#include "../backend.h"
#include "common.cuh"

namespace gk {
namespace cuda {

// The deterministic GPU version of gk::cpu::grpo_loss_step: per-sequence float64 partial sums,
// reduced by one block in a fixed order (no float atomics), so the result is bit-identical run to
// run. Writes dlogp (and dentropy, token_loss where non-null) for every token and fills a.out.
// Synchronises the stream (to read the scalars back).
Status grpo_loss_step(LossStepArgs& a, cudaStream_t stream);

namespace detail {

// What the loss step leaves in device memory: the global counts, the entropy threshold and the
// reduced sums. fill_metrics turns it into a LossMetrics on the host.
struct LossResult {
  double tokens, longest, threshold;
  LossSums total;
  CorrSums corr;  // §9.1 batch sums (empty without samplerLogp)
  double norm;    // §9.1 batchNormalize divisor
  double ent_w;   // §9.8 'tokenMean' entropy weight
};
void fill_metrics(const LossOptions& o, const LossResult& r, LossMetrics* out);

// Host-side argument checks of the loss step (pointers and options; the sequence layout is
// checked on the device).
Status check_loss_args(const LossStepArgs& a);

// Enqueues the loss step without synchronising: layout errors go to `flags` (seq_order,
// seq_ends), results to *result (device memory). Kernels downstream may read both.
Status enqueue_loss_step(const LossStepArgs& a, DeviceFlags* flags, LossResult* result, cudaStream_t stream);

}  // namespace detail

}  // namespace cuda
}  // namespace gk
