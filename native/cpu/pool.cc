#include "pool.h"

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace gk {
namespace cpu {
namespace {

class Pool {
 public:
  explicit Pool(int threads) : threads_(threads) {
    for (int i = 1; i < threads_; ++i) workers_.emplace_back([this, i] { Loop(i); });
  }
  ~Pool() {
    {
      std::lock_guard<std::mutex> lk(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& w : workers_) w.join();
  }
  int threads() const { return threads_; }

  void Run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    const int64_t chunks = (n + grain - 1) / grain;
    if (threads_ == 1 || chunks == 1) {
      fn(0, n, 0);
      return;
    }
    std::lock_guard<std::mutex> serial(run_mu_);
    {
      std::lock_guard<std::mutex> lk(mu_);
      fn_ = &fn;
      n_ = n;
      grain_ = grain;
      next_.store(0);
      error_ = nullptr;
      active_ = threads_ - 1;
      ++generation_;
    }
    cv_.notify_all();
    Work(0);
    std::unique_lock<std::mutex> lk(mu_);
    done_cv_.wait(lk, [this] { return active_ == 0; });
    fn_ = nullptr;
    if (error_) {
      std::exception_ptr e = error_;
      error_ = nullptr;
      std::rethrow_exception(e);
    }
  }

 private:
  // Runs chunks until none is left; an exception (never let out of a pool thread, where it
  // would terminate the process) is kept for Run to rethrow and ends the loop for everyone.
  void Work(int slot) {
    for (;;) {
      const int64_t b = next_.fetch_add(grain_);
      if (b >= n_) break;
      const int64_t e = b + grain_ < n_ ? b + grain_ : n_;
      try {
        (*fn_)(b, e, slot);
      } catch (...) {
        std::lock_guard<std::mutex> lk(err_mu_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_);
        break;
      }
    }
  }
  void Loop(int slot) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu_);
        cv_.wait(lk, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      Work(slot);
      std::lock_guard<std::mutex> lk(mu_);
      if (--active_ == 0) done_cv_.notify_one();
    }
  }

  const int threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_, run_mu_, err_mu_;
  std::exception_ptr error_;  // the first exception of the current Run (under err_mu_ / mu_)
  std::condition_variable cv_, done_cv_;
  bool stop_ = false;
  uint64_t generation_ = 0;
  int active_ = 0;
  const std::function<void(int64_t, int64_t, int)>* fn_ = nullptr;
  int64_t n_ = 0, grain_ = 1;
  std::atomic<int64_t> next_{0};
};

int DetectThreads() {
  if (const char* env = std::getenv("GK_NUM_THREADS")) {
    const int v = std::atoi(env);
    if (v >= 1 && v <= 1024) return v;
  }
  const unsigned hc = std::thread::hardware_concurrency();
  return hc == 0 ? 1 : (int)hc;
}

Pool& GetPool() {
  // Leaked on purpose: joining threads from a static destructor at process exit can deadlock.
  static Pool* pool = new Pool(DetectThreads());
  return *pool;
}

size_t DetectScratchCap() {
  if (const char* env = std::getenv("GK_MAX_SCRATCH_BYTES")) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(env, &end, 10);
    if (end && end != env && *end == '\0' && v > 0) return (size_t)v;
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
  if (pages > 0 && page > 0) return (size_t)pages * (size_t)page;
  return (size_t)1 << 40;
}

std::atomic<size_t> g_scratch_in_use{0};

}  // namespace

ScratchOom::ScratchOom(size_t bytes, size_t in_use, size_t cap) {
  snprintf(msg, sizeof(msg), "%zu bytes of scratch requested with %zu in use, over the cap of %zu (GK_MAX_SCRATCH_BYTES)",
           bytes, in_use, cap);
}

size_t scratch_cap() {
  static const size_t cap = DetectScratchCap();
  return cap;
}

void* scratch_alloc(size_t bytes) {
  if (bytes == 0) bytes = 1;
  const size_t cap = scratch_cap();
  size_t cur = g_scratch_in_use.load();
  do {
    if (bytes > cap || cur > cap - bytes) throw ScratchOom(bytes, cur, cap);
  } while (!g_scratch_in_use.compare_exchange_weak(cur, cur + bytes));
  void* p = std::malloc(bytes);
  if (!p) {
    g_scratch_in_use.fetch_sub(bytes);
    throw std::bad_alloc();
  }
  return p;
}

void scratch_free(void* p, size_t bytes) {
  if (!p) return;
  std::free(p);
  g_scratch_in_use.fetch_sub(bytes == 0 ? 1 : bytes);
}

int num_threads() { return GetPool().threads(); }

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t, int)>& fn) {
  GetPool().Run(n, grain, fn);
}

}  // namespace cpu
}  // namespace gk

namespace gk {
namespace cpu {

void huge_page_hint(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Only the 2 MiB-aligned interior, and only for outputs large enough to matter.
  constexpr uintptr_t kHuge = (uintptr_t)2 << 20;
  if (bytes < 4 * kHuge) return;
  const uintptr_t b = ((uintptr_t)p + kHuge - 1) & ~(kHuge - 1), e = ((uintptr_t)p + bytes) & ~(kHuge - 1);
  if (e > b) madvise((void*)b, e - b, MADV_HUGEPAGE);  // advice only: a failure changes nothing
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace cpu
}  // namespace gk
