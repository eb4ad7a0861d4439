// Spec §2 on the GPU: group-relative advantages in float64, bit-identical to
// native/cpu/advantages.cc.
//
// Kernels (all O(n), enqueued back to back, one synchronisation at the end):
//   1. combine  (fixed partition of the samples into <= 1024 blocks): combined[i] = the weighted
//               sum of the applicable rewards; with scale 'batch' also each block's sum and count
//               of the valid values (fixed-order block reduction).
//   2. batch_ss (scale 'batch' only, same partition): every block reduces the level-1 partials in
//               the same fixed order (so all see the same batch mean), then the block's
//               Σ (x - mean)^2.
//   3. batch_std (scale 'batch' only, one block): the std from the level-2 partials.
//   4. groups   (one thread per group, grid-stride): the CPU's per-group loop verbatim — mean, std,
//               zero-variance test, advantages — with the group count reduced by integer atomics.
// §9.5 adds, only for the estimators that need them:
//   gpg:        count (one block) the valid and the non-zero rewards (integers: exact), α = their ratio,
//               before the groups kernel.
//   whitened (reinforcePlusPlus*, normalizeThenSum): the groups kernel writes each sample's value x
//               to a scratch array instead of advantages; whiten (one block, fixed-order strided
//               sums) gives the weighted mean and divisor; finish (grid-stride) writes the advantages.
// The partition depends on n only (not on the device), so the batch std is the same on every GPU.
// No floating-point atomics anywhere.
//
// core/advantages.h is used as is: its sums round every product (mul_rn/add_rn), so nvcc's FMA
// contraction cannot move `combined` or a group std off the CPU's bits.
#include "advantages.cuh"

namespace gk {
namespace cuda {
namespace {

constexpr int kThreads = 256;          // combine / batch_ss / groups blocks
constexpr int kFinalThreads = 1024;    // batch_std block
constexpr int64_t kPerBlock = 4096;    // samples per block of the fixed partition (at least)
constexpr int64_t kMaxBlocks = 1024;

struct Params {
  const double* rewards;
  const double* weights;
  const double* lengths;         // n or null
  int64_t k, n, group;
  AdvOptions opt;
  float* advantages;
  double* combined;
  double* group_mean;
  double* group_std;
  // Fixed partition for the batch statistics.
  int64_t nb, chunk;
  double* part_sum;              // nb, null unless scale 'batch'
  long long* part_cnt;           // nb
  double* part_ss;               // nb
  double* batch_std;             // 1, null unless scale 'batch'
  unsigned long long* zero_groups;  // 1
  double* x;                     // n, null unless whitened
  double* batch;                 // 4: whitened mean, divisor, weight sum; gpg α
  const double* batch_stats;     // 3 or null: §9.7 given (count, mean, m2)
  double* partials;              // 3 or null: §9.7 this batch's (count, mean, m2)
  const double* gpg_counts;      // 2 or null: §9.7 gpg's (valid, non-zero) given
  double* gpg_counts_out;        // 2 or null: this batch's
};

__device__ __forceinline__ void block_range(const Params& p, int64_t b, int64_t* lo, int64_t* hi) {
  const int64_t l = b * p.chunk;
  *lo = l < p.n ? l : p.n;
  *hi = l + p.chunk < p.n ? l + p.chunk : p.n;
}

// 1. combined = Σ_k w_k r_k over the applicable rewards (+ the level-1 batch partials).
__global__ void __launch_bounds__(kThreads) combine_kernel(const Params p) {
  GK_SHARED(smd, detail::ReduceSmem<double>);
  GK_SHARED(sml, detail::ReduceSmem<long long>);
  int64_t lo, hi;
  block_range(p, blockIdx.x, &lo, &hi);
  double s = 0.0;
  long long c = 0;
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) {
    const double x = combine_rewards(p.rewards, p.k, p.n, i, p.weights);
    p.combined[i] = x;
    if (x == x) {
      s += x;
      ++c;
    }
  }
  if (p.part_sum) {  // kernel-uniform
    s = detail::block_sum<kThreads>(s, smd);
    c = detail::block_sum<kThreads>(c, sml);
    if (threadIdx.x == 0) {
      p.part_sum[blockIdx.x] = s;
      p.part_cnt[blockIdx.x] = c;
    }
  }
}

// 2. The batch mean (every block reduces all level-1 partials in the same order), then the
// block's Σ (x - mean)^2 over its valid values.
__global__ void __launch_bounds__(kThreads) batch_ss_kernel(const Params p) {
  GK_SHARED(smd, detail::ReduceSmem<double>);
  GK_SHARED(sml, detail::ReduceSmem<long long>);
  double s = 0.0;
  long long c = 0;
  for (int64_t t = threadIdx.x; t < p.nb; t += kThreads) {
    s += p.part_sum[t];
    c += p.part_cnt[t];
  }
  s = detail::block_sum<kThreads>(s, smd);
  c = detail::block_sum<kThreads>(c, sml);
  const double mean = c > 0 ? s / (double)c : 0.0;
  int64_t lo, hi;
  block_range(p, blockIdx.x, &lo, &hi);
  double ss = 0.0;
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) {
    const double x = p.combined[i];
    if (x == x) ss += (x - mean) * (x - mean);
  }
  ss = detail::block_sum<kThreads>(ss, smd);
  if (threadIdx.x == 0) p.part_ss[blockIdx.x] = ss;
}

// 3. batch std = sqrt(Σ (x - mean)^2 / (valid - 1)), 0 with fewer than two valid values.
__global__ void __launch_bounds__(kFinalThreads) batch_std_kernel(const Params p) {
  GK_SHARED(smd, detail::ReduceSmem<double>);
  GK_SHARED(sml, detail::ReduceSmem<long long>);
  double ss = 0.0, s = 0.0;
  long long c = 0;
  for (int64_t t = threadIdx.x; t < p.nb; t += kFinalThreads) {
    ss += p.part_ss[t];
    s += p.part_sum[t];
    c += p.part_cnt[t];
  }
  ss = detail::block_sum<kFinalThreads>(ss, smd);
  s = detail::block_sum<kFinalThreads>(s, smd);
  c = detail::block_sum<kFinalThreads>(c, sml);
  if (threadIdx.x == 0) {
    *p.batch_std = p.batch_stats ? batch_std_from(p.batch_stats[0], p.batch_stats[2]) : batch_std_from((double)c, ss);
    if (p.partials) {
      p.partials[0] = (double)c;
      p.partials[1] = c > 0 ? s / (double)c : 0.0;  // the mean batch_ss_kernel used
      p.partials[2] = ss;
    }
  }
}

// gpg's α = valid / max(1, non-zero) over the combined rewards (one block; integer sums: exact).
__global__ void __launch_bounds__(kFinalThreads) gpg_alpha_kernel(const Params p) {
  GK_SHARED(sml, detail::ReduceSmem<long long>);
  long long valid = 0, nonzero = 0;
  for (int64_t i = threadIdx.x; i < p.n; i += kFinalThreads) {
    const double x = p.combined[i];
    if (x == x) {
      ++valid;
      if (x != 0.0) ++nonzero;
    }
  }
  valid = detail::block_sum<kFinalThreads>(valid, sml);
  nonzero = detail::block_sum<kFinalThreads>(nonzero, sml);
  if (threadIdx.x == 0) {
    if (p.gpg_counts_out) {
      p.gpg_counts_out[0] = (double)valid;
      p.gpg_counts_out[1] = (double)nonzero;
    }
    p.batch[3] = p.gpg_counts ? gpg_alpha(p.gpg_counts[0], p.gpg_counts[1]) : gpg_alpha((double)valid, (double)nonzero);
  }
}

// 4. One thread per group: native/cpu/advantages.cc's group loop.
__global__ void __launch_bounds__(kThreads) groups_kernel(const Params p) {
  GK_SHARED(sml, detail::ReduceSmem<long long>);
  const int64_t groups = p.n / p.group;
  const double batch_std = p.batch_std ? *p.batch_std : 0.0;
  const double alpha = p.opt.estimator == kEstGpg ? p.batch[3] : 1.0;
  const bool whitened = adv_whitened(p.opt);
  const bool gdpo = p.opt.aggregation == kAggNormalizeThenSum;
  long long zero = 0;
  for (int64_t gi = (int64_t)blockIdx.x * kThreads + threadIdx.x; gi < groups; gi += (int64_t)gridDim.x * kThreads) {
    const int64_t g0 = gi * p.group;
    const double* r = p.combined + g0;
    const GroupStats gs = group_stats(r, p.group);
    if (p.group_mean) p.group_mean[gi] = gs.mean;
    if (p.group_std) p.group_std[gi] = gs.std;
    if (gdpo) {
      if (normalize_then_sum_group(p.rewards, p.k, p.n, g0, p.group, p.weights, p.opt.eps, p.x + g0)) ++zero;
      continue;
    }
    if (gs.zero_variance) ++zero;
    if (whitened) {
      for (int64_t i = 0; i < p.group; ++i) p.x[g0 + i] = whiten_input(r[i], gs, p.opt);
      continue;
    }
    const GroupExtra ge = group_extra(r, p.lengths ? p.lengths + g0 : nullptr, p.group, p.opt);
    for (int64_t i = 0; i < p.group; ++i)
      p.advantages[g0 + i] = (float)advantage(r[i], i, gs, ge, batch_std, alpha, p.opt);
  }
  zero = detail::block_sum<kThreads>(zero, sml);
  if (threadIdx.x == 0 && zero > 0) atomicAdd(p.zero_groups, (unsigned long long)zero);  // integers: exact
}

// The whitened estimators' batch step (one block): weighted moments of the valid x in a fixed
// order (thread t sums t, t + 1024, ...; then the block tree), so every run gives the same bits.
__global__ void __launch_bounds__(kFinalThreads) whiten_kernel(const Params p) {
  GK_SHARED(smd, detail::ReduceSmem<double>);
  const bool by_len = p.opt.aggregation != kAggNormalizeThenSum && p.lengths;
  double w = 0.0, wx = 0.0;
  for (int64_t i = threadIdx.x; i < p.n; i += kFinalThreads) {
    const double x = p.x[i];
    if (x == x) {
      const double wi = by_len ? p.lengths[i] : 1.0;
      w += wi;
      wx += wi * x;
    }
  }
  w = detail::block_sum<kFinalThreads>(w, smd);
  wx = detail::block_sum<kFinalThreads>(wx, smd);
  const double mean = w > 0.0 ? wx / w : 0.0;
  double ss = 0.0;
  for (int64_t i = threadIdx.x; i < p.n; i += kFinalThreads) {
    const double x = p.x[i];
    if (x == x) ss += (by_len ? p.lengths[i] : 1.0) * ((x - mean) * (x - mean));
  }
  ss = detail::block_sum<kFinalThreads>(ss, smd);
  if (threadIdx.x == 0) {
    if (p.partials) {
      p.partials[0] = w;
      p.partials[1] = mean;
      p.partials[2] = ss;
    }
    const double* g = p.batch_stats;  // §9.7: given
    p.batch[0] = g ? g[1] : mean;
    p.batch[1] = g ? whiten_div(g[0], g[2], p.opt) : whiten_div(w, ss, p.opt);
    p.batch[2] = g ? g[0] : w;
  }
}

__global__ void __launch_bounds__(kThreads) finish_kernel(const Params p) {
  const double mean = p.batch[0], div = p.batch[1], w = p.batch[2];
  for (int64_t i = (int64_t)blockIdx.x * kThreads + threadIdx.x; i < p.n; i += (int64_t)gridDim.x * kThreads)
    p.advantages[i] = (float)whiten_final(p.x[i], w, mean, div);
}

}  // namespace

Status group_advantages(AdvantageArgs& a, cudaStream_t stream) {
  Status st;
  if (a.group < 1 || a.n % a.group != 0) {  // the CPU's check and message
    st.code = kShape;
    snprintf(st.message, sizeof(st.message), "groupSize %lld does not divide %lld samples", (long long)a.group,
             (long long)a.n);
    return st;
  }
  a.zero_variance_groups = 0;
  if (a.n <= 0) return st;
  if (!a.rewards || !a.advantages || !a.combined)
    return detail::make_status(kInvalid, "rewards and the advantages/combined outputs are required");
  if (a.opt.estimator == kEstOpo && !a.lengths)
    return detail::make_status(kInvalid, "estimator 'opo' needs the completion lengths");
  const bool whitened = adv_whitened(a.opt);
  const bool gpg = a.opt.estimator == kEstGpg;

  const bool batch = a.opt.scale == kScaleBatch || (a.partials && !whitened);
  Params p;
  p.batch_stats = a.batch_stats;
  p.partials = a.partials;
  p.gpg_counts = a.gpg_counts;
  p.gpg_counts_out = a.gpg_counts_out;
  p.rewards = a.rewards;
  p.weights = a.weights;
  p.lengths = a.lengths;
  p.k = a.k;
  p.n = a.n;
  p.group = a.group;
  p.opt = a.opt;
  p.advantages = a.advantages;
  p.combined = a.combined;
  p.group_mean = a.group_mean;
  p.group_std = a.group_std;
  int64_t nb = (a.n + kPerBlock - 1) / kPerBlock;
  nb = nb < 1 ? 1 : (nb > kMaxBlocks ? kMaxBlocks : nb);
  p.nb = nb;
  p.chunk = (a.n + nb - 1) / nb;

  // Scratch: the zero-variance counter and the batch std, then the per-block partials.
  const size_t head_b = detail::align256(2 * sizeof(double));
  const size_t part_b = detail::align256(sizeof(double) * (size_t)nb);
  const size_t extra_at = head_b + (batch ? 3 * part_b : 0);
  const size_t batch_b = detail::align256(4 * sizeof(double));
  const size_t x_b = whitened ? detail::align256(sizeof(double) * (size_t)a.n) : 0;
  detail::DeviceScratch scratch;
  GK_CUDA_CHECK(scratch.alloc(extra_at + batch_b + x_b, stream));
  p.batch = scratch.as<double>(extra_at);
  p.x = whitened ? scratch.as<double>(extra_at + batch_b) : nullptr;
  p.zero_groups = scratch.as<unsigned long long>(0);
  p.batch_std = batch ? scratch.as<double>(sizeof(double)) : nullptr;
  p.part_sum = batch ? scratch.as<double>(head_b) : nullptr;
  p.part_cnt = batch ? scratch.as<long long>(head_b + part_b) : nullptr;
  p.part_ss = batch ? scratch.as<double>(head_b + 2 * part_b) : nullptr;
  GK_CUDA_CHECK(cudaMemsetAsync(p.zero_groups, 0, sizeof(unsigned long long), stream));

  GK_LAUNCH((unsigned)nb, kThreads, 0, stream, combine_kernel)(p);
  GK_CUDA_CHECK_LAUNCH();
  if (batch) {
    GK_LAUNCH((unsigned)nb, kThreads, 0, stream, batch_ss_kernel)(p);
    GK_CUDA_CHECK_LAUNCH();
    GK_LAUNCH(1, kFinalThreads, 0, stream, batch_std_kernel)(p);
    GK_CUDA_CHECK_LAUNCH();
  }
  if (gpg) {
    GK_LAUNCH(1, kFinalThreads, 0, stream, gpg_alpha_kernel)(p);
    GK_CUDA_CHECK_LAUNCH();
  }
  const int64_t groups = a.n / a.group;
  GK_LAUNCH(detail::grid_for((groups + kThreads - 1) / kThreads, 8), kThreads, 0, stream, groups_kernel)(p);
  GK_CUDA_CHECK_LAUNCH();
  if (whitened) {
    GK_LAUNCH(1, kFinalThreads, 0, stream, whiten_kernel)(p);
    GK_CUDA_CHECK_LAUNCH();
    GK_LAUNCH(detail::grid_for((a.n + kThreads - 1) / kThreads, 8), kThreads, 0, stream, finish_kernel)(p);
    GK_CUDA_CHECK_LAUNCH();
  }

  unsigned long long zero = 0;
  GK_CUDA_CHECK(detail::finish_op(&zero, p.zero_groups, sizeof(zero), stream));
  a.zero_variance_groups = (int64_t)zero;
  return st;
}

}  // namespace cuda
}  // namespace gk
