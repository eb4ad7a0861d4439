// Vectorised per-row loops of the CPU backend (spec §1), shared by the log-prob, backward and
// fused ops. Each works on a float32 row u = z / T held in cache-resident scratch.
#pragma once
#include <atomic>
#include <cstdint>
#include <vector>

#include "../core/softmax.h"

namespace gk {
namespace cpu {

// u[j] = z[j] * inv_t for a row of the given dtype.
void load_row(const void* z, int32_t dtype, int64_t v, float inv_t, float* u);
// Softmax statistics of a row; entropy terms only when with_entropy.
RowStats row_stats(const float* u, int64_t v, bool with_entropy);
// grad[j] = grad_elem(u[j], ...) for the whole row, written in dtype (may alias the input row).
void store_row_grad(const float* u, int64_t v, int64_t target, float lse, float entropy, float gl, float gh,
                    float inv_t, int32_t dtype, void* grad);
void zero_row(int32_t dtype, int64_t v, void* grad);

inline int64_t read_target(const void* t, int32_t dtype, int64_t i) {
  return dtype == kI32 ? (int64_t)((const int32_t*)t)[i] : ((const int64_t*)t)[i];
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

// Per-thread float32 scratch rows.
struct Scratch {
  std::vector<std::vector<float>> rows;
  Scratch(int threads, int64_t v) : rows(threads) {
    for (auto& r : rows) r.resize((size_t)(v > 0 ? v : 1));
  }
  float* get(int slot) { return rows[(size_t)slot].data(); }
};

// Rows per work chunk: about 64K elements, at least one row.
inline int64_t row_grain(int64_t v) { return v >= 65536 ? 1 : 65536 / (v > 0 ? v : 1); }

}  // namespace cpu
}  // namespace gk
