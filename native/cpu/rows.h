// Vectorised per-row loops of the CPU backend (spec §1), shared by the log-prob, backward and
// fused ops. Each works on a float32 row u = z / T held in cache-resident scratch.
#pragma once
#include <atomic>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/common.h"
#include "../core/dtype.h"
#include "../core/softmax.h"
#include "pool.h"
#include "simd.h"

namespace gk {
namespace cpu {

// Rows are read in blocks of kBlock elements (one block of float32 lanes sits in L1 while its
// maximum and then its exponentials are taken) and cut into segments of kSeg elements. A row's
// statistics are the ordered merge of its segments' whatever the thread count, so a row split
// across threads (few rows, huge V) gives the same bits as a row read by one thread, and a row's
// results never depend on the batch it is in.
constexpr int64_t kBlock = 1024;
constexpr int64_t kSeg = 32 * kBlock;
inline int64_t segments(int64_t v) { return v <= 0 ? 1 : (v + kSeg - 1) / kSeg; }

// Online softmax statistics of a part of a row: m its maximum (the running one), s = Σ exp(u - m)
// and t = Σ exp(u - m)(u - m) in float64 (float32 lanes within a block), bad when it holds a NaN
// or +inf.
// s2 = Σ exp(2(u - m)) (spec §9.6: Σp² = s2 / s²) when asked for.
struct SegStats {
  float m = -INFINITY;
  double s = 0.0, t = 0.0, s2 = 0.0;
  bool bad = false;
};
// Statistics of elements [b, e) of a row of the given dtype, u = z * inv_t (the entropy sum t
// only when with_entropy, s2 only when with_p2). Reads the row once.
SegStats seg_stats(const void* row, int32_t dtype, int64_t b, int64_t e, float inv_t, bool with_entropy, bool with_p2 = false);
// The statistics of two adjacent parts, a before b.
SegStats merge_seg(const SegStats& a, const SegStats& b);
// Segment statistics to RowStats (NaN s and t for a row with a NaN/+inf or no finite logit).
RowStats finish_stats(const SegStats& st);
// The one order in which a row's segments are merged (what makes a row's bits independent of
// how its segments were computed: serially or by several threads): left to right, stopping at
// the first bad part. seg(k) gives segment k of nseg >= 1.
template <class F>
SegStats merge_segments(int64_t nseg, F seg) {
  SegStats acc = seg(0);
  for (int64_t k = 1; k < nseg && !acc.bad; ++k) acc = merge_seg(acc, seg(k));
  return acc;
}
// The whole row: its segments in order, merged left to right.
SegStats row_seg_stats(const void* row, int32_t dtype, int64_t v, float inv_t, bool with_entropy, bool with_p2);
RowStats row_stats(const void* row, int32_t dtype, int64_t v, float inv_t, bool with_entropy);
// Σp² of a row from its statistics (NaN for a bad row).
float sum_p2(const SegStats& st);
// One element, scaled exactly as the row loops scale it.
float load_elem(const void* row, int32_t dtype, int64_t j, float inv_t);

// u[j] = z[j] * inv_t for a row of the given dtype (into float32 scratch).
void load_row(const void* z, int32_t dtype, int64_t v, float inv_t, float* u);
// grad[j] = grad_elem(u_j, ...) for j in [b, e) of the row z (u = z * inv_t), written in dtype.
// grad may alias z: the target (when in [b, e)) is read before and written after the rest.
void store_grad(const void* z, int32_t dtype, int64_t b, int64_t e, int64_t target, float lse, float entropy,
                float gl, float gh, float inv_t, void* grad);
void zero_row(int32_t dtype, int64_t v, void* grad);

// One read of a target id (the caller's array may change under the op: each id is loaded
// once, range-checked and then used from the local copy).
inline int64_t read_target(const void* t, int32_t dtype, int64_t i) {
  return dtype == kI32 ? (int64_t)__atomic_load_n((const int32_t*)t + i, __ATOMIC_RELAXED)
                       : __atomic_load_n((const int64_t*)t + i, __ATOMIC_RELAXED);
}
inline size_t dtype_size(int32_t dtype) {
  switch (dtype) {
    case kF16: case kBF16: return 2;
    case kF64: case kI64: return 8;
    case kU8: return 1;
    default: return 4;
  }
}
inline const void* row_ptr(const void* base, int32_t dtype, int64_t row, int64_t v) {
  return (const char*)base + (size_t)row * (size_t)v * dtype_size(dtype);
}
inline void* row_ptr(void* base, int32_t dtype, int64_t row, int64_t v) {
  return (char*)base + (size_t)row * (size_t)v * dtype_size(dtype);
}

// The smallest row index reported by any thread (for the error naming the first bad row).
struct FirstRow {
  std::atomic<int64_t> row{INT64_MAX};
  void report(int64_t r) {
    int64_t cur = row.load();
    while (r < cur && !row.compare_exchange_weak(cur, r)) {
    }
  }
  bool any() const { return row.load() != INT64_MAX; }
};

// A status naming the first bad row: "<what> at row R".
inline void set_row_error(Status* st, int32_t code, int64_t row, const char* what) {
  st->code = code;
  st->row = row;
  snprintf(st->message, sizeof(st->message), "%s at row %lld", what, (long long)row);
}

// Per-thread scratch rows of `width` elements of T, allocated by a slot the first time it asks
// (so a call with no rows, or one chunk, allocates nothing, or one row) and counted against
// the scratch cap (scratch_alloc throws ScratchOom, a std::bad_alloc, past it).
template <class T>
class ScratchRows {
 public:
  ScratchRows(int threads, int64_t width) : rows_((size_t)threads, nullptr), bytes_((size_t)(width > 0 ? width : 1) * sizeof(T)) {}
  ~ScratchRows() {
    for (T* r : rows_) scratch_free(r, bytes_);
  }
  ScratchRows(const ScratchRows&) = delete;
  ScratchRows& operator=(const ScratchRows&) = delete;
  T* get(int slot) {
    T*& r = rows_[(size_t)slot];
    if (!r) r = (T*)scratch_alloc(bytes_);
    return r;
  }

 private:
  std::vector<T*> rows_;
  size_t bytes_;
};
using Scratch = ScratchRows<float>;

// The S+1 sequence offsets, copied out of the caller's array (which JS may change while the op
// runs) and checked before any row is indexed with them: off[0] = 0, off[S] = n, every entry
// in [0, n] and none below the one before.
inline Status copy_offsets(const int64_t* off, int64_t S, int64_t n, std::vector<int64_t>* out) {
  Status st;
  if (S < 1 || !off) {
    st.code = kShape;
    snprintf(st.message, sizeof(st.message), "at least one sequence (seqOffsets of S+1 >= 2 entries) is required");
    return st;
  }
  out->resize((size_t)S + 1);
  for (int64_t s = 0; s <= S; ++s) (*out)[(size_t)s] = __atomic_load_n(off + s, __ATOMIC_RELAXED);
  const std::vector<int64_t>& o = *out;
  if (o[0] != 0 || o[(size_t)S] != n) {
    st.code = kShape;
    snprintf(st.message, sizeof(st.message), "seqOffsets must start at 0 and end at N=%lld", (long long)n);
    return st;
  }
  for (int64_t s = 0; s < S; ++s)
    if (o[(size_t)s + 1] < o[(size_t)s] || o[(size_t)s + 1] > n) {
      st.code = kShape;
      snprintf(st.message, sizeof(st.message), "seqOffsets must be non-decreasing within [0, N=%lld] (at sequence %lld)",
               (long long)n, (long long)s);
      return st;
    }
  return st;
}

// Block [b, e) of a row as float32 u = z * inv_t: the row itself (float32, inv_t = 1) or buf.
template <int W>
GK_SIMD_INLINE const float* block_of(const void* row, int32_t dtype, int64_t b, int64_t e, float inv_t, float* buf) {
  typedef simd::Vec<W> V;
  typedef typename V::F F;
  const int64_t n = e - b;
  if (dtype == kF32) {
    const float* z = (const float*)row + b;
    if (inv_t == 1.0f) return z;
    int64_t j = 0;
    for (; j + W <= n; j += W) simd::store(buf + j, simd::load<F>(z + j) * inv_t);
    for (; j < n; ++j) buf[j] = z[j] * inv_t;
  } else if (dtype == kBF16) {
    const uint16_t* z = (const uint16_t*)row + b;
    int64_t j = 0;
    for (; j + W <= n; j += W) simd::store(buf + j, simd::load_bf16<V>(z + j) * inv_t);
    for (; j < n; ++j) buf[j] = bf16_to_f32(z[j]) * inv_t;
  } else {
    const uint16_t* z = (const uint16_t*)row + b;
    int64_t j = 0;
    for (; j + W <= n; j += W) simd::store(buf + j, simd::load_f16<V>(z + j) * inv_t);
    for (; j < n; ++j) buf[j] = f16_to_f32(z[j]) * inv_t;
  }
  return buf;
}

// Rows per work chunk: about 64K elements, at least one row.
inline int64_t row_grain(int64_t v) { return v >= 65536 ? 1 : 65536 / (v > 0 ? v : 1); }

}  // namespace cpu
}  // namespace gk
