// The device runtime under the binding: one context per GPU (a non-blocking stream, the
// device's stream-ordered memory pool kept warm, pinned staging buffers for host copies, op
// timing) and its call-ordered queue (one job at a time, in call order, so a context is only
// ever used by one thread at a time; frees deferred until the jobs issued before them ran).
#include <cuda_runtime.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

#include "../backend.h"
#include "common.cuh"

namespace gk {
namespace cuda {

struct Context {
  int index = 0;
  cudaStream_t stream = nullptr;
  cudaMemPool_t pool = nullptr;
  // Two pinned chunks, alternated so that the host copy of one chunk overlaps the DMA of the other.
  static constexpr size_t kChunk = size_t(8) << 20;
  void* pinned[2] = {nullptr, nullptr};
  cudaEvent_t chunk_done[2] = {nullptr, nullptr};
  cudaEvent_t t0 = nullptr, t1 = nullptr;

  // The call-ordered queue (see enqueue / run_turn in backend.h).
  std::mutex m;
  std::condition_variable cv;
  uint64_t next = 0;             // tickets issued (under m)
  uint64_t serving = 0;          // the ticket whose turn it is (under m)
  std::set<uint64_t> abandoned;  // tickets whose job could not be queued (under m)
  // (tickets issued when deferred, action), under m
  std::vector<std::pair<uint64_t, std::function<void()>>> deferred;
  std::mutex submit;             // taking a ticket and queueing its job happen under it together
  std::atomic<double> last_ms{0.0};

  ~Context() {
    // Only a context whose create() failed partway is destroyed (the others live as long as the
    // process): release what it got.
    for (cudaEvent_t e : {chunk_done[0], chunk_done[1], t0, t1})
      if (e) cudaEventDestroy(e);
    if (stream) cudaStreamDestroy(stream);
    cudaGetLastError();
  }
};

namespace {

constexpr int kMaxDevices = 8;
std::mutex g_mutex;

// Makes `index` current for a scope and restores the caller's device after (for calls made on
// the JS thread, which other CUDA code in the process may share).
class DeviceGuard {
 public:
  explicit DeviceGuard(int index) {
    if (cudaGetDevice(&prev_) != cudaSuccess) prev_ = -1;
    // A failure here shows in the call that follows; it must not stay as this thread's last
    // error for a later, unrelated launch check to report.
    if (cudaSetDevice(index) != cudaSuccess) cudaGetLastError();
  }
  ~DeviceGuard() {
    if (prev_ >= 0 && cudaSetDevice(prev_) != cudaSuccess) cudaGetLastError();
  }

 private:
  int prev_ = -1;
};
Context* g_contexts[kMaxDevices] = {nullptr};

Status create(int index, Context** out) {
  int count = 0;
  GK_CUDA_CHECK(cudaGetDeviceCount(&count));
  if (index < 0 || index >= count || index >= kMaxDevices) {
    char buf[120];
    snprintf(buf, sizeof(buf), "CUDA device index %d is out of range (%d device(s) found)", index, count);
    return detail::make_status(kInvalid, buf);
  }
  GK_CUDA_CHECK(cudaSetDevice(index));
  int pools = 0;
  GK_CUDA_CHECK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, index));
  if (!pools) return detail::make_status(kCuda, "this GPU or driver does not support stream-ordered memory pools");
  // Owned until complete: a failure partway destroys what was created so far.
  std::unique_ptr<Context> c(new Context());
  c->index = index;
  GK_CUDA_CHECK(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
  GK_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&c->pool, index));
  // Keep freed blocks in the pool (a training loop then never goes back to the driver).
  uint64_t keep = ~0ull;
  GK_CUDA_CHECK(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrReleaseThreshold, &keep));
  for (int i = 0; i < 2; ++i) GK_CUDA_CHECK(cudaEventCreateWithFlags(&c->chunk_done[i], cudaEventDisableTiming));
  GK_CUDA_CHECK(cudaEventCreate(&c->t0));
  GK_CUDA_CHECK(cudaEventCreate(&c->t1));
  *out = c.release();
  return Status{};
}

Status ensure_pinned(Context* c) {
  for (int i = 0; i < 2; ++i)
    if (!c->pinned[i]) GK_CUDA_CHECK(cudaHostAlloc(&c->pinned[i], Context::kChunk, cudaHostAllocDefault));
  return Status{};
}

}  // namespace

Status context(int32_t index, Context** out) {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (index >= 0 && index < kMaxDevices && g_contexts[index]) {
    *out = g_contexts[index];
    return Status{};
  }
  Context* c = nullptr;
  DeviceGuard guard(index >= 0 ? index : 0);
  GK_RETURN_IF_ERROR(create(index, &c));
  g_contexts[index] = c;
  *out = c;
  return Status{};
}

Stream stream_of(Context* c) { return c->stream; }

Status activate(Context* c) {
  GK_CUDA_CHECK(cudaSetDevice(c->index));
  // Jobs run on any libuv thread: drop an error some earlier, ignored call left on this one.
  cudaGetLastError();
  return Status{};
}

Status malloc_async(Context* c, size_t bytes, void** out) {
  *out = nullptr;
  cudaError_t e = cudaMallocAsync(out, bytes > 0 ? bytes : 1, c->stream);
  if (e == cudaErrorMemoryAllocation) {
    // The pool keeps freed blocks: hand them back to the driver and try once more.
    cudaGetLastError();
    cudaStreamSynchronize(c->stream);
    cudaMemPoolTrimTo(c->pool, 0);
    e = cudaMallocAsync(out, bytes > 0 ? bytes : 1, c->stream);
  }
  GK_CUDA_CHECK(e);
  return Status{};
}

void free_async(Context* c, void* p) {
  if (!p) return;
  DeviceGuard guard(c->index);
  cudaFreeAsync(p, c->stream);
  cudaGetLastError();
}

Status record_external(Context* c, uint64_t external_stream, void** event) {
  DeviceGuard guard(c->index);
  cudaEvent_t e;
  *event = nullptr;
  GK_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
  const cudaError_t err = cudaEventRecord(e, (cudaStream_t)(uintptr_t)external_stream);
  if (err != cudaSuccess) {
    cudaEventDestroy(e);
    GK_CUDA_CHECK(err);
  }
  *event = (void*)e;
  return Status{};
}

Status wait_event(Context* c, void* event) {
  if (!event) return Status{};
  const cudaError_t err = cudaStreamWaitEvent(c->stream, (cudaEvent_t)event, 0);
  cudaEventDestroy((cudaEvent_t)event);
  GK_CUDA_CHECK(err);
  return Status{};
}

void destroy_event(Context* c, void* event) {
  if (!event) return;
  DeviceGuard guard(c->index);
  cudaEventDestroy((cudaEvent_t)event);
  cudaGetLastError();
}

namespace {
Status copy_to_device_impl(Context* c, void* dst, const void* src, size_t bytes);
Status copy_to_host_impl(Context* c, void* dst, const void* src, size_t bytes);
}  // namespace

// On failure the stream is drained first, so no DMA still reads or writes a pinned chunk the
// next copy reuses.
Status copy_to_device(Context* c, void* dst, const void* src, size_t bytes) {
  const Status st = copy_to_device_impl(c, dst, src, bytes);
  if (!st.ok()) cudaStreamSynchronize(c->stream);
  return st;
}

Status copy_to_host(Context* c, void* dst, const void* src, size_t bytes) {
  const Status st = copy_to_host_impl(c, dst, src, bytes);
  if (!st.ok()) cudaStreamSynchronize(c->stream);
  return st;
}

namespace {
Status copy_to_device_impl(Context* c, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status{};
  GK_RETURN_IF_ERROR(ensure_pinned(c));
  bool used[2] = {false, false};
  for (size_t off = 0, k = 0; off < bytes; off += Context::kChunk, ++k) {
    const int b = (int)(k & 1);
    const size_t len = bytes - off < Context::kChunk ? bytes - off : Context::kChunk;
    if (used[b]) GK_CUDA_CHECK(cudaEventSynchronize(c->chunk_done[b]));  // its last DMA is done
    memcpy(c->pinned[b], (const char*)src + off, len);
    GK_CUDA_CHECK(cudaMemcpyAsync((char*)dst + off, c->pinned[b], len, cudaMemcpyHostToDevice, c->stream));
    GK_CUDA_CHECK(cudaEventRecord(c->chunk_done[b], c->stream));
    used[b] = true;
  }
  GK_CUDA_CHECK(cudaStreamSynchronize(c->stream));
  return Status{};
}

Status copy_to_host_impl(Context* c, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status{};
  GK_RETURN_IF_ERROR(ensure_pinned(c));
  // Chunk k+1's DMA runs while chunk k is copied out of its pinned buffer.
  const size_t chunks = (bytes + Context::kChunk - 1) / Context::kChunk;
  auto len_of = [&](size_t k) {
    const size_t off = k * Context::kChunk;
    return bytes - off < Context::kChunk ? bytes - off : Context::kChunk;
  };
  auto issue = [&](size_t k) -> Status {
    const int b = (int)(k & 1);
    GK_CUDA_CHECK(cudaMemcpyAsync(c->pinned[b], (const char*)src + k * Context::kChunk, len_of(k), cudaMemcpyDeviceToHost,
                                  c->stream));
    GK_CUDA_CHECK(cudaEventRecord(c->chunk_done[b], c->stream));
    return Status{};
  };
  GK_RETURN_IF_ERROR(issue(0));
  for (size_t k = 0; k < chunks; ++k) {
    if (k + 1 < chunks) GK_RETURN_IF_ERROR(issue(k + 1));
    const int b = (int)(k & 1);
    GK_CUDA_CHECK(cudaEventSynchronize(c->chunk_done[b]));
    memcpy((char*)dst + k * Context::kChunk, c->pinned[b], len_of(k));
  }
  return Status{};
}

}  // namespace

Status copy_device(Context* c, void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return Status{};
  GK_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
  GK_CUDA_CHECK(detail::sync_stream(c->stream));
  return Status{};
}

Status synchronize(Context* c) {
  GK_CUDA_CHECK(cudaStreamSynchronize(c->stream));
  return Status{};
}

Status memory_info(Context* c, MemoryInfo* m) {
  uint64_t used = 0, peak = 0, reserved = 0;
  GK_CUDA_CHECK(cudaMemPoolGetAttribute(c->pool, cudaMemPoolAttrUsedMemCurrent, &used));
  GK_CUDA_CHECK(cudaMemPoolGetAttribute(c->pool, cudaMemPoolAttrUsedMemHigh, &peak));
  GK_CUDA_CHECK(cudaMemPoolGetAttribute(c->pool, cudaMemPoolAttrReservedMemCurrent, &reserved));
  size_t free_b = 0, total_b = 0;
  GK_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  m->used = (int64_t)used;
  m->peak = (int64_t)peak;
  m->reserved = (int64_t)reserved;
  m->free = (int64_t)free_b;
  m->total = (int64_t)total_b;
  return Status{};
}

Status reset_peak(Context* c) {
  GK_CUDA_CHECK(cudaStreamSynchronize(c->stream));
  uint64_t zero = 0;
  GK_CUDA_CHECK(cudaMemPoolSetAttribute(c->pool, cudaMemPoolAttrUsedMemHigh, &zero));
  return Status{};
}

Status timer_start(Context* c) {
  detail::OpTimer& t = detail::op_timer();
  t.start = c->t0;
  t.stop = c->t1;
  t.stopped = false;
  GK_CUDA_CHECK(cudaEventRecord(c->t0, c->stream));
  t.armed = true;
  return Status{};
}

Status timer_stop(Context* c, double* ms) {
  detail::OpTimer& t = detail::op_timer();
  const bool stopped = t.stopped;
  t.armed = false;
  t.stopped = false;
  // An op that returned before its final synchronisation (an argument error) has no stop event.
  if (!stopped) GK_CUDA_CHECK(cudaEventRecord(c->t1, c->stream));
  GK_CUDA_CHECK(cudaEventSynchronize(c->t1));
  float f = 0.0f;
  GK_CUDA_CHECK(cudaEventElapsedTime(&f, c->t0, c->t1));
  *ms = (double)f;
  return Status{};
}

// ---------------------------------------------------------------------------------------------
// The call-ordered queue.

namespace {

// Moves the turn past `t` (called under c->m), and past any abandoned tickets after it.
void advance(Context* c, uint64_t t) {
  c->serving = t + 1;
  while (!c->abandoned.empty() && *c->abandoned.begin() == c->serving) {
    c->abandoned.erase(c->abandoned.begin());
    ++c->serving;
  }
}

// A ticket whose job will never run: its turn is skipped.
void abandon(Context* c, uint64_t t) {
  {
    std::lock_guard<std::mutex> lock(c->m);
    if (c->serving == t) advance(c, t);
    else c->abandoned.insert(t);
  }
  c->cv.notify_all();
}

// Runs the deferred actions all of whose earlier jobs have run (tag <= limit). Device thread,
// during a turn; the actions run outside the lock.
void drain(Context* c, uint64_t limit) {
  std::vector<std::function<void()>> ready;
  {
    std::lock_guard<std::mutex> lock(c->m);
    auto& d = c->deferred;
    for (size_t i = 0; i < d.size();) {
      if (d[i].first <= limit) {
        ready.push_back(std::move(d[i].second));
        d[i] = std::move(d.back());
        d.pop_back();
      } else {
        ++i;
      }
    }
  }
  for (auto& fn : ready) fn();
}

class Turn {
 public:
  Turn(Context* c, uint64_t ticket) : c_(c), t_(ticket) {
    std::unique_lock<std::mutex> lock(c_->m);
    c_->cv.wait(lock, [&] { return c_->serving == t_; });
  }
  ~Turn() {
    // Every job issued before an action deferred with tag <= t + 1 has now run.
    if (activate(c_).ok()) drain(c_, t_ + 1);
    {
      std::lock_guard<std::mutex> lock(c_->m);
      advance(c_, t_);
    }
    c_->cv.notify_all();
  }
  Turn(const Turn&) = delete;
  Turn& operator=(const Turn&) = delete;

 private:
  Context* c_;
  uint64_t t_;
};

}  // namespace

uint64_t enqueue(Context* c, const std::function<void(uint64_t)>& submit) {
  std::lock_guard<std::mutex> lock(c->submit);
  uint64_t t;
  {
    std::lock_guard<std::mutex> l(c->m);
    t = c->next++;
  }
  try {
    submit(t);
  } catch (...) {
    abandon(c, t);
    throw;
  }
  return t;
}

Status run_turn(Context* c, uint64_t ticket, const std::function<Status()>& work) {
  Turn turn(c, ticket);
  GK_RETURN_IF_ERROR(activate(c));
  drain(c, ticket);
  return work();
}

void after_issued(Context* c, std::function<void()> fn) {
  bool idle = false;
  {
    std::lock_guard<std::mutex> lock(c->m);
    idle = c->serving == c->next;
    if (!idle) c->deferred.emplace_back(c->next, std::move(fn));
  }
  // No job queued or running: nothing issued before can still be using what fn releases.
  if (idle) fn();
}

Status run_timed(Context* c, const std::function<Status()>& work) {
  GK_RETURN_IF_ERROR(timer_start(c));
  double ms = 0.0;
  Status st;
  try {
    st = work();
  } catch (...) {
    timer_stop(c, &ms);  // disarms this thread's timer
    throw;
  }
  const Status ts = timer_stop(c, &ms);
  if (st.ok() && ts.ok()) c->last_ms.store(ms);
  return st.ok() ? ts : st;
}

double last_op_ms(Context* c) { return c->last_ms.load(); }

}  // namespace cuda
}  // namespace gk
