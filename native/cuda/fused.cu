// Spec §6 on the GPU: forward kernel -> mask build -> loss step -> backward kernel, enqueued
// back to back on one stream with one synchronisation at the end. Extra device memory is O(N):
// the token mask, the per-token upstream gradients and the loss step's O(S) scratch.
#include "fused.cuh"

#include "logprobs.cuh"
#include "loss.cuh"

namespace gk {
namespace cuda {
namespace {

using detail::DeviceFlags;
using detail::LossResult;

// mask[t] = (user mask allows t) && target[t] != ignore_index, as native/cpu/fused.cc.
__global__ void __launch_bounds__(256) mask_kernel(const uint8_t* user_mask, const void* targets, bool target_i32,
                                                   int64_t ignore_index, int64_t n, uint8_t* out) {
  for (int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; t < n; t += (int64_t)gridDim.x * blockDim.x) {
    const int64_t y = target_i32 ? (int64_t)static_cast<const int32_t*>(targets)[t]
                                 : static_cast<const int64_t*>(targets)[t];
    out[t] = (uint8_t)((user_mask ? user_mask[t] != 0 : true) && y != ignore_index);
  }
}

struct FusedBlock {
  DeviceFlags flags;
  LossResult result;
};

}  // namespace

Status grpo_loss_fused(FusedLossArgs& a, cudaStream_t stream) {
  LogProbArgs& f = a.fwd;
  LossStepArgs& st = a.step;
  const int64_t n = f.in.n;
  if (st.n != n) return detail::make_status(kShape, "the loss step's token count must equal the logits' rows");
  if (n > 0 && (!f.logp || !a.grad)) return detail::make_status(kInvalid, "logp and grad buffers are required");

  const bool with_dentropy = st.opt.entropy_coef != 0.0;
  const size_t blk_b = detail::align256(sizeof(FusedBlock));
  const size_t mask_b = detail::align256((size_t)n);
  const size_t dlogp_b = detail::align256(sizeof(float) * (size_t)n);
  const size_t dent_b = with_dentropy ? dlogp_b : 0;
  const size_t lp64_b = detail::align256(sizeof(double) * (size_t)n);
  detail::DeviceScratch scratch;
  GK_CUDA_CHECK(scratch.alloc(blk_b + mask_b + dlogp_b + dent_b + lp64_b, stream));
  FusedBlock* blk = scratch.as<FusedBlock>(0);
  uint8_t* mask = scratch.as<uint8_t>(blk_b);
  float* dlogp = scratch.as<float>(blk_b + mask_b);
  float* dentropy = with_dentropy ? scratch.as<float>(blk_b + mask_b + dlogp_b) : nullptr;
  double* logp64 = scratch.as<double>(blk_b + mask_b + dlogp_b + dent_b);  // the loss step's unrounded log-probs
  LogProbArgs fwd = f;
  fwd.logp64 = logp64;

  // The loss step reads the forward's outputs and writes the scratch; check its arguments before
  // anything runs.
  LossStepArgs step = st;
  step.logp = f.logp;
  step.logp64 = logp64;
  step.entropy = f.entropy;
  step.mask = mask;
  step.dlogp = dlogp;
  step.dentropy = dentropy;
  GK_RETURN_IF_ERROR(detail::check_loss_args(step));
  GK_CUDA_CHECK(cudaMemsetAsync(&blk->flags, 0xFF, sizeof(DeviceFlags), stream));

  // 1. lse, logp, H (one read of the logits).
  GK_RETURN_IF_ERROR(detail::enqueue_token_logprobs(fwd, &blk->flags, stream));

  // 2. The token mask.
  if (n > 0) {
    GK_LAUNCH(detail::grid_for((n + 255) / 256, 8), 256, 0, stream, mask_kernel)(
        st.mask, f.in.targets, f.in.target_dtype == kI32, f.in.ignore_index, n, mask);
    GK_CUDA_CHECK_LAUNCH();
  }

  // 3. The loss step (O(N)).
  GK_RETURN_IF_ERROR(detail::enqueue_loss_step(step, &blk->flags, &blk->result, stream));

  // 4. The gradient (one read + one write of the logits); skipped on the device if 1-3 failed.
  LogProbBackwardArgs b;
  b.in = f.in;
  b.gl = dlogp;
  b.gh = dentropy;
  b.lse = f.lse;
  b.entropy = f.entropy;
  b.grad = a.grad;
  GK_RETURN_IF_ERROR(detail::enqueue_token_logprobs_backward(b, &blk->flags, nullptr, stream));

  FusedBlock h;
  GK_CUDA_CHECK(detail::finish_op(&h, blk, sizeof(h), stream));

  // As native/cpu/fused.cc leaves the step args: logp/entropy from the forward, scratch cleared.
  st.logp = f.logp;
  st.entropy = f.entropy;
  st.mask = nullptr;
  st.dlogp = nullptr;
  st.dentropy = nullptr;
  const Status status = detail::flags_to_status(h.flags, n);
  if (!status.ok()) return status;
  detail::fill_metrics(st.opt, h.result, &st.out);
  return status;
}

}  // namespace cuda
}  // namespace gk
