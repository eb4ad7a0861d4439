// The op signatures every backend implements, on plain views (pointer, dtype, shape).
// native/cpu/*.cc implement them in gk::cpu; native/cuda/* in gk::cuda (with a stream).
#pragma once
#include "core/common.h"
#include "core/advantages.h"
#include "core/loss.h"
#include "core/preference.h"
#include "core/distill.h"

#include <functional>

struct CUstream_st;  // cudaStream_t, without the CUDA headers

namespace gk {

// Logits [n, v] of one dtype with one target id per row (int32 or int64), read as u = z / T.
struct LogitsView {
  const void* logits = nullptr;
  int32_t dtype = kF32;
  int64_t n = 0, v = 0;
  const void* targets = nullptr;
  int32_t target_dtype = kI64;
  float temperature = 1.0f;
  int64_t ignore_index = -100;
};

// Spec §1 forward. entropy and lse may be null.
struct LogProbArgs {
  LogitsView in;
  bool check_finite = false;
  float* logp = nullptr;
  float* entropy = nullptr;
  float* lse = nullptr;
  double* logp64 = nullptr;  // optional: the log-probs before rounding (the fused step uses them)
  float* sum_p2 = nullptr;   // optional: Σ_j p², spec §9.6
};

// Spec §1 backward. gl/gh may be null (zero). lse/entropy may be null: then they are
// recomputed from the logits. grad has the logits' dtype and may alias the logits.
struct LogProbBackwardArgs {
  LogitsView in;
  const float* gl = nullptr;
  const float* gh = nullptr;
  const float* lse = nullptr;
  const float* entropy = nullptr;
  void* grad = nullptr;
};

// Spec §2. rewards: k reward functions x n samples, row-major, float64, NaN = not applicable.
struct AdvantageArgs {
  const double* rewards = nullptr;
  int64_t k = 1, n = 0, group = 1;
  const double* weights = nullptr;  // k, or null for all ones
  const double* lengths = nullptr;  // n completion lengths (opo; reinforcePlusPlus*), or null
  AdvOptions opt{kScaleGroup, kEstGrpo, 1e-4, kAggSumThenNormalize};
  float* advantages = nullptr;      // n
  double* combined = nullptr;       // n
  double* group_mean = nullptr;     // n / group
  double* group_std = nullptr;      // n / group
  // Spec §9.7: the batch statistics (count, mean, m2) of scale 'batch' / the whitened estimators,
  // given from outside (null: computed), and this batch's own, returned (null: not wanted).
  const double* batch_stats = nullptr;  // 3
  double* partials = nullptr;           // 3, out
  // gpg's batch counts (valid, non-zero rewards): given from outside (null: counted), and this
  // batch's own, returned (null: not wanted).
  const double* gpg_counts = nullptr;   // 2
  double* gpg_counts_out = nullptr;     // 2, out
  int64_t zero_variance_groups = 0; // out
};

struct LossMetrics {
  double loss = 0, tokens = 0, kl_mean = 0, ratio_mean = 0;
  double clip_low = 0, clip_high = 0, clip = 0, entropy_mean = 0;
  double entropy_threshold = 0;
  double non_finite = 0;  // valid tokens whose log-prob or entropy is NaN or ±inf (nonFiniteRows)
  // Spec §9.1 (when sampler_logp is given) and §9.2.
  double is_truncated = 0, is_masked = 0, rejected = 0, rejected_seq = 0, is_weight_mean = 0, is_weight_max = 0;
  double sampler_kl = 0, seq_lr_min = 0, seq_lr_max = 0, off_policy_masked = 0;
  double phi_mean = 0;  // §9.4 vespo
};

// The §9.1/§9.2 metrics from the batch's correction sums and loss sums (both backends).
inline void fill_correction_metrics(const LossOptions& o, const CorrSums& c, const LossSums& l, LossMetrics* out) {
  const double units = o.rc_level == kRcToken ? c.n0 : c.seqs;  // what a weight is per
  const double du = units > 1.0 ? units : 1.0;
  out->is_truncated = c.trunc / du;
  out->is_masked = c.masked / du;
  out->rejected = c.rejected / (c.n0 > 1.0 ? c.n0 : 1.0);
  out->rejected_seq = c.rejected_seq / (c.seqs > 1.0 ? c.seqs : 1.0);
  out->is_weight_mean = c.w_count > 0.0 ? c.w_sum / c.w_count : 0.0;
  out->is_weight_max = c.w_count > 0.0 ? c.w_max : 0.0;
  out->sampler_kl = c.ksum3 / (c.n0 > 1.0 ? c.n0 : 1.0);
  out->seq_lr_min = c.seqs > 0.0 ? c.lr_min : 0.0;
  out->seq_lr_max = c.seqs > 0.0 ? c.lr_max : 0.0;
  out->off_policy_masked = l.op_seq / (l.seqs > 1.0 ? l.seqs : 1.0);
  out->phi_mean = l.phi / (l.tokens > 1.0 ? l.tokens : 1.0);
}

// Spec §3-5 on per-token log-probs. Sequences are rows seq_offsets[s] .. seq_offsets[s+1]-1.
struct LossStepArgs {
  const float* logp = nullptr;
  const double* logp64 = nullptr;    // optional, preferred over logp (unrounded log-probs)
  const float* old_logp = nullptr;   // null: on-policy
  const float* ref_logp = nullptr;   // null: no KL
  const float* entropy = nullptr;    // needed for entropyCoef and topEntropyQuantile
  const float* advantages = nullptr; // one per sequence (one per token with opt.adv_per_token)
  const float* sampler_logp = nullptr; // §9.1: per token, or null
  const int64_t* seq_offsets = nullptr;
  int64_t s = 0, n = 0;
  const uint8_t* mask = nullptr;      // per token, null: all ones
  const uint8_t* truncated = nullptr; // per sequence, null: none
  LossOptions opt{};
  float* dlogp = nullptr;             // n
  float* dentropy = nullptr;          // n, may be null when entropy_coef == 0
  float* token_loss = nullptr;        // n, optional
  uint8_t* kept = nullptr;            // n, optional (§9.7): 1 where the token is in the loss (after rejection)
  LossMetrics out;
};

// Spec §6: the fused loss from logits. Forward stats, the loss step, then the gradient.
struct FusedLossArgs {
  LogProbArgs fwd;                    // logp/entropy/lse outputs are required here (O(N))
  LossStepArgs step;                  // logp/entropy filled from fwd; dlogp/dentropy scratch
  void* grad = nullptr;               // logits' dtype, may alias the logits
};

// Bradley–Terry reward-model loss over n preference pairs (float32 scores).
struct PreferenceArgs {
  const float* chosen = nullptr;
  const float* rejected = nullptr;
  const float* margins = nullptr;  // per pair, or null: `margin` for every pair
  double margin = 0.0;
  int64_t n = 0;
  bool sum = false;                // reduction: sum (true) or mean
  float* grad_chosen = nullptr;
  float* grad_rejected = nullptr;
  double loss = 0.0, accuracy = 0.0, mean_margin = 0.0;  // out
};

// Spec §8: sampling with log-probs. Per row: softmax(z / T) filtered by topK, then topP (on the
// renormalised top-K distribution), then minP (relative to the top probability); one uniform
// from Philox(seed; row, step) picks a token by inverse CDF over the kept tokens in index order.
struct SampleArgs {
  LogitsView in;                    // targets unused
  bool greedy = false;
  int64_t top_k = 0;                // 0: off
  double top_p = 1.0;               // 1: off
  double min_p = 0.0;               // 0: off
  uint64_t seed = 0, step = 0;
  int64_t row_offset = 0;           // counter of the first row (for sampling a batch in pieces)
  const int64_t* row_ids = nullptr; // per-row counters instead (n), or null
  int32_t* tokens = nullptr;        // n
  float* logp = nullptr;            // n: under the temperature-scaled full distribution
  float* logp_truncated = nullptr;  // n: under the truncated, renormalised one
};

// Spec §7: distillation loss from student and teacher logits [n, v] (dtypes may differ), with
// an optional hard-label term, aggregated like spec §4, and ∂loss/∂student-logits.
struct DistillArgs {
  const void* student = nullptr;
  int32_t student_dtype = kF32;
  const void* teacher = nullptr;
  int32_t teacher_dtype = kF32;
  int64_t n = 0, v = 0;
  const void* targets = nullptr;     // optional (ignoreIndex rows, hard-label term)
  int32_t target_dtype = kI64;
  int64_t ignore_index = -100;
  const uint8_t* mask = nullptr;     // per row, or null
  const int64_t* seq_offsets = nullptr;  // S+1
  int64_t s = 0;
  int32_t divergence = kForwardKl;
  double beta = 0.5;
  float temperature = 1.0f;
  double hard_label_weight = 0.0;
  int32_t aggregation = kTokenMean;
  double normalizer = 0.0, max_completion_length = 0.0;
  void* grad = nullptr;              // student dtype, may alias the student logits; null: no gradient
  float* row_loss = nullptr;         // per row (unweighted), optional
  double loss = 0.0, tokens = 0.0;   // out
};

namespace cpu {
Status distill_loss(DistillArgs& a);
Status sample_tokens(const SampleArgs& a);
Status bradley_terry_loss(PreferenceArgs& a);
Status token_logprobs(const LogProbArgs& a);
Status token_logprobs_backward(const LogProbBackwardArgs& a);
Status group_advantages(AdvantageArgs& a);
Status grpo_loss_step(LossStepArgs& a);
Status grpo_loss_fused(FusedLossArgs& a);
int num_threads();
const char* simd_level();
// The machine's floor for the benchmark: read and copy bandwidth (GB/s; copy counts the bytes
// read and written) over `bytes`-sized buffers, and exp throughput (G elements/s), on the pool.
// Throws std::bad_alloc (ScratchOom) when the buffers do not fit.
struct Floor {
  double read_gbs = 0, copy_gbs = 0, exp_gelems = 0;
  int threads = 0;
};
Floor measure_floor(size_t bytes);
}  // namespace cpu

namespace cuda {
struct DeviceInfo {
  int32_t count = 0;
  int32_t runtime_version = 0;
  int32_t driver_version = 0;
  char error[256] = {0};          // why no device is usable, when count == 0
  char names[8][128] = {{0}};
  int32_t cc_major[8] = {0}, cc_minor[8] = {0};
  int64_t memory[8] = {0};
  bool emulated = false;           // the GK_CUDA=emu build: the CUDA sources run on the CPU emulator
};
bool compiled();                   // false when the addon was built without CUDA
void probe(DeviceInfo* info);

// The ops on the GPU. Every pointer in the args is device memory of the current device; the
// work is enqueued on `stream` (a cudaStream_t) and the call returns after synchronising it,
// with the same Status, outputs and scalars as the gk::cpu function of the same name. Built
// without CUDA, each returns kCuda.
using Stream = CUstream_st*;
Status token_logprobs(const LogProbArgs& a, Stream stream);
Status token_logprobs_backward(const LogProbBackwardArgs& a, Stream stream);
Status group_advantages(AdvantageArgs& a, Stream stream);
Status grpo_loss_step(LossStepArgs& a, Stream stream);
Status grpo_loss_fused(FusedLossArgs& a, Stream stream);
Status distill_loss(DistillArgs& a, Stream stream);
Status sample_tokens(const SampleArgs& a, Stream stream);
Status bradley_terry_loss(PreferenceArgs& a, Stream stream);

// The device runtime (native/cuda/runtime.cu). A Context is created once per device and lives
// as long as the process; the binding runs one job at a time per device, so a context is used
// by one thread at a time. Host copies go through pinned staging and return when done.
struct Context;
struct MemoryInfo {
  int64_t used = 0, peak = 0, reserved = 0;  // the device's stream-ordered pool
  int64_t free = 0, total = 0;               // the whole device (cudaMemGetInfo)
};
Status context(int32_t index, Context** out);
Stream stream_of(Context* c);
Status activate(Context* c);  // makes the context's device current on this thread
Status malloc_async(Context* c, size_t bytes, void** out);  // kOom when the device is full
void free_async(Context* c, void* p);
Status copy_to_device(Context* c, void* dst, const void* host, size_t bytes);
Status copy_to_host(Context* c, void* host, const void* src, size_t bytes);
Status copy_device(Context* c, void* dst, const void* src, size_t bytes);
// Work queued so far on a stream of the caller's (a cudaStream_t; 0 is the legacy default
// stream): record_external (on the JS thread, at call time) marks it, wait_event (in the job)
// makes our stream wait for it and destroys the event; destroy_event drops an unused one.
Status record_external(Context* c, uint64_t external_stream, void** event);
Status wait_event(Context* c, void* event);
void destroy_event(Context* c, void* event);
Status synchronize(Context* c);
Status memory_info(Context* c, MemoryInfo* m);
Status reset_peak(Context* c);
// GPU time of the op run between the two calls (cudaEvents; see detail::finish_op).
Status timer_start(Context* c);
Status timer_stop(Context* c, double* ms);

// The device's call-ordered queue. Every job of a device takes a ticket on the JS thread, at
// call time, and runs strictly in ticket order on its worker thread, so device work happens in
// call order and the context is used by one thread at a time.
//  - enqueue: takes the next ticket and calls submit(ticket) (which must hand the job to the
//    worker pool), both under one lock, so ticket order is the pool's queue order and the job
//    holding the turn is never stuck behind jobs waiting for it. If submit throws, the ticket
//    is abandoned (its turn is skipped) and the exception propagates.
//  - run_turn (in the job): waits for the ticket's turn, makes the device current, runs the
//    deferred actions all of whose earlier jobs have run, then work(); the turn passes on when
//    it returns (or throws).
//  - after_issued: runs fn once every job issued so far has run: now (on this thread) when
//    none is queued or running, else on the device thread at the end of the last such turn.
//    Frees of released memory go through it.
//  - run_timed (inside a turn): work() between the op timer's start and stop; last_op_ms is
//    the GPU time of the last timed job that succeeded.
uint64_t enqueue(Context* c, const std::function<void(uint64_t ticket)>& submit);
Status run_turn(Context* c, uint64_t ticket, const std::function<Status()>& work);
void after_issued(Context* c, std::function<void()> fn);
Status run_timed(Context* c, const std::function<Status()>& work);
double last_op_ms(Context* c);
}  // namespace cuda

}  // namespace gk
