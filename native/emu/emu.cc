// The emulator's scheduler and runtime. Compiled WITHOUT sanitizer instrumentation even in the
// sanitizer builds (its bookkeeping is shared by all fibers on purpose); it calls the sanitizer
// APIs instead: EMU_TSAN makes each CUDA thread a ThreadSanitizer fiber and each barrier a
// release/acquire, EMU_ASAN tells AddressSanitizer about stack switches and poisons the shared
// memory arena around each shared variable.
//
// Environment:
//   EMU_THREADS=n      OS threads that run blocks (default 1: deterministic order)
//   EMU_SCHED=fifo|reverse|random   order in which ready CUDA threads run (default fifo)
//   EMU_SEED=n         seed of EMU_SCHED=random
//   EMU_SM_COUNT=n     multiprocessors reported (default 2: small grids, grid-stride loops run)
//   EMU_STRICT=1       warnings (a barrier completed with exited threads) are errors
//   EMU_KEEP_GOING=1   report errors and go on (exit status 99 at the end) instead of aborting
//   EMU_SHFL_SYNC=1    shuffles/votes order memory like __syncwarp (default: they do not)
//   EMU_VERBOSE=1      one line per launch (configuration, time)
//   EMU_STACK_KB=n     stack per CUDA thread
//   EMU_MEM_MB=n       device memory (default 4096): an allocation past it is
//                      cudaErrorMemoryAllocation, so out-of-memory paths are testable
#include <dlfcn.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <random>
#include <set>

#include "include/cuda_runtime.h"

#if defined(EMU_TSAN)
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/tsan_interface.h>
#endif
#if defined(EMU_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace emu {
namespace {

// ---------------------------------------------------------------------------------------------
// Configuration.
struct Config {
  int threads = 1;
  int sched = 0;  // 0 fifo, 1 reverse, 2 random
  uint64_t seed = 1;
  int sm_count = 2;
  bool strict = false, keep_going = false, shfl_sync = false, verbose = false;
  size_t stack_bytes;
  size_t mem_bytes;
};
int env_int(const char* n, int d) {
  const char* v = getenv(n);
  return v && *v ? atoi(v) : d;
}
const Config& cfg() {
  static const Config c = [] {
    Config k;
    k.threads = std::max(1, env_int("EMU_THREADS", 1));
    const char* s = getenv("EMU_SCHED");
    k.sched = !s ? 0 : !strcmp(s, "reverse") ? 1 : !strcmp(s, "random") ? 2 : 0;
    k.seed = getenv("EMU_SEED") && *getenv("EMU_SEED") ? strtoull(getenv("EMU_SEED"), nullptr, 10) : 1;
    k.sm_count = std::max(1, env_int("EMU_SM_COUNT", 2));
    k.strict = env_int("EMU_STRICT", 0) != 0;
    k.keep_going = env_int("EMU_KEEP_GOING", 0) != 0;
    k.shfl_sync = env_int("EMU_SHFL_SYNC", 0) != 0;
    k.verbose = env_int("EMU_VERBOSE", 0) != 0;
#if defined(EMU_ASAN) || defined(EMU_TSAN)
    const int def_kb = 256;
#else
    const int def_kb = 64;
#endif
    k.stack_bytes = (size_t)std::max(16, env_int("EMU_STACK_KB", def_kb)) << 10;
    k.mem_bytes = (size_t)std::max(1, env_int("EMU_MEM_MB", 4096)) << 20;
    return k;
  }();
  return c;
}

constexpr size_t kStaticSmem = 48 << 10;   // static __shared__ limit per block
constexpr size_t kOptinSmem = 227 << 10;   // dynamic shared memory opt-in limit (sm_90)
constexpr size_t kRedzone = 64;            // poisoned gap around shared variables (ASan)
constexpr size_t kArenaBytes = kStaticSmem + kRedzone + kOptinSmem + kRedzone;

// ---------------------------------------------------------------------------------------------
// Context switch (x86-64 SysV): saves the callee-saved registers, MXCSR and the x87 control word
// on the current stack, stores the stack pointer in *from, and continues on `to`.
extern "C" void emu_swap(void** from, void* to);
asm(R"(
  .text
  .globl emu_swap
  .type emu_swap,@function
emu_swap:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  subq $8, %rsp
  stmxcsr (%rsp)
  fnstcw 4(%rsp)
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  ldmxcsr (%rsp)
  fldcw 4(%rsp)
  addq $8, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size emu_swap,.-emu_swap
  .section .note.GNU-stack,"",@progbits
  .text
)");

// ---------------------------------------------------------------------------------------------
// State.
enum FState : uint8_t { kReady, kRunning, kAtBar, kAtWarp, kDone };

struct Fiber {
  void* sp = nullptr;
  char* stack = nullptr;  // lowest usable byte
  size_t stack_size = 0;
  uint3 tidx{0, 0, 0};
  int tid = 0;
  FState st = kReady;
  const char* wwhat = "";
  const char* wfile = "";
  int wline = 0;
  unsigned wmask = 0;
  uint64_t result = 0;
  unsigned gen = 0;  // barrier / warp-sync generation it waits on
  void* tsan = nullptr;
};

struct WarpOp {
  bool active = false;
  unsigned mask = 0, arrived = 0;
  int kind = 0;
  const char* what = "";
  const char* file = "";
  int line = 0;
  uint64_t val[32];
  int src[32];
};
struct Warp {
  unsigned present = 0, exited = 0;
  unsigned sync_gen = 0;
  WarpOp ops[4];
};

struct Block {
  const LaunchCfg* cfg = nullptr;
  uint3 bidx{0, 0, 0};
  int nthreads = 0, live = 0;
  void (*invoke)(void*) = nullptr;
  void* data = nullptr;
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  std::vector<int> ready;  // ring of fiber ids
  size_t rhead = 0, rcount = 0;
  int bar_count = 0;
  unsigned bar_gen = 0;
  const char* bar_file = nullptr;
  int bar_line = 0;
  char* arena = nullptr;
  size_t static_used = 0;
  char* dyn = nullptr;
  size_t dyn_size = 0;
  std::vector<std::pair<const void*, void*>> svars;
  char* sync = nullptr;  // TSan sync objects: [0,1] block barrier, then 2 per warp
  std::mt19937_64* rng = nullptr;
};

struct Sched {  // one per OS thread
  void* main_sp = nullptr;
  Fiber* cur = nullptr;
  Block* blk = nullptr;
  const void* main_bottom = nullptr;
  size_t main_size = 0;
  void* tsan_main = nullptr;
  void* kernel_done = nullptr;
  // Stacks (and, with TSan, fibers) are pooled per OS thread in kSets sets used by turns: block b
  // runs on set b % kSets. With TSan a fiber's history carries over to the next block it runs, so
  // blocks on the same set are ordered; blocks on different sets (consecutive blocks) are not.
  static constexpr int kSets = 2;
  char* stacks[kSets] = {nullptr, nullptr};
  size_t stacks_n[kSets] = {0, 0};
  std::vector<void*> tsan_fibers[kSets];
  char* arena = nullptr;   // cached shared memory arena (no TSan)
  std::mt19937_64 rng;

  // The OS threads of EMU_THREADS > 1 live for one launch: what they mapped goes with them
  // (otherwise every launch leaks its stacks and arena, and mmap soon fails).
  ~Sched() {
    const size_t per = cfg().stack_bytes + 4096;
    for (int s = 0; s < kSets; ++s) {
      if (stacks[s]) munmap(stacks[s], per * stacks_n[s]);
#if defined(EMU_TSAN)
      for (void* f : tsan_fibers[s]) __tsan_destroy_fiber(f);
#endif
    }
    if (arena) munmap(arena, kArenaBytes + 4096);
  }
};
thread_local Sched g;

std::atomic<int> g_errors{0};
std::mutex g_report_mu;
std::set<std::string> g_warned;

const char* base_name(const char* p) {
  const char* b = p;
  for (; *p; ++p)
    if (*p == '/') b = p + 1;
  return b;
}

void exit_status_hook() {
  if (g_errors.load() > 0) {
    fprintf(stderr, "EMU: %d error(s) reported\n", g_errors.load());
    fflush(stderr);
    _exit(99);
  }
}

void vreport(bool error, const char* fmt, va_list ap) {
  std::lock_guard<std::mutex> lock(g_report_mu);
  char msg[2048];
  vsnprintf(msg, sizeof(msg), fmt, ap);
  std::string where;
  if (g.blk) {
    char b[512];
    const Block& B = *g.blk;
    snprintf(b, sizeof(b), " in kernel %s (launched at %s:%d), block (%u,%u,%u)", B.cfg->name, base_name(B.cfg->file),
             B.cfg->line, B.bidx.x, B.bidx.y, B.bidx.z);
    where = b;
    if (g.cur) {
      snprintf(b, sizeof(b), " thread (%u,%u,%u)", g.cur->tidx.x, g.cur->tidx.y, g.cur->tidx.z);
      where += b;
    }
  }
  if (!error) {
    std::string key = std::string(msg);
    if (!g_warned.insert(key).second) return;
  }
  fprintf(stderr, "EMU %s%s:\n  %s\n", error ? "ERROR" : "WARNING", where.c_str(), msg);
  fflush(stderr);
  if (error) {
    static bool hooked = (atexit(exit_status_hook), true);
    (void)hooked;
    g_errors.fetch_add(1);
    if (!cfg().keep_going) abort();
  }
}
void error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(true, fmt, ap);
  va_end(ap);
}
void warning(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void warning(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(cfg().strict, fmt, ap);
  va_end(ap);
}
[[noreturn]] void fatal(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vreport(true, fmt, ap);
  va_end(ap);
  abort();
}

// ---------------------------------------------------------------------------------------------
// Sanitizer hooks.
inline void tsan_release(void* a) {
#if defined(EMU_TSAN)
  __tsan_release(a);
#else
  (void)a;
#endif
}
inline void tsan_acquire(void* a) {
#if defined(EMU_TSAN)
  __tsan_acquire(a);
#else
  (void)a;
#endif
}
inline void asan_poison(void* p, size_t n) {
#if defined(EMU_ASAN)
  __asan_poison_memory_region(p, n);
#else
  (void)p, (void)n;
#endif
}
inline void asan_unpoison(void* p, size_t n) {
#if defined(EMU_ASAN)
  __asan_unpoison_memory_region(p, n);
#else
  (void)p, (void)n;
#endif
}
void* sync_addr(Block& B, int slot) { return B.sync + 8 * slot; }
void* bar_sync(Block& B, unsigned gen) { return sync_addr(B, (int)(gen & 1)); }
void* warp_sync(Block& B, int w, unsigned gen) { return sync_addr(B, 2 + 2 * w + (int)(gen & 1)); }
void* launch_sync(Block& B) { return sync_addr(B, 2 + 2 * 32); }

#if defined(EMU_ASAN) || defined(EMU_TSAN)
// A sanitizer report that ends the process names the CUDA thread it happened in.
void on_sanitizer_death() {
  if (!g.blk) return;
  const Block& B = *g.blk;
  fprintf(stderr, "EMU: the report above happened in kernel %s (launched at %s:%d), block (%u,%u,%u)", B.cfg->name,
          base_name(B.cfg->file), B.cfg->line, B.bidx.x, B.bidx.y, B.bidx.z);
  if (g.cur) fprintf(stderr, " thread (%u,%u,%u)", g.cur->tidx.x, g.cur->tidx.y, g.cur->tidx.z);
  fprintf(stderr, "\n");
}
[[maybe_unused]] const bool g_death_hook = (__sanitizer_set_death_callback(on_sanitizer_death), true);
#endif

// ---------------------------------------------------------------------------------------------
// Switching.
void set_builtins(Fiber* f) { tl_builtins.thread_idx = f->tidx; }

void resume(Fiber* f) {
  g.cur = f;
  f->st = kRunning;
  set_builtins(f);
#if defined(EMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(&fake, f->stack, f->stack_size);
#endif
#if defined(EMU_TSAN)
  __tsan_switch_to_fiber(f->tsan, __tsan_switch_to_fiber_no_sync);
#endif
  emu_swap(&g.main_sp, f->sp);
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, nullptr, nullptr);
#endif
  g.cur = nullptr;
}

// Back to the scheduler; returns when the scheduler resumes this fiber (never, once done).
void yield_to_sched(Fiber* f) {
#if defined(EMU_ASAN)
  void* fake = nullptr;
  __sanitizer_start_switch_fiber(f->st == kDone ? nullptr : &fake, g.main_bottom, g.main_size);
#endif
#if defined(EMU_TSAN)
  __tsan_switch_to_fiber(g.tsan_main, __tsan_switch_to_fiber_no_sync);
#endif
  emu_swap(&f->sp, g.main_sp);
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(fake, &g.main_bottom, &g.main_size);
#endif
  set_builtins(f);
}

void push_ready(Block& B, int id) {
  const size_t n = B.ready.size();
  B.ready[(B.rhead + B.rcount) % n] = id;
  ++B.rcount;
  B.fibers[(size_t)id].st = kReady;
}
int pop_ready(Block& B) {
  if (B.rcount == 0) return -1;
  const size_t n = B.ready.size();
  if (cfg().sched == 2 && B.rcount > 1) {  // random: swap a random queued fiber to the head
    const size_t k = (size_t)((*B.rng)() % B.rcount);
    std::swap(B.ready[B.rhead], B.ready[(B.rhead + k) % n]);
  }
  const int id = B.ready[B.rhead];
  B.rhead = (B.rhead + 1) % n;
  --B.rcount;
  return id;
}

// Releases every fiber waiting at the block barrier.
void complete_barrier(Block& B, Fiber* self) {
  std::vector<int> wake;
  for (auto& f : B.fibers)
    if (f.st == kAtBar && &f != self) wake.push_back(f.tid);
  if (cfg().sched == 1) std::reverse(wake.begin(), wake.end());
  for (int id : wake) push_ready(B, id);
  B.bar_count = 0;
  B.bar_file = nullptr;
  ++B.bar_gen;
}

const char* lane_state(const Block& B, const Warp& W, int w, int l) {
  const unsigned bit = 1u << l;
  if (!(W.present & bit)) return "not present (the block has fewer threads)";
  if (W.exited & bit) return "exited";
  const Fiber& f = B.fibers[(size_t)(w * 32 + l)];
  return f.st == kAtBar ? "waiting at __syncthreads" : f.st == kAtWarp ? "at another warp collective" : "running";
}

// Completes op when every non-exited lane it names has arrived. Returns whether it did.
bool try_complete(Block& B, int w, WarpOp& op, Fiber* self) {
  Warp& W = B.warps[(size_t)w];
  const unsigned need = op.mask & W.present & ~W.exited;
  if ((op.arrived & need) != need) return false;
  unsigned ballot = 0;
  for (int l = 0; l < 32; ++l)
    if ((op.arrived >> l & 1) && op.val[l]) ballot |= 1u << l;
  const bool sync_mem = op.kind == kSyncWarp || cfg().shfl_sync;
  if (sync_mem) ++W.sync_gen;
  for (int l = 0; l < 32; ++l) {
    if (!(op.arrived >> l & 1)) continue;
    uint64_t r = 0;
    switch (op.kind) {
      case kShfl: {
        const int s = op.src[l];
        if (s < 0) {
          r = op.val[l];
        } else if (!(op.arrived >> s & 1)) {
          Fiber* saved = g.cur;
          g.cur = &B.fibers[(size_t)(w * 32 + l)];
          error("%s (%s:%d, mask 0x%08x): lane %d reads lane %d, which is %s; on the GPU the value is undefined",
                op.what, base_name(op.file), op.line, op.mask, l, s,
                (op.mask >> s & 1) ? lane_state(B, W, w, s) : "outside the mask");
          g.cur = saved;
          r = 0x7FC00000DEADull;
        } else {
          r = op.val[s];
        }
        break;
      }
      case kBallot: r = ballot; break;
      case kMatchAny:  // the lanes that took part with the same value
        for (int k = 0; k < 32; ++k)
          if ((op.arrived >> k & 1) && op.val[k] == op.val[l]) r |= 1ull << k;
        break;
      case kAny: r = ballot != 0; break;
      case kAll: r = ballot == op.arrived; break;
      default: r = 0;
    }
    Fiber& f = B.fibers[(size_t)(w * 32 + l)];
    f.result = r;
    if (&f != self) push_ready(B, f.tid);
  }
  op.active = false;
  return true;
}

// Bookkeeping when a fiber's kernel function returns.
void on_exit(Block& B, Fiber* f) {
  f->st = kDone;
  --B.live;
  tsan_release(g.kernel_done);
  const int w = f->tid >> 5;
  Warp& W = B.warps[(size_t)w];
  W.exited |= 1u << (f->tid & 31);
  for (auto& op : W.ops)
    if (op.active) try_complete(B, w, op, nullptr);
  if (B.bar_count > 0 && B.bar_count == B.live) {
    warning("__syncthreads() at %s:%d completed with %d exited thread(s) of the block: a barrier that not every "
            "thread reaches is undefined behaviour (CUDA Programming Guide)",
            base_name(B.bar_file), B.bar_line, B.nthreads - B.live);
    complete_barrier(B, nullptr);
  }
}

extern "C" void emu_fiber_main() {
#if defined(EMU_ASAN)
  __sanitizer_finish_switch_fiber(nullptr, &g.main_bottom, &g.main_size);
#endif
  Fiber* f = g.cur;
  Block& B = *g.blk;
  tsan_acquire(launch_sync(B));
  B.invoke(B.data);
  on_exit(B, f);
  yield_to_sched(f);
  fatal("a finished CUDA thread was resumed");
}

// Prepares a fiber's initial stack so that the first emu_swap to it "returns" into emu_fiber_main.
void init_stack(Fiber& f) {
  uintptr_t top = ((uintptr_t)f.stack + f.stack_size) & ~(uintptr_t)15;
  void** sp = reinterpret_cast<void**>(top);
  *--sp = nullptr;                                    // emu_fiber_main's (absent) return address
  *--sp = reinterpret_cast<void*>(&emu_fiber_main);   // popped by emu_swap's ret
  for (int i = 0; i < 6; ++i) *--sp = nullptr;        // rbp rbx r12 r13 r14 r15
  uint32_t csr[2];
  asm volatile("stmxcsr %0" : "=m"(csr[0]));
  asm volatile("fnstcw %0" : "=m"(csr[1]));
  uint64_t slot;
  memcpy(&slot, csr, 8);
  *--sp = reinterpret_cast<void*>(slot);
  f.sp = sp;
}

char* map_region(size_t bytes) {
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) fatal("mmap of %zu bytes failed", bytes);
  return static_cast<char*>(p);
}

// Stacks for n fibers of pool set `set`, each with a guard page below it.
char* stacks_for(int n, int set) {
  const size_t page = 4096, per = cfg().stack_bytes + page;
  if (g.stacks[set] && g.stacks_n[set] >= (size_t)n) return g.stacks[set];
  char* s = map_region(per * (size_t)n);
  for (int i = 0; i < n; ++i) mprotect(s + per * (size_t)i, page, PROT_NONE);
  if (g.stacks[set]) munmap(g.stacks[set], per * g.stacks_n[set]);
  g.stacks[set] = s;
  g.stacks_n[set] = (size_t)n;
  return s;
}

void run_block(const LaunchCfg& c, uint3 bidx, void (*invoke)(void*), void* data) {
#if defined(EMU_TSAN)
  const bool fresh = true;  // a new shared arena per block: munmap clears its TSan shadow
#else
  const bool fresh = false;
#endif
  const uint64_t lin = bidx.x + (uint64_t)c.grid.x * (bidx.y + (uint64_t)c.grid.y * bidx.z);
#if defined(EMU_TSAN)
  const int set = (int)(lin % (uint64_t)g.kSets);
#else
  const int set = 0;
  (void)lin;
#endif
  Block B;
  B.cfg = &c;
  B.bidx = bidx;
  B.invoke = invoke;
  B.data = data;
  B.nthreads = (int)(c.block.x * c.block.y * c.block.z);
  B.live = B.nthreads;
  B.fibers.resize((size_t)B.nthreads);
  B.warps.resize((size_t)((B.nthreads + 31) / 32));
  B.ready.resize((size_t)B.nthreads);
  B.rng = &g.rng;
  B.svars.reserve(64);  // no allocation from fiber context (TSan would attribute it to the fiber)
  for (int i = 0; i < B.nthreads; ++i) B.warps[(size_t)(i >> 5)].present |= 1u << (i & 31);

  // Shared memory: static variables from the start, dynamic after the 48 KB static area.
  if (fresh) {
    B.arena = map_region(kArenaBytes + 4096);
  } else {
    if (!g.arena) g.arena = map_region(kArenaBytes + 4096);
    B.arena = g.arena;
  }
  B.sync = B.arena + kArenaBytes;
  B.dyn = B.arena + kStaticSmem + kRedzone;
  B.dyn_size = c.smem;
  memset(B.arena, 0xFF, kStaticSmem + kRedzone + c.smem);
  asan_poison(B.arena, kArenaBytes);
  asan_unpoison(B.dyn, c.smem);

  const size_t page = 4096, per = cfg().stack_bytes + page;
  char* stacks = stacks_for(B.nthreads, set);
#if defined(EMU_TSAN)
  auto& pool = g.tsan_fibers[set];
  while (pool.size() < (size_t)B.nthreads) pool.push_back(__tsan_create_fiber(0));
  tsan_release(launch_sync(B));  // the host's work before the launch happens before every thread
#endif
  tl_builtins.block_idx = bidx;
  tl_builtins.block_dim = c.block;
  tl_builtins.grid_dim = c.grid;
  for (int i = 0; i < B.nthreads; ++i) {
    Fiber& f = B.fibers[(size_t)i];
    f.tid = i;
    f.tidx = uint3{(unsigned)i % c.block.x, ((unsigned)i / c.block.x) % c.block.y, (unsigned)i / (c.block.x * c.block.y)};
    f.stack = stacks + per * (size_t)i + page;
    f.stack_size = cfg().stack_bytes;
    init_stack(f);
#if defined(EMU_TSAN)
    f.tsan = pool[(size_t)i];
    char name[96];
    // Fibers are pooled: a report's "previous access" may come from an earlier block of the set.
    snprintf(name, sizeof(name), "CUDA thread (%u,%u,%u), now in block (%u,%u,%u) (fiber set %d)", f.tidx.x, f.tidx.y,
             f.tidx.z, bidx.x, bidx.y, bidx.z, set);
    __tsan_set_fiber_name(f.tsan, name);
#endif
  }
  for (int i = 0; i < B.nthreads; ++i) push_ready(B, cfg().sched == 1 ? B.nthreads - 1 - i : i);

  g.blk = &B;
  for (;;) {
    const int id = pop_ready(B);
    if (id < 0) break;
    resume(&B.fibers[(size_t)id]);
  }
  if (B.live > 0) {
    // Deadlock: describe where every live thread waits.
    std::string s;
    char b[512];
    if (B.bar_count > 0) {
      snprintf(b, sizeof(b), "%d thread(s) wait at __syncthreads() (%s:%d);", B.bar_count, base_name(B.bar_file),
               B.bar_line);
      s += b;
    }
    for (size_t w = 0; w < B.warps.size(); ++w) {
      const Warp& W = B.warps[w];
      for (const auto& op : W.ops) {
        if (!op.active) continue;
        const unsigned missing = op.mask & W.present & ~W.exited & ~op.arrived;
        snprintf(b, sizeof(b), "\n  warp %zu: lanes 0x%08x wait at %s (%s:%d, mask 0x%08x) for lanes 0x%08x", w,
                 op.arrived, op.what, base_name(op.file), op.line, op.mask, missing);
        s += b;
        // The missing lanes, grouped by where they wait.
        unsigned left = missing;
        while (left) {
          const int l0 = __builtin_ctz(left);
          const Fiber& f0 = B.fibers[w * 32 + (size_t)l0];
          unsigned group = 0;
          for (int l = l0; l < 32; ++l) {
            const Fiber& f = B.fibers[w * 32 + (size_t)l];
            if ((left >> l & 1) && f.st == f0.st && f.wline == f0.wline && f.wfile == f0.wfile) group |= 1u << l;
          }
          left &= ~group;
          if (f0.st == kAtBar || f0.st == kAtWarp)
            snprintf(b, sizeof(b), "\n    lanes 0x%08x wait at %s (%s:%d)", group, f0.wwhat, base_name(f0.wfile), f0.wline);
          else
            snprintf(b, sizeof(b), "\n    lanes 0x%08x are not waiting anywhere", group);
          s += b;
        }
      }
    }
    fatal("deadlock: %d of %d thread(s) can never continue. %s", B.live, B.nthreads, s.c_str());
  }
  g.blk = nullptr;

#if defined(EMU_TSAN)
  munmap(B.arena, kArenaBytes + 4096);
#endif
  (void)per;
  asan_unpoison(B.arena, kArenaBytes);
}

// ---------------------------------------------------------------------------------------------
// Runtime state.
std::mutex g_mem_mu;
std::map<void*, size_t> g_allocs;
size_t g_used = 0, g_peak = 0;
std::map<const void*, int> g_dyn_limit;
thread_local cudaError_t g_last = cudaSuccess;

cudaError_t set_error(cudaError_t e) {
  if (e != cudaSuccess) g_last = e;
  return e;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Device-side entry points.

void syncthreads(const char* file, int line) {
  Fiber* f = g.cur;
  if (!f) fatal("__syncthreads() outside a kernel");
  Block& B = *g.blk;
  if (B.bar_count == 0) {
    B.bar_file = file;
    B.bar_line = line;
  } else if (B.bar_line != line || strcmp(B.bar_file, file) != 0) {
    error("divergent __syncthreads(): this thread is at %s:%d while %d other thread(s) wait at %s:%d", base_name(file),
          line, B.bar_count, base_name(B.bar_file), B.bar_line);
  }
  const unsigned gen = B.bar_gen;
  tsan_release(bar_sync(B, gen));
  ++B.bar_count;
  f->wwhat = "__syncthreads()";
  f->wfile = file;
  f->wline = line;
  if (B.bar_count == B.live) {
    complete_barrier(B, f);
  } else {
    f->st = kAtBar;
    yield_to_sched(f);
  }
  tsan_acquire(bar_sync(B, gen));
}

uint64_t warp_collective(int kind, unsigned mask, uint64_t value, int src, const char* what, const char* file,
                         int line) {
  Fiber* f = g.cur;
  if (!f) fatal("%s outside a kernel", what);
  Block& B = *g.blk;
  const int w = f->tid >> 5, lane = f->tid & 31;
  Warp& W = B.warps[(size_t)w];
  if (!(mask >> lane & 1)) error("%s (%s:%d): the calling lane %d is not in its mask 0x%08x", what, base_name(file), line, lane, mask);
  mask |= 1u << lane;
  WarpOp* op = nullptr;
  for (auto& o : W.ops)
    if (o.active && o.mask == mask) op = &o;
  if (!op) {
    for (auto& o : W.ops)
      if (o.active && (o.mask & mask))
        error("%s (%s:%d, mask 0x%08x) overlaps lanes waiting at %s (%s:%d) with mask 0x%08x", what, base_name(file),
              line, mask, o.what, base_name(o.file), o.line, o.mask);
    for (auto& o : W.ops)
      if (!o.active) {
        op = &o;
        break;
      }
    if (!op) fatal("more than 4 concurrent warp collectives in one warp");
    op->active = true;
    op->mask = mask;
    op->arrived = 0;
    op->kind = kind;
    op->what = what;
    op->file = file;
    op->line = line;
  } else if (op->kind != kind || op->line != line || strcmp(op->file, file) != 0) {
    error("divergent warp collective: lane %d is at %s (%s:%d) while lanes 0x%08x of the same mask 0x%08x are at %s "
          "(%s:%d)",
          lane, what, base_name(file), line, op->arrived, mask, op->what, base_name(op->file), op->line);
  }
  op->val[lane] = value;
  op->src[lane] = src;
  op->arrived |= 1u << lane;
  f->wwhat = what;
  f->wfile = file;
  f->wline = line;
  f->wmask = mask;
  const bool sync_mem = kind == kSyncWarp || cfg().shfl_sync;
  const unsigned gen = W.sync_gen;
  if (sync_mem) tsan_release(warp_sync(B, w, gen));
  if (!try_complete(B, w, *op, f)) {
    f->st = kAtWarp;
    yield_to_sched(f);
  }
  if (sync_mem) tsan_acquire(warp_sync(B, w, gen));
  return f->result;
}

unsigned lane_id() { return g.cur ? (unsigned)(g.cur->tid & 31) : 0u; }
unsigned active_mask() {
  if (!g.cur) return 0;
  const Warp& W = g.blk->warps[(size_t)(g.cur->tid >> 5)];
  return W.present & ~W.exited;
}

void* shared_alloc(const void* key, size_t bytes, size_t align) {
  Block* B = g.blk;
  if (!B) fatal("__shared__ variable used outside a kernel");
  for (auto& kv : B->svars)
    if (kv.first == key) return kv.second;
  if (B->svars.size() == B->svars.capacity()) fatal("more than 64 __shared__ variables in one kernel");
  if (align < 16) align = 16;
  size_t off = (B->static_used + (B->svars.empty() ? 0 : kRedzone) + align - 1) & ~(align - 1);
  if (off + bytes > kStaticSmem)
    fatal("static __shared__ memory of the kernel exceeds 48 KB (%zu bytes with the padding the emulator adds)",
          off + bytes);
  void* p = B->arena + off;
  B->static_used = off + bytes;
  asan_unpoison(p, bytes);
  B->svars.emplace_back(key, p);
  return p;
}

void* dynamic_smem(size_t align) {
  Block* B = g.blk;
  if (!B) fatal("extern __shared__ array used outside a kernel");
  if (align > 256) fatal("extern __shared__ alignment %zu is not supported", align);
  return B->dyn;
}

void trap(const char* file, int line) { fatal("__trap() at %s:%d", base_name(file), line); }

void misaligned(const void* p, size_t align, const char* what, const char* file, int line) {
  error("%s (%s:%d) of %zu bytes at %p, which is not %zu-byte aligned: the GPU faults (cudaErrorMisalignedAddress)",
        what, base_name(file), line, align, p, align);
}

const char* describe() {
  static char buf[160];
  static const char* names[] = {"fifo", "reverse", "random"};
  snprintf(buf, sizeof(buf), "sched=%s seed=%llu blocks-in-parallel=%d sm=%d memory=%zuMiB%s", names[cfg().sched],
           (unsigned long long)cfg().seed, cfg().threads, cfg().sm_count, cfg().mem_bytes >> 20,
#if defined(EMU_ASAN)
           " asan"
#elif defined(EMU_TSAN)
           " tsan"
#else
           ""
#endif
  );
  return buf;
}

void report(const char* kind, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char b[1024];
  vsnprintf(b, sizeof(b), fmt, ap);
  va_end(ap);
  error("%s: %s", kind, b);
}

int run_grid(const LaunchCfg& c, void (*invoke)(void*), void* data) {
  if (g.cur) fatal("kernel launch from device code (dynamic parallelism) is not emulated");
  const uint64_t threads = (uint64_t)c.block.x * c.block.y * c.block.z;
  const char* bad = nullptr;
  char why[200];
  if (threads == 0 || threads > 1024 || c.block.x > 1024 || c.block.y > 1024 || c.block.z > 64) bad = "block size";
  else if (c.grid.x == 0 || c.grid.y == 0 || c.grid.z == 0 || c.grid.x > 2147483647u || c.grid.y > 65535 || c.grid.z > 65535)
    bad = "grid size";
  if (bad) {
    snprintf(why, sizeof(why), "invalid %s: grid (%u,%u,%u) block (%u,%u,%u)", bad, c.grid.x, c.grid.y, c.grid.z,
             c.block.x, c.block.y, c.block.z);
    warning("launch of %s at %s:%d fails on the GPU (cudaErrorInvalidConfiguration): %s", c.name, base_name(c.file),
            c.line, why);
    return set_error(cudaErrorInvalidConfiguration);
  }
  if (c.smem > kStaticSmem && (size_t)max_dynamic_smem(c.func) < c.smem) {
    warning("launch of %s at %s:%d fails on the GPU (cudaErrorInvalidValue): %zu bytes of dynamic shared memory "
            "without cudaFuncSetAttribute(cudaFuncAttributeMaxDynamicSharedMemorySize)",
            c.name, base_name(c.file), c.line, c.smem);
    return set_error(cudaErrorInvalidValue);
  }
  if (c.smem > kOptinSmem) {
    warning("launch of %s: %zu bytes of dynamic shared memory exceed the device's %zu", c.name, c.smem, kOptinSmem);
    return set_error(cudaErrorInvalidValue);
  }
  const auto t0 = std::chrono::steady_clock::now();
  const uint64_t nblocks = (uint64_t)c.grid.x * c.grid.y * c.grid.z;
#if defined(EMU_TSAN)
  void* done = malloc(8);
#else
  void* done = nullptr;
#endif
  auto block_of = [&](uint64_t i) {
    return uint3{(unsigned)(i % c.grid.x), (unsigned)((i / c.grid.x) % c.grid.y), (unsigned)(i / ((uint64_t)c.grid.x * c.grid.y))};
  };
  auto worker = [&](std::atomic<uint64_t>* next) {
#if defined(EMU_TSAN)
    g.tsan_main = __tsan_get_current_fiber();
#endif
    g.kernel_done = done;
    g.rng.seed(cfg().seed);
    for (uint64_t i; (i = next->fetch_add(1)) < nblocks;) run_block(c, block_of(i), invoke, data);
  };
  std::atomic<uint64_t> next{0};
  const int nt = (int)std::min<uint64_t>((uint64_t)cfg().threads, nblocks);
  if (nt <= 1) {
    worker(&next);
  } else {
    std::vector<std::thread> pool;
    for (int i = 0; i < nt; ++i) pool.emplace_back(worker, &next);
    for (auto& t : pool) t.join();
  }
#if defined(EMU_TSAN)
  __tsan_acquire(done);
  free(done);
#endif
  if (cfg().verbose) {
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    fprintf(stderr, "EMU launch %s (%s:%d): grid (%u,%u,%u) block (%u,%u,%u) smem %zu: %.1f ms, %.2f us/thread\n",
            c.name, base_name(c.file), c.line, c.grid.x, c.grid.y, c.grid.z, c.block.x, c.block.y, c.block.z, c.smem,
            ms, 1000.0 * ms / (double)(nblocks * threads));
  }
  return cudaSuccess;
}

cudaError_t func_set_attribute(const void* f, cudaFuncAttribute a, int v) {
  if (a == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (v < 0 || (size_t)v > kOptinSmem) return set_error(cudaErrorInvalidValue);
    std::lock_guard<std::mutex> lock(g_mem_mu);
    g_dyn_limit[f] = v;
  }
  return cudaSuccess;
}
int max_dynamic_smem(const void* f) {
  std::lock_guard<std::mutex> lock(g_mem_mu);
  auto it = g_dyn_limit.find(f);
  return it == g_dyn_limit.end() ? (int)kStaticSmem : it->second;
}
int occupancy(int threads, size_t smem) {
  if (threads <= 0) return 0;
  int n = std::min(2048 / threads, 32);
  if (smem > 0) n = std::min<int>(n, (int)(kOptinSmem / smem));
  return std::max(n, 1);
}

}  // namespace emu

// ---------------------------------------------------------------------------------------------
// Host runtime API.
using namespace emu;

cudaError_t cudaGetDeviceCount(int* n) { *n = 1; return cudaSuccess; }
cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : set_error(cudaErrorInvalidDevice); }
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* p, int d) {
  if (d != 0) return set_error(cudaErrorInvalidDevice);
  memset(p, 0, sizeof(*p));
  snprintf(p->name, sizeof(p->name), "CUDA emulator on the CPU (%s)", describe());
  p->totalGlobalMem = cfg().mem_bytes;
  p->sharedMemPerBlock = kStaticSmem;
  p->regsPerBlock = 65536;
  p->warpSize = 32;
  p->maxThreadsPerBlock = 1024;
  p->maxThreadsDim[0] = p->maxThreadsDim[1] = 1024;
  p->maxThreadsDim[2] = 64;
  p->maxGridSize[0] = 2147483647;
  p->maxGridSize[1] = p->maxGridSize[2] = 65535;
  p->clockRate = 1000000;
  p->major = 9;
  p->minor = 0;
  p->multiProcessorCount = cfg().sm_count;
  p->memoryClockRate = 1000000;
  p->memoryBusWidth = 64;
  p->maxThreadsPerMultiProcessor = 2048;
  p->sharedMemPerBlockOptin = kOptinSmem;
  p->sharedMemPerMultiprocessor = kOptinSmem + 1024;
  return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr a, int d) {
  if (d != 0) return set_error(cudaErrorInvalidDevice);
  switch (a) {
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = (int)kStaticSmem; break;
    case cudaDevAttrWarpSize: *v = 32; break;
    case cudaDevAttrClockRate: *v = 1000000; break;
    case cudaDevAttrMultiProcessorCount: *v = cfg().sm_count; break;
    case cudaDevAttrMemoryClockRate: *v = 1000000; break;
    case cudaDevAttrGlobalMemoryBusWidth: *v = 64; break;
    case cudaDevAttrL2CacheSize: *v = 1 << 20; break;
    case cudaDevAttrMaxThreadsPerMultiProcessor: *v = 2048; break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    case cudaDevAttrMaxSharedMemoryPerMultiprocessor: *v = (int)kOptinSmem + 1024; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = (int)kOptinSmem; break;
    case cudaDevAttrMemoryPoolsSupported: *v = 1; break;
    default: return set_error(cudaErrorInvalidValue);
  }
  return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaRuntimeGetVersion(int* v) { *v = 13000; return cudaSuccess; }
cudaError_t cudaDriverGetVersion(int* v) { *v = 13000; return cudaSuccess; }
cudaError_t cudaGetLastError() {
  const cudaError_t e = g_last;
  g_last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError() { return g_last; }
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    case cudaErrorNoDevice: return "cudaErrorNoDevice";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    default: return "cudaErrorUnknown";
  }
}
const char* cudaGetErrorString(cudaError_t e) { return cudaGetErrorName(e); }

cudaError_t cudaMalloc(void** p, size_t bytes) {
  *p = nullptr;
  {
    std::lock_guard<std::mutex> lock(g_mem_mu);
    if (bytes > cfg().mem_bytes - std::min(cfg().mem_bytes, g_used)) return set_error(cudaErrorMemoryAllocation);
  }
  void* q = nullptr;
  if (posix_memalign(&q, 256, bytes ? bytes : 1) != 0) return set_error(cudaErrorMemoryAllocation);
  memset(q, 0xFF, bytes);  // uninitialised device memory reads as NaN / -1
  std::lock_guard<std::mutex> lock(g_mem_mu);
  g_allocs[q] = bytes;
  g_used += bytes;
  g_peak = std::max(g_peak, g_used);
  *p = q;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  {
    std::lock_guard<std::mutex> lock(g_mem_mu);
    auto it = g_allocs.find(p);
    if (it == g_allocs.end()) {
      error("cudaFree/cudaFreeAsync of %p, which is not a live device allocation", p);
      return set_error(cudaErrorInvalidDevicePointer);
    }
    g_used -= it->second;
    g_allocs.erase(it);
  }
  free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocAsync(void** p, size_t bytes, cudaStream_t) { return cudaMalloc(p, bytes); }
cudaError_t cudaFreeAsync(void* p, cudaStream_t) { return cudaFree(p); }
cudaError_t cudaHostAlloc(void** p, size_t bytes, unsigned) {
  *p = malloc(bytes ? bytes : 1);
  return *p ? cudaSuccess : set_error(cudaErrorMemoryAllocation);
}
cudaError_t cudaMallocHost(void** p, size_t bytes) { return cudaHostAlloc(p, bytes, 0); }
cudaError_t cudaFreeHost(void* p) { free(p); return cudaSuccess; }
cudaError_t cudaMemset(void* p, int v, size_t bytes) { memset(p, v, bytes); return cudaSuccess; }
cudaError_t cudaMemsetAsync(void* p, int v, size_t bytes, cudaStream_t) { return cudaMemset(p, v, bytes); }
cudaError_t cudaMemcpy(void* d, const void* s, size_t bytes, cudaMemcpyKind) {
  if (bytes) memmove(d, s, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t bytes, cudaMemcpyKind k, cudaStream_t) {
  return cudaMemcpy(d, s, bytes, k);
}
cudaError_t cudaMemGetInfo(size_t* free_b, size_t* total_b) {
  std::lock_guard<std::mutex> lock(g_mem_mu);
  *total_b = cfg().mem_bytes;
  *free_b = *total_b - std::min(*total_b, g_used);
  return cudaSuccess;
}
static int g_pool_tag;
cudaError_t cudaDeviceGetDefaultMemPool(cudaMemPool_t* p, int) {
  *p = reinterpret_cast<cudaMemPool_t>(&g_pool_tag);
  return cudaSuccess;
}
cudaError_t cudaMemPoolSetAttribute(cudaMemPool_t, cudaMemPoolAttr a, void* v) {
  if (a == cudaMemPoolAttrUsedMemHigh) {  // only a reset (to 0) is allowed: the peak restarts from now
    std::lock_guard<std::mutex> lock(g_mem_mu);
    (void)v;
    g_peak = g_used;
  }
  return cudaSuccess;
}
cudaError_t cudaMemPoolGetAttribute(cudaMemPool_t, cudaMemPoolAttr a, void* v) {
  std::lock_guard<std::mutex> lock(g_mem_mu);
  uint64_t* out = static_cast<uint64_t*>(v);
  switch (a) {
    case cudaMemPoolAttrUsedMemCurrent:
    case cudaMemPoolAttrReservedMemCurrent: *out = g_used; break;
    case cudaMemPoolAttrUsedMemHigh:
    case cudaMemPoolAttrReservedMemHigh: *out = g_peak; break;
    default: *out = 0;
  }
  return cudaSuccess;
}
cudaError_t cudaMemPoolTrimTo(cudaMemPool_t, size_t) { return cudaSuccess; }

static int g_stream_tag;
cudaError_t cudaStreamCreate(cudaStream_t* s) { *s = reinterpret_cast<cudaStream_t>(&g_stream_tag); return cudaSuccess; }
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamWaitEvent(cudaStream_t, cudaEvent_t, unsigned) { return cudaSuccess; }
struct CUevent_st {
  std::chrono::steady_clock::time_point t;
};
cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = new CUevent_st(); return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned) { return cudaEventCreate(e); }
cudaError_t cudaEventDestroy(cudaEvent_t e) { delete e; return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  if (!e) return set_error(cudaErrorInvalidResourceHandle);
  e->t = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventQuery(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t a, cudaEvent_t b) {
  *ms = std::chrono::duration<float, std::milli>(b->t - a->t).count();
  return cudaSuccess;
}
