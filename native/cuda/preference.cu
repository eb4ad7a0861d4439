// The Bradley–Terry reward-model loss on the GPU: a deterministic version of
// native/cpu/preference.cc.
//
// Two kernels: `pairs` (a fixed partition of the pairs into <= 1024 blocks, chosen from n only)
// writes every pair's gradients and reduces the block's float64 loss / margin sums and its count
// of correctly ordered pairs (fixed-order block reduction); `final` (one block) reduces the block
// partials in a fixed order. No floating-point atomics; the result is bit-identical run to run and
// the same on every GPU. The per-pair terms are core/preference.h's bradley_terry, so gradients
// match the CPU's up to the last bit of the device exp/log1p (they are rounded to float32).
#include "preference.cuh"

namespace gk {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kFinalThreads = 1024;
constexpr int64_t kPerBlock = 4096;
constexpr int64_t kMaxBlocks = 1024;

struct Totals {
  double loss, margin;
  long long correct;
};

struct Params {
  const float* chosen;
  const float* rejected;
  const float* margins;  // per pair, or null: `margin`
  double margin;
  int64_t n;
  double scale;
  float* grad_chosen;
  float* grad_rejected;
  int64_t nb, chunk;
  double* part_loss;     // nb
  double* part_margin;   // nb
  long long* part_correct;  // nb
  Totals* out;
};

__global__ void __launch_bounds__(kThreads) pairs_kernel(const Params p) {
  GK_SHARED(smd, detail::ReduceSmem<double>);
  GK_SHARED(sml, detail::ReduceSmem<long long>);
  const int64_t l = (int64_t)blockIdx.x * p.chunk;
  const int64_t lo = l < p.n ? l : p.n;
  const int64_t hi = l + p.chunk < p.n ? l + p.chunk : p.n;
  double loss = 0.0, margin = 0.0;
  long long correct = 0;
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) {
    const float c = p.chosen[i], r = p.rejected[i];
    const double m = p.margins ? (double)p.margins[i] : p.margin;
    const PairTerm t = bradley_terry(c, r, m);
    loss += t.loss;
    correct += c > r ? 1 : 0;
    margin += (double)c - (double)r;
    p.grad_chosen[i] = (float)(t.d_chosen * p.scale);
    p.grad_rejected[i] = (float)(t.d_rejected * p.scale);
  }
  loss = detail::block_sum<kThreads>(loss, smd);
  margin = detail::block_sum<kThreads>(margin, smd);
  correct = detail::block_sum<kThreads>(correct, sml);
  if (threadIdx.x == 0) {
    p.part_loss[blockIdx.x] = loss;
    p.part_margin[blockIdx.x] = margin;
    p.part_correct[blockIdx.x] = correct;
  }
}

__global__ void __launch_bounds__(kFinalThreads) final_kernel(const Params p) {
  GK_SHARED(smd, detail::ReduceSmem<double>);
  GK_SHARED(sml, detail::ReduceSmem<long long>);
  double loss = 0.0, margin = 0.0;
  long long correct = 0;
  for (int64_t t = threadIdx.x; t < p.nb; t += kFinalThreads) {
    loss += p.part_loss[t];
    margin += p.part_margin[t];
    correct += p.part_correct[t];
  }
  loss = detail::block_sum<kFinalThreads>(loss, smd);
  margin = detail::block_sum<kFinalThreads>(margin, smd);
  correct = detail::block_sum<kFinalThreads>(correct, sml);
  if (threadIdx.x == 0) *p.out = Totals{loss, margin, correct};
}

}  // namespace

Status bradley_terry_loss(PreferenceArgs& a, cudaStream_t stream) {
  const double scale = a.sum || a.n == 0 ? 1.0 : 1.0 / (double)a.n;
  Totals h{0.0, 0.0, 0};
  if (a.n > 0) {
    if (!a.chosen || !a.rejected || !a.grad_chosen || !a.grad_rejected)
      return detail::make_status(kInvalid, "chosen, rejected and the gradient outputs are required");
    Params p;
    p.chosen = a.chosen;
    p.rejected = a.rejected;
    p.margins = a.margins;
    p.margin = a.margin;
    p.n = a.n;
    p.scale = scale;
    p.grad_chosen = a.grad_chosen;
    p.grad_rejected = a.grad_rejected;
    int64_t nb = (a.n + kPerBlock - 1) / kPerBlock;
    nb = nb < 1 ? 1 : (nb > kMaxBlocks ? kMaxBlocks : nb);
    p.nb = nb;
    p.chunk = (a.n + nb - 1) / nb;
    const size_t out_b = detail::align256(sizeof(Totals));
    const size_t part_b = detail::align256(sizeof(double) * (size_t)nb);
    detail::DeviceScratch scratch;
    GK_CUDA_CHECK(scratch.alloc(out_b + 3 * part_b, stream));
    p.out = scratch.as<Totals>(0);
    p.part_loss = scratch.as<double>(out_b);
    p.part_margin = scratch.as<double>(out_b + part_b);
    p.part_correct = scratch.as<long long>(out_b + 2 * part_b);
    GK_LAUNCH((unsigned)nb, kThreads, 0, stream, pairs_kernel)(p);
    GK_CUDA_CHECK_LAUNCH();
    GK_LAUNCH(1, kFinalThreads, 0, stream, final_kernel)(p);
    GK_CUDA_CHECK_LAUNCH();
    GK_CUDA_CHECK(detail::finish_op(&h, p.out, sizeof(h), stream));
  }
  // As the CPU: the mean reduction scales the loss; accuracy and margin are means over the pairs.
  const double n = a.n > 0 ? (double)a.n : 1.0;
  a.loss = h.loss * scale;
  a.accuracy = (double)h.correct / n;
  a.mean_margin = h.margin / n;
  return Status{};
}

}  // namespace cuda
}  // namespace gk
