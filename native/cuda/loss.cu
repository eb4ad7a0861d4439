// Spec §3-5 on the GPU: a deterministic version of native/cpu/loss.cc.
//
// Four small kernels on the stream, all O(N):
//   1. count   (one block per sequence): validates the sequence layout into the device flags,
//              counts the valid tokens of each sequence, and (topEntropyQuantile < 1) marks the
//              valid tokens in a byte array;
//   2. global  (one block): total tokens, longest sequence, and the entropy threshold — the
//              (1 - q) quantile of H over valid tokens (NaN entropies left out, as on the CPU)
//              by an exact radix select on the float bits (two order statistics, linear
//              interpolation as numpy/torch, like the CPU);
//   2b. cov    (one block, clipCov / klCov only, spec §9.4): the batch means of A and logp, the
//              eligible tokens' 64-bit keys, an exact radix select of the k-th smallest key and
//              the choice of the k smallest (ties: lower row first, by an ordered ballot scan);
//   3. seq     (one block per sequence): the per-token terms of core/loss.h, dlogp/dentropy/
//              token_loss, and the sequence's float64 partial sums (fixed-order block reduction);
//   4. final   (one block): the sums of all sequences, each thread over a fixed stride, then a
//              fixed tree.
// No floating-point atomics anywhere, so the result is bit-identical run to run. (It is not
// bit-identical to the CPU backend, whose sums are sequential; both are float64 and agree far
// inside the 1e-5 tolerance.)
#include "loss.cuh"

namespace gk {
namespace cuda {
namespace {

using detail::DeviceFlags;
using detail::LossResult;
using detail::ReduceSmem;

constexpr int kSeqThreads = 256;
constexpr int kOneBlockThreads = 1024;

struct LossParams {
  const float* logp;
  const double* logp64;  // optional, preferred (the fused op's unrounded log-probs)
  const float* old_logp;
  const float* ref_logp;
  const float* entropy;
  const float* advantages;
  const float* sampler;  // §9.1 samplerLogp, or null
  const int64_t* off;
  int64_t S, n;
  const uint8_t* mask;
  const uint8_t* truncated;
  LossOptions o;
  bool use_q;
  float* dlogp;
  float* dentropy;
  float* token_loss;
  uint8_t* kept;   // optional output (§9.7)
  double* count;   // S: valid tokens per sequence
  double* length;  // S: off[s + 1] - off[s]
  LossSums* part;  // S: per-sequence sums
  CorrSums* corr;  // S: §9.1 per-sequence correction sums (only with sampler)
  uint8_t* valid;  // n, only when use_q
  // §9.4 covariance selection (clipCov, klCov), n each: bits kSelIn (in the loss), kSelEligible,
  // kSelChosen; the token's advantage; the eligible tokens' keys.
  uint8_t* sel;
  float* tok_adv;
  uint64_t* keys;
  LossResult* result;
  DeviceFlags* flags;
};

constexpr uint8_t kSelIn = 1, kSelEligible = 2, kSelChosen = 4;

// The log-prob of token t: unrounded where the fused op gives it (as native/cpu/loss.cc).
__device__ __forceinline__ double logp_at(const LossParams& p, int64_t t) {
  return p.logp64 ? p.logp64[t] : (double)p.logp[t];
}

// Shared memory for types with non-trivial constructors (LossSums) is declared as raw bytes.
template <class T>
__device__ __forceinline__ ReduceSmem<T>& smem_as(unsigned char* raw) {
  return *reinterpret_cast<ReduceSmem<T>*>(raw);
}

// The rows of sequence s, clamped into [0, n] so that a bad layout (reported through the flags)
// never reads out of bounds.
__device__ __forceinline__ void seq_range(const LossParams& p, int64_t s, int64_t* b, int64_t* e) {
  int64_t lo = p.off[s], hi = p.off[s + 1];
  lo = lo < 0 ? 0 : (lo > p.n ? p.n : lo);
  hi = hi < lo ? lo : (hi > p.n ? p.n : hi);
  *b = lo;
  *e = hi;
}

__device__ __forceinline__ bool seq_dropped(const LossParams& p, int64_t s) {
  return p.o.mask_truncated && p.truncated && p.truncated[s];
}
__device__ __forceinline__ bool tok_valid(const LossParams& p, int64_t t) { return !p.mask || p.mask[t] != 0; }
__device__ __forceinline__ double old_at(const LossParams& p, int64_t t) {
  return p.old_logp ? (double)p.old_logp[t] : logp_at(p, t);
}
// A valid token that the rejection criteria keep (seq_keep: its sequence's decision).
__device__ __forceinline__ bool tok_kept(const LossParams& p, int64_t t, double seq_keep) {
  return tok_valid(p, t) && (!p.sampler || rs_kept(p.o, old_at(p, t), p.sampler + t, seq_keep));
}

// 1. Per-sequence counts and layout checks.
__global__ void __launch_bounds__(kSeqThreads) count_kernel(const LossParams p) {
  GK_SHARED(sm, ReduceSmem<long long>);
  GK_SHARED_ALIGNED(16, raw, unsigned char[sizeof(ReduceSmem<CorrSums>)]);
  ReduceSmem<CorrSums>& smc = smem_as<CorrSums>(raw);
  for (int64_t s = blockIdx.x; s < p.S; s += gridDim.x) {
    const int64_t b0 = p.off[s], e0 = p.off[s + 1];
    if (threadIdx.x == 0) {
      if ((s == 0 && b0 != 0) || (s == p.S - 1 && e0 != p.n)) atomicMin(&p.flags->seq_ends, 0ull);
      if (e0 < b0) detail::flag_row(&p.flags->seq_order, s);
    }
    int64_t b, e;
    seq_range(p, s, &b, &e);
    const bool dropped = seq_dropped(p, s);
    double keep = 1.0;
    if (p.sampler) {  // block-uniform: the §9.1 pre-pass over V0_s
      CorrSums cs;
      if (!dropped)
        for (int64_t t = b + threadIdx.x; t < e; t += kSeqThreads)
          if (tok_valid(p, t)) corr_token(p.o, old_at(p, t), (double)p.sampler[t], cs);
      cs = detail::block_reduce<kSeqThreads>(cs, detail::CorrSumsOp{}, CorrSums{}, smc);
      corr_finish(p.o, cs);  // every thread, same values
      keep = cs.keep;
      if (threadIdx.x == 0) p.corr[s] = cs;
    }
    long long c = 0;
    if (!dropped) {
      for (int64_t t = b + threadIdx.x; t < e; t += kSeqThreads) {
        const bool v = tok_kept(p, t, keep);
        c += v ? 1 : 0;
        if (p.valid) p.valid[t] = (v && !isnan(p.entropy[t])) ? 1 : 0;  // NaN has no rank
        if (p.sel) {
          p.sel[t] = v ? kSelIn : 0;
          p.tok_adv[t] = (float)token_adv(p.o, p.advantages, s, t);
        }
      }
    }
    c = detail::block_sum<kSeqThreads>(c, sm);
    if (threadIdx.x == 0) {
      p.count[s] = (double)c;
      p.length[s] = (double)(e0 - b0);
    }
  }
}

// Order-preserving map of float bits to unsigned keys (and back).
__device__ __forceinline__ uint32_t float_key(float f) {
  const uint32_t u = __float_as_uint(f);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_float(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k);
}

template <class K>
struct RadixSmem {
  unsigned long long hist[256];  // 64-bit: a digit may hold 2^32 or more keys
  K prefix;
  long long k;
};

// The k-th smallest (0-based) key among the rows t < n for which key_of(t, &key) is true: one
// 8-bit radix pass per key byte, each a shared-memory histogram (integer atomics: exact,
// order-independent counts) of the keys that match the digits chosen so far. All threads of the
// one-block kernel call it; all get the key, and in *rank the k-th key's rank among its equals.
// Keys of a warp often share a digit (entropies their top byte, covariances near 0 theirs): the
// lanes with the same digit are counted by one of them (__match_any_sync), one shared atomic
// per distinct digit per warp instead of up to 32 on one address.
template <class K, class KeyOf>
__device__ K radix_select(int64_t n, long long k, KeyOf key_of, RadixSmem<K>& sm, long long* rank) {
  static_assert(kOneBlockThreads % 32 == 0, "whole warps");
  K prefix = 0, mask = 0;
  const int lane = (int)(threadIdx.x & 31u);
  for (int shift = (int)sizeof(K) * 8 - 8; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += kOneBlockThreads) sm.hist[i] = 0;
    __syncthreads();
    // Block-uniform trip count: every lane of a warp reaches the match together.
    for (int64_t base = 0; base < n; base += kOneBlockThreads) {
      const int64_t t = base + (int64_t)threadIdx.x;
      int digit = -1;
      K key;
      if (t < n && key_of(t, &key) && (key & mask) == prefix) digit = (int)((key >> shift) & 255u);
      const unsigned same = __match_any_sync(0xffffffffu, digit);
      if (digit >= 0 && lane == __ffs((int)same) - 1) atomicAdd(&sm.hist[digit], (unsigned long long)__popc(same));
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      long long cum = 0;
      int d = 0;
      for (; d < 255; ++d) {
        if (cum + (long long)sm.hist[d] > k) break;
        cum += sm.hist[d];
      }
      sm.k = k - cum;
      sm.prefix = prefix | ((K)d << shift);
    }
    __syncthreads();
    k = sm.k;
    prefix = sm.prefix;
    mask |= (K)0xFF << shift;
  }
  *rank = k;
  return prefix;
}

// The k-th smallest entropy among the valid tokens.
__device__ float select_kth(const LossParams& p, long long k, RadixSmem<uint32_t>& sm) {
  long long rank;
  const auto key_of = [&p](int64_t t, uint32_t* key) {
    if (!p.valid[t]) return false;
    *key = float_key(p.entropy[t]);
    return true;
  };
  return key_float(radix_select<uint32_t>(p.n, k, key_of, sm, &rank));
}

// 2. Global counts and the entropy threshold.
__global__ void __launch_bounds__(kOneBlockThreads) global_kernel(const LossParams p) {
  GK_SHARED(sm, ReduceSmem<double>);
  GK_SHARED(sml, ReduceSmem<long long>);
  GK_SHARED(sel, RadixSmem<uint32_t>);
  GK_SHARED_ALIGNED(16, rawc, unsigned char[sizeof(ReduceSmem<CorrSums>)]);
  ReduceSmem<CorrSums>& smc = smem_as<CorrSums>(rawc);
  double tokens = 0.0, longest = 0.0;
  for (int64_t s = threadIdx.x; s < p.S; s += kOneBlockThreads) {
    tokens += p.count[s];
    longest = p.length[s] > longest ? p.length[s] : longest;
  }
  tokens = detail::block_sum<kOneBlockThreads>(tokens, sm);
  longest = detail::block_max<kOneBlockThreads>(longest, sm, 0.0);
  if (p.sampler) {  // block-uniform: the batch's §9.1 sums, in a fixed order
    CorrSums c;
    const detail::CorrSumsOp add;
    for (int64_t s = threadIdx.x; s < p.S; s += kOneBlockThreads)
      if (!seq_dropped(p, s)) c = add(c, p.corr[s]);
    c = detail::block_reduce<kOneBlockThreads>(c, add, CorrSums{}, smc);
    if (threadIdx.x == 0) {
      p.result->corr = c;
      p.result->norm = rc_norm(p.o, c);
    }
  } else if (threadIdx.x == 0) {
    p.result->corr = CorrSums{};
    p.result->norm = 1.0;
  }
  double threshold = -INFINITY;
  if (p.use_q && p.o.entropy_threshold_given) {
    threshold = p.o.entropy_threshold;  // §9.7: the global threshold, given
  } else if (p.use_q && tokens > 0.0) {  // block-uniform
    // Rankable tokens: valid, with a non-NaN entropy. None: the CPU ranks a single +inf.
    long long ranked = 0;
    for (int64_t t = threadIdx.x; t < p.n; t += kOneBlockThreads) ranked += p.valid[t];
    ranked = detail::block_sum<kOneBlockThreads>(ranked, sml);
    const long long size = ranked > 0 ? ranked : 1;
    const double pos = (1.0 - p.o.top_entropy_quantile) * (double)(size - 1);
    long long lo = (long long)pos;
    if (lo > size - 1) lo = size - 1;
    if (lo < 0) lo = 0;
    const double vlo = ranked > 0 ? (double)select_kth(p, lo, sel) : (double)INFINITY;
    const double vhi = ranked > 0 && lo + 1 < size ? (double)select_kth(p, lo + 1, sel) : vlo;
    threshold = vlo + (pos - (double)lo) * (vhi - vlo);  // the CPU's formula (NaN when nothing ranks)
  }
  double count_e = tokens;  // §9.8 'tokenMean' entropy form
  if (p.o.entropy_form == kEntropyTokenMean && p.use_q) {  // block-uniform
    long long c = 0;
    for (int64_t t = threadIdx.x; t < p.n; t += kOneBlockThreads) c += p.valid[t] && (double)p.entropy[t] >= threshold ? 1 : 0;
    count_e = (double)detail::block_sum<kOneBlockThreads>(c, sml);
  }
  if (threadIdx.x == 0) p.result->ent_w = entropy_token_weight(p.o, count_e);
  if (threadIdx.x == 0) {
    p.result->tokens = tokens;
    p.result->longest = longest;
    p.result->threshold = threshold;
  }
}

// 2b. Spec §9.4: the covariance selection of clipCov / klCov, in one block.
struct CovSmem {
  RadixSmem<uint64_t> r;
  unsigned int warp_count[kOneBlockThreads / 32];
};
__global__ void __launch_bounds__(kOneBlockThreads) cov_kernel(const LossParams p) {
  GK_SHARED(sm, ReduceSmem<double>);
  GK_SHARED(sml, ReduceSmem<long long>);
  GK_SHARED(cs, CovSmem);
  const double tokens = p.result->tokens;
  if (!(tokens > 0.0)) return;  // block-uniform: nothing to choose
  double sa = 0.0, slp = 0.0;
  for (int64_t t = threadIdx.x; t < p.n; t += kOneBlockThreads)
    if (p.sel[t] & kSelIn) {
      sa += (double)p.tok_adv[t];
      slp += logp_at(p, t);
    }
  sa = detail::block_sum<kOneBlockThreads>(sa, sm);
  slp = detail::block_sum<kOneBlockThreads>(slp, sm);
  const double mean_a = sa / tokens, mean_lp = slp / tokens;
  long long eligible = 0;
  for (int64_t t = threadIdx.x; t < p.n; t += kOneBlockThreads) {
    uint64_t key;
    if ((p.sel[t] & kSelIn) && cov_candidate(p.o, t, (double)p.tok_adv[t], logp_at(p, t), old_at(p, t), mean_a, mean_lp, &key)) {
      p.keys[t] = key;
      p.sel[t] = kSelIn | kSelEligible;
      ++eligible;
    }
  }
  eligible = detail::block_sum<kOneBlockThreads>(eligible, sml);
  const long long k = (long long)cov_select_count(p.o, tokens, (int64_t)eligible);
  if (k == 0) return;  // block-uniform
  // The (k-1)-th smallest eligible key, and how many of its equals precede the k-th.
  long long rank;
  const auto key_of = [&p](int64_t t, uint64_t* key) {
    if (!(p.sel[t] & kSelEligible)) return false;
    *key = p.keys[t];
    return true;
  };
  const uint64_t prefix = radix_select<uint64_t>(p.n, k - 1, key_of, cs.r, &rank);
  // Every eligible key below it is chosen, and the first rank + 1 equal to it in row order: a
  // block-uniform walk over the rows in chunks, each counted by ballots (warp order) and warp
  // totals (block order).
  const long long take = rank + 1;
  long long taken = 0;
  const int lane = (int)(threadIdx.x & 31u), warp = (int)(threadIdx.x >> 5);
  for (int64_t base = 0; base < p.n; base += kOneBlockThreads) {
    const int64_t t = base + (int64_t)threadIdx.x;
    bool tie = false;
    if (t < p.n && (p.sel[t] & kSelEligible)) {
      if (p.keys[t] < prefix) p.sel[t] |= kSelChosen;
      else tie = p.keys[t] == prefix;
    }
    const unsigned ballot = __ballot_sync(0xffffffffu, tie);
    if (lane == 0) cs.warp_count[warp] = (unsigned)__popc(ballot);
    __syncthreads();
    long long before = taken;
    for (int w = 0; w < warp; ++w) before += cs.warp_count[w];
    before += __popc(ballot & ((1u << lane) - 1u));
    if (tie && before < take) p.sel[t] |= kSelChosen;
    for (int w = 0; w < kOneBlockThreads / 32; ++w) taken += cs.warp_count[w];
    __syncthreads();
  }
}

// 3. Per-token terms and per-sequence sums (the loop body is native/cpu/loss.cc's).
__global__ void __launch_bounds__(kSeqThreads) seq_kernel(const LossParams p) {
  GK_SHARED(smd, ReduceSmem<double>);
  GK_SHARED_ALIGNED(16, raw, unsigned char[sizeof(ReduceSmem<LossSums>)]);
  ReduceSmem<LossSums>& sml = smem_as<LossSums>(raw);
  const LossOptions& o = p.o;
  const double tokens = p.result->tokens, longest = p.result->longest, threshold = p.result->threshold;
  const double norm = p.result->norm, ent_w = p.result->ent_w;
  for (int64_t s = blockIdx.x; s < p.S; s += gridDim.x) {
    int64_t b, e;
    seq_range(p, s, &b, &e);
    const bool dropped = seq_dropped(p, s);
    const double cnt = p.count[s];
    const double w = aggregation_weight(o, cnt, (double)p.S, tokens, longest);
    const double keep = p.sampler && !dropped ? p.corr[s].keep : 1.0;
    const double w_seq = p.sampler && !dropped ? p.corr[s].w_seq : 1.0;
    Ratio seq_ratio{1.0, 1.0};
    if (o.is_level != kIsToken) {  // block-uniform
      double lr = 0.0;
      if (!dropped)
        for (int64_t t = b + threadIdx.x; t < e; t += kSeqThreads)
          if (tok_kept(p, t, keep)) lr += logp_at(p, t) - old_at(p, t);
      lr = detail::block_sum<kSeqThreads>(lr, smd);
      seq_ratio = ratio_from_log(lr / (cnt > 1.0 ? cnt : 1.0));
    }
    double kappa = 0.0;
    if (o.off_policy_mask && (p.sampler || p.old_logp) && !dropped) {  // block-uniform
      for (int64_t t = b + threadIdx.x; t < e; t += kSeqThreads)
        if (tok_kept(p, t, keep)) kappa += (p.sampler ? (double)p.sampler[t] : (double)p.old_logp[t]) - logp_at(p, t);
      kappa = detail::block_sum<kSeqThreads>(kappa, smd);
      kappa /= cnt > 1.0 ? cnt : 1.0;
    }
    SeqPolicy sp;  // §9.4 vespo / geoMean (block-uniform)
    if (uses_seq_type_sums(o) && !dropped) {
      SeqTypeSums ss;
      for (int64_t t = b + threadIdx.x; t < e; t += kSeqThreads)
        if (tok_kept(p, t, keep))
          seq_type_token(o, logp_at(p, t), old_at(p, t), token_adv(o, p.advantages, s, t), p.sampler ? p.sampler + t : nullptr, norm, ss);
      ss.a = detail::block_sum<kSeqThreads>(ss.a, smd);
      ss.b = detail::block_sum<kSeqThreads>(ss.b, smd);
      ss.c = detail::block_sum<kSeqThreads>(ss.c, smd);
      sp = seq_policy(o, ss, cnt, (double)p.S, p.sampler != nullptr, w_seq, norm);
    }
    LossSums acc;
    double g_seq = 0.0;
    for (int64_t t = b + threadIdx.x; t < e; t += kSeqThreads) {
      if (p.kept) p.kept[t] = (!dropped && tok_kept(p, t, keep)) ? 1 : 0;
      if (dropped || !tok_kept(p, t, keep)) {
        p.dlogp[t] = 0.0f;
        if (p.dentropy) p.dentropy[t] = 0.0f;
        if (p.token_loss) p.token_loss[t] = 0.0f;
        continue;
      }
      const double lp = logp_at(p, t);
      const double old = old_at(p, t);
      const double adv = token_adv(o, p.advantages, s, t);
      const float* q = p.sampler ? p.sampler + t : nullptr;
      const double pw = token_policy_weight(o, old, q, adv, w_seq, norm, kappa, acc);
      const bool chosen = p.sel && (p.sel[t] & kSelChosen);
      const TokenInputs x{lp, old, adv, p.ref_logp ? p.ref_logp + t : nullptr, p.entropy ? p.entropy + t : nullptr, pw, q, ent_w, chosen, &sp};
      token_step(o, x, w, seq_ratio, p.use_q, threshold, acc, g_seq, p.dlogp + t, p.dentropy ? p.dentropy + t : nullptr,
                 p.token_loss ? p.token_loss + t : nullptr);
    }
    acc = detail::block_reduce<kSeqThreads>(acc, detail::LossSumsOp{}, LossSums{}, sml);
    acc.op_seq = acc.op_tok > 0.0 ? 1.0 : 0.0;
    acc.seqs = cnt > 0.0 ? 1.0 : 0.0;
    if (o.is_level == kIsSequence && cnt > 0.0) {  // block-uniform
      const double g = detail::block_sum<kSeqThreads>(g_seq, smd);
      const double extra = w * g * seq_ratio.dvalue / cnt;
      // The same threads wrote these dlogp above: no barrier is needed between the two loops.
      for (int64_t t = b + threadIdx.x; t < e; t += kSeqThreads)
        if (tok_kept(p, t, keep)) p.dlogp[t] = (float)((double)p.dlogp[t] + extra);
    }
    acc.loss += sp.geo_loss;  // geoMean's sequence term, once (0 otherwise)
    if (threadIdx.x == 0) p.part[s] = acc;
  }
}

// 4. The sums of all sequences, in a fixed order.
__global__ void __launch_bounds__(kOneBlockThreads) final_kernel(const LossParams p) {
  GK_SHARED_ALIGNED(16, raw, unsigned char[sizeof(ReduceSmem<LossSums>)]);
  ReduceSmem<LossSums>& sml = smem_as<LossSums>(raw);
  LossSums acc;
  const detail::LossSumsOp add;
  for (int64_t s = threadIdx.x; s < p.S; s += kOneBlockThreads) acc = add(acc, p.part[s]);
  acc = detail::block_reduce<kOneBlockThreads>(acc, add, LossSums{}, sml);
  if (threadIdx.x == 0) p.result->total = acc;
}

// Flags and results in one allocation, copied back with one memcpy.
struct StepBlock {
  DeviceFlags flags;
  LossResult result;
};

}  // namespace

namespace detail {

void fill_metrics(const LossOptions& o, const LossResult& r, LossMetrics* out) {
  const LossSums& tot = r.total;
  const double denom = tot.tokens > 1.0 ? tot.tokens : 1.0;
  out->loss = tot.loss;
  out->tokens = tot.tokens;
  out->kl_mean = tot.kl / denom;
  out->ratio_mean = tot.ratio / denom;
  out->clip_low = tot.clip_low / denom;
  out->clip_high = tot.clip_high / denom;
  out->clip = tot.clip_any / denom;
  out->entropy_mean = tot.entropy / denom;
  out->entropy_threshold = r.threshold;
  out->non_finite = tot.non_finite;
  fill_correction_metrics(o, r.corr, tot, out);
}

Status check_loss_args(const LossStepArgs& a) {
  if (a.s < 1 || a.n < 0) {
    char buf[120];
    snprintf(buf, sizeof(buf), "seqOffsets must start at 0 and end at N=%lld", (long long)a.n);
    return make_status(kShape, buf);
  }
  const LossOptions& o = a.opt;
  if ((o.top_entropy_quantile < 1.0 || o.entropy_coef != 0.0) && !a.entropy)
    return make_status(kInvalid, "entropy is required for entropyCoef != 0 or topEntropyQuantile < 1");
  if (o.beta != 0.0 && !a.ref_logp) return make_status(kInvalid, "refLogp is required when beta != 0");
  if (!a.sampler_logp && (o.rc_level != kRcOff || o.rs_count > 0))
    return make_status(kInvalid, "samplerLogp is required for rolloutCorrection and rolloutRejection");
  if (!loss_options_ok(o)) return make_status(kInvalid, "loss options must be finite, with normalizer and maxCompletionLength 0 or positive with a finite reciprocal");
  if (const char* e = loss_type_error(o)) return make_status(kInvalid, e);
  if (!a.seq_offsets || !a.advantages || (a.n > 0 && (!a.logp || !a.dlogp)))
    return make_status(kInvalid, "logp, advantages, seqOffsets and the dlogp output are required");
  return Status{};
}

Status enqueue_loss_step(const LossStepArgs& a, DeviceFlags* flags, LossResult* result, cudaStream_t s) {
  GK_RETURN_IF_ERROR(check_loss_args(a));
  const int64_t S = a.s, n = a.n;
  const bool use_q = a.opt.top_entropy_quantile < 1.0;
  const size_t count_b = align256(sizeof(double) * (size_t)S);
  const size_t part_b = align256(sizeof(LossSums) * (size_t)S);
  const size_t valid_b = use_q ? align256((size_t)n) : 0;
  const size_t corr_b = a.sampler_logp ? align256(sizeof(CorrSums) * (size_t)S) : 0;
  const bool cov = uses_cov_selection(a.opt);
  const size_t sel_b = cov ? align256((size_t)n) : 0, adv_b = cov ? align256(sizeof(float) * (size_t)n) : 0;
  const size_t keys_b = cov ? align256(sizeof(uint64_t) * (size_t)n) : 0;
  DeviceScratch scratch;
  GK_CUDA_CHECK(scratch.alloc(2 * count_b + part_b + valid_b + corr_b + sel_b + adv_b + keys_b, s));

  LossParams p;
  p.logp = a.logp;
  p.logp64 = a.logp64;
  p.old_logp = a.old_logp;
  p.ref_logp = a.ref_logp;
  p.entropy = a.entropy;
  p.advantages = a.advantages;
  p.sampler = a.sampler_logp;
  p.off = a.seq_offsets;
  p.S = S;
  p.n = n;
  p.mask = a.mask;
  p.truncated = a.truncated;
  p.o = a.opt;
  p.use_q = use_q;
  p.dlogp = a.dlogp;
  p.dentropy = a.dentropy;
  p.token_loss = a.token_loss;
  p.kept = a.kept;
  p.count = scratch.as<double>(0);
  p.length = scratch.as<double>(count_b);
  p.part = scratch.as<LossSums>(2 * count_b);
  p.valid = use_q ? scratch.as<uint8_t>(2 * count_b + part_b) : nullptr;
  p.corr = a.sampler_logp ? scratch.as<CorrSums>(2 * count_b + part_b + valid_b) : nullptr;
  const size_t sel_at = 2 * count_b + part_b + valid_b + corr_b;
  p.sel = cov ? scratch.as<uint8_t>(sel_at) : nullptr;
  p.tok_adv = cov ? scratch.as<float>(sel_at + sel_b) : nullptr;
  p.keys = cov ? scratch.as<uint64_t>(sel_at + sel_b + adv_b) : nullptr;
  p.result = result;
  p.flags = flags;
  if (use_q && n > 0) GK_CUDA_CHECK(cudaMemsetAsync(p.valid, 0, (size_t)n, s));
  if (cov && n > 0) GK_CUDA_CHECK(cudaMemsetAsync(p.sel, 0, (size_t)n, s));

  const unsigned seq_grid = grid_for(S, 8);
  GK_LAUNCH(seq_grid, kSeqThreads, 0, s, count_kernel)(p);
  GK_CUDA_CHECK_LAUNCH();
  GK_LAUNCH(1, kOneBlockThreads, 0, s, global_kernel)(p);
  GK_CUDA_CHECK_LAUNCH();
  if (cov) {
    GK_LAUNCH(1, kOneBlockThreads, 0, s, cov_kernel)(p);
    GK_CUDA_CHECK_LAUNCH();
  }
  GK_LAUNCH(seq_grid, kSeqThreads, 0, s, seq_kernel)(p);
  GK_CUDA_CHECK_LAUNCH();
  GK_LAUNCH(1, kOneBlockThreads, 0, s, final_kernel)(p);
  GK_CUDA_CHECK_LAUNCH();
  return Status{};  // scratch is freed in stream order, after the kernels
}

}  // namespace detail

Status grpo_loss_step(LossStepArgs& a, cudaStream_t stream) {
  GK_RETURN_IF_ERROR(detail::check_loss_args(a));
  detail::DeviceScratch blk;
  GK_CUDA_CHECK(blk.alloc(sizeof(StepBlock), stream));
  StepBlock* d = blk.as<StepBlock>();
  GK_CUDA_CHECK(cudaMemsetAsync(&d->flags, 0xFF, sizeof(DeviceFlags), stream));
  GK_RETURN_IF_ERROR(detail::enqueue_loss_step(a, &d->flags, &d->result, stream));
  StepBlock h;
  GK_CUDA_CHECK(detail::finish_op(&h, d, sizeof(h), stream));
  const Status st = detail::flags_to_status(h.flags, a.n);
  if (!st.ok()) return st;
  detail::fill_metrics(a.opt, h.result, &a.out);
  return st;
}

}  // namespace cuda
}  // namespace gk
