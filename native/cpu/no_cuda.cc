// Stand-in for native/cuda when the addon is built without CUDA (no nvcc, GK_CUDA=OFF, or
// the node-gyp fallback): the probe says why, every device entry point returns kCuda.
#include <stdio.h>

#include "../backend.h"

#ifndef GK_WITH_CUDA
namespace gk {
namespace cuda {

namespace {
const char* kWhy = "this build of the addon has no CUDA backend (nvcc was not found or GK_CUDA=OFF at build time)";
Status no_cuda() {
  Status st;
  st.code = kCuda;
  snprintf(st.message, sizeof(st.message), "%s", kWhy);
  return st;
}
}  // namespace

bool compiled() { return false; }
void probe(DeviceInfo* info) { snprintf(info->error, sizeof(info->error), "%s", kWhy); }

Status token_logprobs(const LogProbArgs&, Stream) { return no_cuda(); }
Status token_logprobs_backward(const LogProbBackwardArgs&, Stream) { return no_cuda(); }
Status group_advantages(AdvantageArgs&, Stream) { return no_cuda(); }
Status grpo_loss_step(LossStepArgs&, Stream) { return no_cuda(); }
Status grpo_loss_fused(FusedLossArgs&, Stream) { return no_cuda(); }
Status distill_loss(DistillArgs&, Stream) { return no_cuda(); }
Status sample_tokens(const SampleArgs&, Stream) { return no_cuda(); }
Status bradley_terry_loss(PreferenceArgs&, Stream) { return no_cuda(); }

Status context(int32_t, Context**) { return no_cuda(); }
Stream stream_of(Context*) { return nullptr; }
Status activate(Context*) { return no_cuda(); }
Status malloc_async(Context*, size_t, void**) { return no_cuda(); }
void free_async(Context*, void*) {}
Status copy_to_device(Context*, void*, const void*, size_t) { return no_cuda(); }
Status copy_to_host(Context*, void*, const void*, size_t) { return no_cuda(); }
Status copy_device(Context*, void*, const void*, size_t) { return no_cuda(); }
Status record_external(Context*, uint64_t, void**) { return no_cuda(); }
Status wait_event(Context*, void*) { return no_cuda(); }
void destroy_event(Context*, void*) {}
Status synchronize(Context*) { return no_cuda(); }
Status memory_info(Context*, MemoryInfo*) { return no_cuda(); }
Status reset_peak(Context*) { return no_cuda(); }
Status timer_start(Context*) { return no_cuda(); }
Status timer_stop(Context*, double*) { return no_cuda(); }
uint64_t enqueue(Context*, const std::function<void(uint64_t)>&) { return 0; }
Status run_turn(Context*, uint64_t, const std::function<Status()>&) { return no_cuda(); }
void after_issued(Context*, std::function<void()>) {}
Status run_timed(Context*, const std::function<Status()>&) { return no_cuda(); }
double last_op_ms(Context*) { return 0.0; }

}  // namespace cuda
}  // namespace gk
#endif
