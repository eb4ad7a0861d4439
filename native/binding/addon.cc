// N-API glue only: unpack arguments, run the op on a libuv worker thread, map native status
// codes to JS errors. No math here.
#include <napi.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "../backend.h"

#ifndef GK_VERSION
#define GK_VERSION "0.0.0"
#endif

namespace {

using gk::Status;

// Binding-only codes (not produced by the backends).
constexpr int32_t kDisposed = 100;
constexpr int32_t kDevice = 101;

const char* CodeName(int32_t c) {
  switch (c) {
    case gk::kShape: return "GK_SHAPE";
    case gk::kDtype: return "GK_DTYPE";
    case gk::kTargetRange: return "GK_TARGET_RANGE";
    case gk::kNonFinite: return "GK_NONFINITE";
    case gk::kCuda: return "GK_CUDA";
    case gk::kOom: return "GK_OOM";
    case gk::kInvalid: return "GK_INVALID_ARG";
    case kDisposed: return "GK_DISPOSED";
    case kDevice: return "GK_DEVICE";
    default: return "GK_INTERNAL";
  }
}

Napi::Error MakeError(Napi::Env env, int32_t code, const std::string& msg, int64_t row = -1) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Value().Set("code", Napi::String::New(env, CodeName(code)));
  if (row >= 0) e.Value().Set("row", Napi::Number::New(env, (double)row));
  return e;
}

// Thrown while unpacking; turned into a JS error with a code by the entry points.
struct ArgError {
  int32_t code;
  std::string msg;
};

bool Has(const Napi::Object& o, const char* key) {
  if (!o.Has(key)) return false;
  Napi::Value v = o.Get(key);
  return !v.IsUndefined() && !v.IsNull();
}

double Num(const Napi::Object& o, const char* key, double dflt) {
  if (!Has(o, key)) return dflt;
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) throw ArgError{gk::kInvalid, std::string("'") + key + "' must be a number"};
  return v.As<Napi::Number>().DoubleValue();
}

int64_t Int(const Napi::Object& o, const char* key, int64_t dflt) {
  const double d = Num(o, key, (double)dflt);
  // |d| < 2^63 before the cast (the cast of NaN, inf or larger values is undefined).
  if (!(d > -9.2233720368547758e18 && d < 9.2233720368547758e18) || d != (double)(int64_t)d)
    throw ArgError{gk::kInvalid, std::string("'") + key + "' must be an integer below 2^63"};
  return (int64_t)d;
}

int32_t Enum(const Napi::Object& o, const char* key, int32_t dflt, int32_t count) {
  const int64_t v = Int(o, key, dflt);
  if (v < 0 || v >= count) throw ArgError{gk::kInvalid, std::string("'") + key + "' is not a known value"};
  return (int32_t)v;
}

bool Flag(const Napi::Object& o, const char* key) { return Has(o, key) && o.Get(key).ToBoolean().Value(); }

// A finite number (NaN and ±inf reach no backend).
double Finite(const Napi::Object& o, const char* key, double dflt) {
  const double d = Num(o, key, dflt);
  if (!std::isfinite(d)) throw ArgError{gk::kInvalid, std::string("'") + key + "' must be a finite number"};
  return d;
}

// A divisor: 0 (the op's default) or a positive number whose reciprocal is finite (a denormal
// one would make every weight infinite, and an ignored row's 0 x inf a NaN).
double Divisor(const Napi::Object& o, const char* key) {
  const double d = Finite(o, key, 0.0);
  if (d < 0.0 || (d > 0.0 && !std::isfinite(1.0 / d)))
    throw ArgError{gk::kInvalid, std::string("'") + key + "' must be 0 or a positive number with a finite reciprocal"};
  return d;
}

// a * b as an element count, rejecting products that do not fit.
size_t Count(int64_t a, int64_t b) {
  uint64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow((uint64_t)a, (uint64_t)b, &r) || r > ((uint64_t)1 << 48))
    throw ArgError{gk::kShape, "tensor too large: " + std::to_string(a) + " x " + std::to_string(b) + " elements"};
  return (size_t)r;
}

// ---------------------------------------------------------------------------------------------
// Device memory. A JS device tensor holds an External around a shared DevMem. Owned memory is
// allocated lazily by the first device job that uses it (in the device's call order) and, once
// released, freed in stream order after every job issued before the release has run. Wrapped
// memory (a pointer from elsewhere) is never freed here.

struct DevMem {
  int32_t device = 0;
  std::atomic<void*> ptr{nullptr};
  uint64_t bytes = 0;
  bool owned = true;
  bool has_stream = false;  // wrapped memory: the producer's stream to wait for
  uint64_t stream = 0;
  bool released = false;    // JS thread only
};
using DevRef = std::shared_ptr<DevMem>;

const napi_type_tag kDevMemTag = {0x67726b2d64657631ull, 0x9f3c51a2e07d4b68ull};

// The DevMem behind a device-buffer External, or null for any other value.
DevRef AsDevMem(Napi::Env env, Napi::Value v) {
  if (!v.IsExternal()) return nullptr;
  bool ok = false;
  if (napi_check_object_type_tag(env, v, &kDevMemTag, &ok) != napi_ok || !ok) return nullptr;
  return *v.As<Napi::External<DevRef>>().Data();
}

constexpr int kMaxDevices = 8;

// The device runtime's context of a device (created on first use; its call-ordered queue lives
// in native/cuda/runtime.cu).
gk::cuda::Context* g_contexts[kMaxDevices] = {nullptr};

gk::cuda::Context* QueueOf(int32_t device) {
  if (device < 0 || device >= kMaxDevices)
    throw ArgError{kDevice, "CUDA device index " + std::to_string(device) + " is out of range"};
  if (!g_contexts[device]) {
    Status st = gk::cuda::context(device, &g_contexts[device]);
    if (!st.ok()) throw ArgError{st.code == gk::kInvalid ? kDevice : st.code, st.message};
  }
  return g_contexts[device];
}

// Releases a device buffer (dispose() or the finalizer; JS thread). Owned memory is reported
// to V8 as freed now and returned to the pool after the jobs issued before this call.
void Release(Napi::Env env, const DevRef& m) {
  if (m->released) return;
  m->released = true;
  if (!m->owned) return;
  Napi::MemoryManagement::AdjustExternalMemory(env, -(int64_t)m->bytes);
  gk::cuda::Context* c = g_contexts[m->device];
  if (c) gk::cuda::after_issued(c, [c, m] { gk::cuda::free_async(c, m->ptr.exchange(nullptr)); });
}

Napi::Value NewDevMem(Napi::Env env, DevRef m) {
  if (m->owned) Napi::MemoryManagement::AdjustExternalMemory(env, (int64_t)m->bytes);
  auto* holder = new DevRef(std::move(m));
  Napi::External<DevRef> ext = Napi::External<DevRef>::New(env, holder, [](Napi::Env env, DevRef* h) {
    Release(env, *h);
    delete h;
  });
  if (napi_type_tag_object(env, ext, &kDevMemTag) != napi_ok) throw ArgError{gk::kInternal, "could not tag a device buffer"};
  return ext;
}

// ---------------------------------------------------------------------------------------------
// One op call: its arguments bound to native fields. On the CPU a field points into a typed
// array. On a device a field points at device memory: a device buffer's (allocated now if it is
// new), or, for a typed array, a scratch copy uploaded before the op (inputs) and downloaded
// after it (outputs).

enum Dir { kIn, kOut, kInOut };

struct Bound {
  void** field = nullptr;
  DevRef mem;            // a device buffer, or
  void* host = nullptr;  // a typed array (device calls upload/download it)
  size_t bytes = 0;
  Dir dir = kIn;
  void* scratch = nullptr;
  void** also = nullptr;  // a second field given the same address (grad over the logits)
  void* event = nullptr;  // wrapped memory: the producer stream's work at call time
};

struct Call {
  int32_t device = -1;  // -1: the CPU
  std::vector<Bound> binds;
  // Every value bound to a field (typed arrays and device buffers), kept alive by the call's
  // job until the op settles: a getter may return a fresh array that nothing else holds, or
  // the caller may drop it right after the call. For a typed array, the storage it was bound
  // with, checked again before the job is queued (see Hold).
  struct Held {
    napi_value value;
    const char* key;  // a string literal
    bool typed;
    void* data;
    size_t length;
  };
  std::vector<Held> held;

  Call() = default;
  Call(const Call&) = delete;
  Call& operator=(const Call&) = delete;
  // A call that never ran (a later argument threw, or the job could not be queued) still holds
  // the events recorded at bind time on wrapped memory's producer streams.
  ~Call() {
    for (Bound& b : binds)
      if (b.event && device >= 0 && g_contexts[device]) gk::cuda::destroy_event(g_contexts[device], b.event);
  }

  // Device thread, during the turn: resolves every field to device memory.
  Status Before(gk::cuda::Context* c) {
    for (Bound& b : binds) {
      void* p = nullptr;
      if (b.mem) {
        p = b.mem->ptr.load();
        if (!p) {
          Status st = gk::cuda::malloc_async(c, b.mem->bytes, &p);
          if (!st.ok()) return st;
          b.mem->ptr.store(p);
        }
        if (b.event) {
          Status st = gk::cuda::wait_event(c, b.event);
          b.event = nullptr;
          if (!st.ok()) return st;
        }
      } else {
        Status st = gk::cuda::malloc_async(c, b.bytes, &b.scratch);
        if (!st.ok()) return st;
        if (b.dir != kOut) {
          st = gk::cuda::copy_to_device(c, b.scratch, b.host, b.bytes);
          if (!st.ok()) return st;
        }
        p = b.scratch;
      }
      if (b.field) *b.field = p;
      if (b.also) *b.also = p;
    }
    return Status{};
  }
  // After the op: downloads the typed-array outputs (when it succeeded) and frees the scratch.
  Status After(gk::cuda::Context* c, bool ok) {
    Status st;
    for (Bound& b : binds)
      if (b.scratch && ok && st.ok() && b.dir != kIn) st = gk::cuda::copy_to_host(c, b.host, b.scratch, b.bytes);
    for (Bound& b : binds) {
      gk::cuda::free_async(c, b.scratch);
      b.scratch = nullptr;
      gk::cuda::destroy_event(c, b.event);  // Before stopped early
      b.event = nullptr;
    }
    return st;
  }
};

// A device buffer bound for a device call; wrapped memory with a producer stream gets an event
// recorded on that stream now, at call time, so the job waits for exactly the work queued so far.
Bound DeviceBound(const DevRef& m, void** field, uint64_t bytes, Dir dir) {
  Bound b;
  b.field = field;
  b.mem = m;
  b.bytes = bytes;
  b.dir = dir;
  if (m->has_stream) {
    Status st = gk::cuda::record_external(g_contexts[m->device], m->stream, &b.event);
    if (!st.ok()) throw ArgError{st.code, st.message};
  }
  return b;
}

size_t ElemSize(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: case napi_uint8_array: case napi_uint8_clamped_array: return 1;
    case napi_int16_array: case napi_uint16_array: return 2;
    case napi_float64_array: case napi_bigint64_array: case napi_biguint64_array: return 8;
    default: return 4;
  }
}

// What Bind found: the typed-array type (for a device buffer: o[key + 'Type'], or the first
// allowed type).
struct BindInfo {
  bool given = false;
  bool device = false;
  napi_typedarray_type type = napi_float32_array;
  const void* host = nullptr;  // a typed array's elements (for checks of their values on this thread)
};

// Binds o[key] (a typed array of one of `types` with `len` elements, or a device buffer of at
// least len elements) to *field. A device buffer is only accepted by a call on its device.
template <class T>
BindInfo Bind(Call& c, const Napi::Object& o, const char* key, const std::initializer_list<napi_typedarray_type>& types,
              size_t len, T** field, Dir dir, bool optional = false) {
  BindInfo r;
  void** slot = reinterpret_cast<void**>(const_cast<std::remove_const_t<T>**>(field));
  *slot = nullptr;
  if (!Has(o, key)) {
    if (optional) return r;
    throw ArgError{gk::kInvalid, std::string("missing array argument '") + key + "'"};
  }
  r.given = true;
  Napi::Value v = o.Get(key);
  if (DevRef m = AsDevMem(o.Env(), v)) {
    if (c.device < 0) throw ArgError{kDevice, std::string("'") + key + "' is a device buffer, but the call runs on the CPU"};
    if (m->device != c.device)
      throw ArgError{kDevice, std::string("'") + key + "' lives on cuda:" + std::to_string(m->device) + ", the call runs on cuda:" +
                                  std::to_string(c.device)};
    if (m->released) throw ArgError{kDisposed, std::string("'") + key + "' was disposed"};
    r.device = true;
    r.type = *types.begin();
    // The element type of a device buffer is not visible here: where several are allowed the
    // caller names it in o[key + 'Type'].
    const std::string tkey = std::string(key) + "Type";
    if (Has(o, tkey.c_str())) r.type = (napi_typedarray_type)Int(o, tkey.c_str(), 0);
    else if (types.size() > 1) throw ArgError{gk::kDtype, std::string("'") + key + "' is a device buffer: give its element type in '" + tkey + "'"};
    bool ok = false;
    for (auto t : types) ok = ok || t == r.type;
    if (!ok) throw ArgError{gk::kDtype, std::string("'") + key + "' has the wrong element type"};
    const uint64_t need = (uint64_t)len * ElemSize(r.type);
    // Wrapped memory may start anywhere: an element-misaligned start would fault on the GPU
    // (cudaErrorMisalignedAddress, sticky for the process). Pool memory is always aligned.
    if ((uintptr_t)m->ptr.load() % ElemSize(r.type) != 0)
      throw ArgError{gk::kInvalid, std::string("'") + key + "' starts at a device address that is not aligned to its " +
                                       std::to_string(ElemSize(r.type)) + "-byte elements"};
    if (m->bytes < need)
      throw ArgError{gk::kShape, std::string("'") + key + "' holds " + std::to_string(m->bytes) + " bytes, expected at least " +
                                     std::to_string(need)};
    c.binds.push_back(DeviceBound(m, slot, need, dir));
    c.held.push_back(Call::Held{v, key, false, nullptr, 0});
    return r;
  }
  if (!v.IsTypedArray()) throw ArgError{gk::kDtype, std::string("'") + key + "' must be a typed array"};
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  r.type = ta.TypedArrayType();
  bool ok = false;
  for (auto t : types) ok = ok || t == r.type;
  if (!ok) throw ArgError{gk::kDtype, std::string("'") + key + "' has the wrong typed-array type"};
  const size_t length = ta.ElementLength();
  if (length != len)
    throw ArgError{gk::kShape, std::string("'") + key + "' has " + std::to_string(length) + " elements, expected " + std::to_string(len)};
  // napi_get_typedarray_info also covers SharedArrayBuffer-backed arrays.
  void* data = nullptr;
  napi_typedarray_type type;
  size_t n = 0;
  napi_value buf;
  size_t off = 0;
  if (napi_get_typedarray_info(o.Env(), ta, &type, &n, &data, &buf, &off) != napi_ok || n != len)
    throw ArgError{gk::kInvalid, std::string("'") + key + "' could not be read"};
  // A view of a resizable ArrayBuffer is refused: its memory can shrink (and be decommitted)
  // while the op runs. (Growable SharedArrayBuffers only grow.)
  bool is_ab = false;
  if (napi_is_arraybuffer(o.Env(), buf, &is_ab) == napi_ok && is_ab &&
      Napi::Object(o.Env(), buf).Get("resizable").ToBoolean().Value())
    throw ArgError{gk::kInvalid, std::string("'") + key + "' is a view of a resizable ArrayBuffer; pass a fixed-length one"};
  c.held.push_back(Call::Held{ta, key, true, data, n});
  // An empty array may have no storage; point it at a harmless dummy so "given" stays non-null.
  static uint64_t empty_storage[2] = {0, 0};
  if (!data) data = (void*)empty_storage;
  r.host = data;
  if (c.device < 0) {
    *slot = data;
  } else {
    Bound b;
    b.field = slot;
    b.host = data;
    b.bytes = len * ElemSize(r.type);
    b.dir = dir;
    c.binds.push_back(std::move(b));
  }
  return r;
}

template <class T>
BindInfo BindOpt(Call& c, const Napi::Object& o, const char* key, const std::initializer_list<napi_typedarray_type>& types,
                 size_t len, T** field, Dir dir = kIn) {
  return Bind(c, o, key, types, len, field, dir, true);
}

// Sequence offsets given as a typed array are checked here, before the op is queued:
// off[0] = 0, off[s] = n, non-decreasing, all within [0, n]. (The backends check their own
// copy again, since JS may change the array while the op runs; device memory is checked by
// the CUDA kernels.)
void CheckOffsets(const BindInfo& b, int64_t s, int64_t n) {
  if (!b.host) return;
  const int64_t* off = (const int64_t*)b.host;
  if (off[0] != 0 || off[s] != n)
    throw ArgError{gk::kShape, "seqOffsets must start at 0 and end at N = " + std::to_string(n)};
  for (int64_t i = 0; i < s; ++i)
    if (off[i + 1] < off[i] || off[i + 1] > n)
      throw ArgError{gk::kShape, "seqOffsets must be non-decreasing within [0, N = " + std::to_string(n) + "] (at entry " +
                                     std::to_string(i + 1) + ")"};
}

// Runs `work` off the JS thread; resolves with `done(env)` or rejects with a coded error.
class Job : public Napi::AsyncWorker {
 public:
  Job(Napi::Env env, Napi::Object keep, std::function<Status()> work, std::function<Napi::Value(Napi::Env)> done)
      : Napi::AsyncWorker(env, "grpo-kernels"),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        done_(std::move(done)) {
    keep_ = Napi::Persistent(keep);  // keeps every array and buffer of the call alive
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      status_ = work_();
    } catch (const std::bad_alloc& e) {
      status_.code = gk::kOom;
      snprintf(status_.message, sizeof(status_.message), "out of host memory (%s)", e.what());
    } catch (const std::exception& e) {
      status_.code = gk::kInternal;
      snprintf(status_.message, sizeof(status_.message), "%s", e.what());
    }
  }
  void OnOK() override {
    Napi::HandleScope scope(Env());
    if (status_.ok()) deferred_.Resolve(done_(Env()));
    else deferred_.Reject(MakeError(Env(), status_.code, status_.message, status_.row).Value());
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  Napi::ObjectReference keep_;
  std::function<Status()> work_;
  std::function<Napi::Value(Napi::Env)> done_;
  Status status_;
};

Napi::Value Submit(Napi::Env env, Napi::Object keep, std::function<Status()> work, std::function<Napi::Value(Napi::Env)> done) {
  Job* job = new Job(env, keep, std::move(work), std::move(done));
  Napi::Promise p = job->Promise();
  job->Queue();
  return p;
}

// Runs `work` in its turn on `device` (the device made current); released memory whose jobs
// have all run is freed before and after it.
Napi::Value SubmitDevice(Napi::Env env, Napi::Object keep, int32_t device, std::function<Status(gk::cuda::Context*)> work,
                         std::function<Napi::Value(Napi::Env)> done) {
  gk::cuda::Context* c = QueueOf(device);
  // Everything that can throw happens before the ticket is taken; the ticket is set before
  // the job can run (enqueue queues the job under the same lock).
  auto ticket = std::make_shared<uint64_t>(0);
  Job* job = new Job(
      env, keep, [c, ticket, work = std::move(work)]() -> Status { return gk::cuda::run_turn(c, *ticket, [&] { return work(c); }); },
      std::move(done));
  Napi::Promise p = job->Promise();
  gk::cuda::enqueue(c, [&](uint64_t t) {
    *ticket = t;
    job->Queue();
  });
  return p;
}

// What an op's job keeps alive until it settles: the argument object and every value bound
// from it. Each bound typed array is checked first to still have the storage it was bound
// with: a getter run while later arguments were read may have detached (transferred) or
// shrunk one that was already bound.
// (Own data properties, defined rather than assigned: no setter on a prototype can intercept them.)
Napi::Object Hold(Napi::Env env, Napi::Object args, const Call& c) {
  Napi::Object keep = Napi::Object::New(env);
  keep.DefineProperty(Napi::PropertyDescriptor::Value("args", args));
  for (size_t i = 0; i < c.held.size(); ++i) {
    const Call::Held& h = c.held[i];
    if (h.typed) {
      napi_typedarray_type type;
      size_t n = 0, off = 0;
      void* data = nullptr;
      napi_value buf;
      if (napi_get_typedarray_info(env, h.value, &type, &n, &data, &buf, &off) != napi_ok || data != h.data || n != h.length)
        throw ArgError{gk::kInvalid, std::string("'") + h.key + "' was detached or resized while the arguments were read"};
    }
    keep.DefineProperty(Napi::PropertyDescriptor::Value(Napi::String::New(env, std::to_string(i)), Napi::Value(env, h.value)));
  }
  return keep;
}

// Runs an op: on the CPU backend (a worker thread), or on the call's device (bound fields
// resolved, the op timed, typed-array outputs downloaded).
Napi::Value Run(Napi::Env env, Napi::Object args, std::shared_ptr<Call> call, std::function<Status()> cpu,
                std::function<Status(gk::cuda::Stream)> gpu, std::function<Napi::Value(Napi::Env)> done) {
  Napi::Object keep = Hold(env, args, *call);
  if (call->device < 0) return Submit(env, keep, std::move(cpu), std::move(done));
  return SubmitDevice(
      env, keep, call->device,
      [call, gpu = std::move(gpu)](gk::cuda::Context* c) -> Status {
        Status st = call->Before(c);
        if (st.ok()) st = gk::cuda::run_timed(c, [&] { return gpu(gk::cuda::stream_of(c)); });
        const Status after = call->After(c, st.ok());
        return st.ok() ? after : st;
      },
      std::move(done));
}

Napi::Value Undefined(Napi::Env env) { return env.Undefined(); }

// Entry-point wrapper: argument errors become synchronous JS errors with a code.
template <class F>
Napi::Value Guard(const Napi::CallbackInfo& info, F f) {
  Napi::Env env = info.Env();
  try {
    if (info.Length() < 1 || !info[0].IsObject()) throw ArgError{gk::kInvalid, "expected one options object"};
    return f(env, info[0].As<Napi::Object>());
  } catch (const ArgError& e) {
    MakeError(env, e.code, e.msg).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

// A new call on o.device (-1 or absent: the CPU).
std::shared_ptr<Call> NewCall(const Napi::Object& o) {
  auto c = std::make_shared<Call>();
  c->device = (int32_t)Int(o, "device", -1);
  if (c->device < -1 || c->device >= kMaxDevices) throw ArgError{kDevice, "'device' must be -1 (the CPU) or a CUDA device index"};
  return c;
}

const std::initializer_list<napi_typedarray_type> kF32 = {napi_float32_array};
const std::initializer_list<napi_typedarray_type> kF64 = {napi_float64_array};
const std::initializer_list<napi_typedarray_type> kU8 = {napi_uint8_array};
const std::initializer_list<napi_typedarray_type> kU16 = {napi_uint16_array};
const std::initializer_list<napi_typedarray_type> kI32 = {napi_int32_array};
const std::initializer_list<napi_typedarray_type> kI64 = {napi_bigint64_array};
const std::initializer_list<napi_typedarray_type> kIds = {napi_int32_array, napi_bigint64_array};

// float32 logits arrive as Float32Array, 16-bit ones as Uint16Array of raw bits.
const std::initializer_list<napi_typedarray_type>& LogitsTypes(int32_t dtype) { return dtype == gk::kF32 ? kF32 : kU16; }

int32_t ReadLogitsDtype(const Napi::Object& o, const char* key) {
  const int32_t d = (int32_t)Int(o, key, gk::kF32);
  if (d != gk::kF32 && d != gk::kF16 && d != gk::kBF16) throw ArgError{gk::kDtype, "logits dtype must be float32, float16 or bfloat16"};
  return d;
}

// Targets (int32 or int64 ids, n of them) bound to *field; returns their dtype code.
int32_t BindTargets(Call& c, const Napi::Object& o, size_t n, const void** field, bool optional = false) {
  BindInfo t = Bind(c, o, "targets", kIds, n, field, kIn, optional);
  return t.type == napi_int32_array ? gk::kI32 : gk::kI64;
}

float ReadTemperature(const Napi::Object& o) {
  const float t = (float)Num(o, "temperature", 1.0);
  if (!(t > 0.0f)) throw ArgError{gk::kInvalid, "temperature must be > 0"};
  if (!std::isfinite(t) || !std::isfinite(1.0f / t))
    throw ArgError{gk::kInvalid, "temperature must be finite with a finite reciprocal in float32"};
  return t;
}

// logits (with dtype, n, v) and, when `with_targets`, targets and ignoreIndex; temperature.
// `dir` is the logits' direction (kInOut when a gradient is written over them).
void ReadLogitsView(Call& c, const Napi::Object& o, gk::LogitsView* x, bool with_targets, Dir dir = kIn) {
  x->dtype = ReadLogitsDtype(o, "dtype");
  x->n = Int(o, "n", 0);
  x->v = Int(o, "v", 0);
  if (x->n < 0 || x->v < 1) throw ArgError{gk::kShape, "logits must have N >= 0 rows and V >= 1 columns"};
  Bind(c, o, "logits", LogitsTypes(x->dtype), Count(x->n, x->v), &x->logits, dir);
  if (with_targets) x->target_dtype = BindTargets(c, o, (size_t)x->n, &x->targets);
  x->temperature = ReadTemperature(o);
  x->ignore_index = Int(o, "ignoreIndex", -100);
}

// The gradient output over the logits' dtype and shape: its own array, or (gradInPlace) the
// logits' own storage: on the CPU the same pointer, on a device the logits' binding (kInOut)
// whose resolved address is given to both fields.
void BindGrad(Call& c, const Napi::Object& o, const void* const* logits, int32_t dtype, size_t count, void** grad) {
  *grad = nullptr;
  if (Flag(o, "gradInPlace")) {
    if (c.device < 0) {
      *grad = const_cast<void*>(*logits);
      return;
    }
    for (Bound& b : c.binds)
      if ((const void*)b.field == (const void*)logits) {
        b.also = grad;
        return;
      }
    throw ArgError{gk::kInternal, "gradInPlace: the logits are not bound"};
  }
  Bind(c, o, "grad", LogitsTypes(dtype), count, grad, kOut);
}

Napi::Value TokenLogProbs(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto c = NewCall(o);
    auto a = std::make_shared<gk::LogProbArgs>();
    ReadLogitsView(*c, o, &a->in, true);
    a->check_finite = Flag(o, "checkFinite");
    const size_t n = (size_t)a->in.n;
    Bind(*c, o, "logp", kF32, n, &a->logp, kOut);
    BindOpt(*c, o, "entropy", kF32, n, &a->entropy, kOut);
    BindOpt(*c, o, "lse", kF32, n, &a->lse, kOut);
    BindOpt(*c, o, "sumP2", kF32, n, &a->sum_p2, kOut);
    return Run(env, o, c, [a] { return gk::cpu::token_logprobs(*a); },
               [a](gk::cuda::Stream s) { return gk::cuda::token_logprobs(*a, s); }, Undefined);
  });
}

Napi::Value TokenLogProbsBackward(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto c = NewCall(o);
    auto a = std::make_shared<gk::LogProbBackwardArgs>();
    ReadLogitsView(*c, o, &a->in, true, Flag(o, "gradInPlace") ? kInOut : kIn);
    const size_t n = (size_t)a->in.n;
    BindOpt(*c, o, "gradLogp", kF32, n, &a->gl);
    BindOpt(*c, o, "gradEntropy", kF32, n, &a->gh);
    BindOpt(*c, o, "lse", kF32, n, &a->lse);
    BindOpt(*c, o, "entropy", kF32, n, &a->entropy);
    BindGrad(*c, o, &a->in.logits, a->in.dtype, Count(a->in.n, a->in.v), &a->grad);
    return Run(env, o, c, [a] { return gk::cpu::token_logprobs_backward(*a); },
               [a](gk::cuda::Stream s) { return gk::cuda::token_logprobs_backward(*a, s); }, Undefined);
  });
}

Napi::Value GroupAdvantages(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto c = NewCall(o);
    auto a = std::make_shared<gk::AdvantageArgs>();
    a->k = Int(o, "k", 1);
    a->n = Int(o, "n", 0);
    a->group = Int(o, "groupSize", 1);
    if (a->k < 1 || a->n < 1 || a->group < 1 || a->n % a->group != 0)
      throw ArgError{gk::kShape, "rewards must be k >= 1 functions of n samples, n divisible by groupSize"};
    Bind(*c, o, "rewards", kF64, Count(a->k, a->n), &a->rewards, kIn);
    BindOpt(*c, o, "weights", kF64, (size_t)a->k, &a->weights);
    a->opt.scale = Enum(o, "scale", gk::kScaleGroup, 3);
    a->opt.estimator = Enum(o, "estimator", gk::kEstGrpo, 7);
    a->opt.aggregation = Enum(o, "aggregation", gk::kAggSumThenNormalize, 2);
    a->opt.eps = Finite(o, "eps", 1e-4);
    const BindInfo lengths = BindOpt(*c, o, "lengths", kF64, (size_t)a->n, &a->lengths);
    if (a->opt.estimator == gk::kEstOpo && !lengths.given)
      throw ArgError{gk::kInvalid, "estimator 'opo' needs 'lengths' (one per completion)"};
    if (a->opt.eps < 0.0) throw ArgError{gk::kInvalid, "'eps' must be >= 0"};
    Bind(*c, o, "advantages", kF32, (size_t)a->n, &a->advantages, kOut);
    Bind(*c, o, "combined", kF64, (size_t)a->n, &a->combined, kOut);
    const size_t groups = (size_t)(a->n / a->group);
    BindOpt(*c, o, "groupMean", kF64, groups, &a->group_mean, kOut);
    BindOpt(*c, o, "groupStd", kF64, groups, &a->group_std, kOut);
    BindOpt(*c, o, "batchStats", kF64, 3, &a->batch_stats);
    BindOpt(*c, o, "partials", kF64, 3, &a->partials, kOut);
    const BindInfo gpg_in = BindOpt(*c, o, "gpgCounts", kF64, 2, &a->gpg_counts);
    const BindInfo gpg_out = BindOpt(*c, o, "gpgCountsOut", kF64, 2, &a->gpg_counts_out, kOut);
    if ((gpg_in.given || gpg_out.given) && a->opt.estimator != gk::kEstGpg)
      throw ArgError{gk::kInvalid, "'gpgCounts' belong to estimator 'gpg'"};
    return Run(env, o, c, [a] { return gk::cpu::group_advantages(*a); },
               [a](gk::cuda::Stream s) { return gk::cuda::group_advantages(*a, s); },
               [a](Napi::Env env) { return Napi::Number::New(env, (double)a->zero_variance_groups); });
  });
}

void ReadLossOptions(const Napi::Object& root, gk::LossOptions* o) {
  if (!Has(root, "options") || !root.Get("options").IsObject()) throw ArgError{gk::kInvalid, "missing 'options'"};
  Napi::Object p = root.Get("options").As<Napi::Object>();
  o->surrogate = Enum(p, "surrogate", gk::kClip, gk::kSurrogateCount);
  o->is_level = Enum(p, "importanceSamplingLevel", gk::kIsToken, 3);
  o->kl = Enum(p, "klEstimator", gk::kK3, 3);
  o->aggregation = Enum(p, "aggregation", gk::kSeqMeanTokenMean, 4);
  o->epsilon_low = Finite(p, "epsilonLow", 0.2);
  o->epsilon_high = Finite(p, "epsilonHigh", 0.2);
  o->delta = Finite(p, "delta", 0.0);
  o->tau_pos = Finite(p, "tauPos", 1.0);
  o->tau_neg = Finite(p, "tauNeg", 1.05);
  o->beta = Finite(p, "beta", 0.0);
  o->entropy_coef = Finite(p, "entropyCoef", 0.0);
  o->normalizer = Divisor(p, "normalizer");
  o->max_completion_length = Divisor(p, "maxCompletionLength");
  o->mask_truncated = Flag(p, "maskTruncatedCompletions");
  o->top_entropy_quantile = Num(p, "topEntropyQuantile", 1.0);
  if (!(o->top_entropy_quantile > 0.0 && o->top_entropy_quantile <= 1.0))
    throw ArgError{gk::kInvalid, "'topEntropyQuantile' must be in (0, 1]"};
  // Spec §9.1-9.3.
  o->adv_per_token = Flag(p, "advantagesPerToken");
  o->rc_level = Enum(p, "rolloutLevel", gk::kRcOff, 4);
  o->rc_mode = Enum(p, "rolloutMode", gk::kRcTruncate, 2);
  o->rc_clip_min = Finite(p, "rolloutClipMin", 0.0);
  o->rc_clip_max = Finite(p, "rolloutClipMax", 3.0);
  if (o->rc_level != gk::kRcOff && !(o->rc_clip_min >= 0.0 && o->rc_clip_min <= o->rc_clip_max))
    throw ArgError{gk::kInvalid, "'rolloutClipMin' must be >= 0 and <= 'rolloutClipMax'"};
  o->rc_batch_normalize = Flag(p, "rolloutBatchNormalize");
  o->rs_count = 0;
  if (Has(p, "rejection")) {
    if (!p.Get("rejection").IsArray()) throw ArgError{gk::kInvalid, "'rejection' must be an array"};
    Napi::Array arr = p.Get("rejection").As<Napi::Array>();
    if (arr.Length() > (uint32_t)gk::kMaxRejection)
      throw ArgError{gk::kInvalid, "at most " + std::to_string(gk::kMaxRejection) + " rejection criteria"};
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      if (!arr.Get(i).IsObject()) throw ArgError{gk::kInvalid, "a rejection criterion must be an object"};
      Napi::Object c = arr.Get(i).As<Napi::Object>();
      gk::RsCriterion& r = o->rs[i];
      r.agg = Enum(c, "agg", 0, 4);
      r.k = Enum(c, "k", 0, 3);
      r.lo = Num(c, "lo", -INFINITY);
      r.hi = Num(c, "hi", INFINITY);
      if (std::isnan(r.lo) || std::isnan(r.hi) || !(r.lo <= r.hi)) throw ArgError{gk::kInvalid, "a rejection criterion needs lo <= hi"};
      if (r.agg == gk::kRsSeqMax && r.k == gk::kK1) throw ArgError{gk::kInvalid, "seqMax takes k2 or k3 only"};
    }
    o->rs_count = (int32_t)arr.Length();
  }
  o->off_policy_mask = Has(p, "offPolicyMaskThreshold") ? 1 : 0;
  o->off_policy_threshold = Finite(p, "offPolicyMaskThreshold", 0.0);
  o->bias_corrected_kl = Flag(p, "biasCorrectedKl");
  o->entropy_form = Enum(p, "entropyForm", gk::kEntropyAggregated, 2);
  o->entropy_threshold_given = Has(p, "entropyThreshold") ? 1 : 0;
  o->entropy_threshold = Num(p, "entropyThreshold", 0.0);
  if (std::isnan(o->entropy_threshold)) throw ArgError{gk::kInvalid, "'entropyThreshold' must not be NaN"};
  // Spec §9.4.
  o->vespo_k_pos = Finite(p, "vespoKPos", 2.0);
  o->vespo_lambda_pos = Finite(p, "vespoLambdaPos", 3.0);
  o->vespo_k_neg = Finite(p, "vespoKNeg", 3.0);
  o->vespo_lambda_neg = Finite(p, "vespoLambdaNeg", 2.0);
  o->cov_ratio = Finite(p, "covRatio", 2e-4);
  o->clip_cov_lb = Finite(p, "clipCovLb", 1.0);
  o->clip_cov_ub = Finite(p, "clipCovUb", 5.0);
  o->ppo_kl_coef = Finite(p, "ppoKlCoef", 1.0);
  const int64_t seed = Int(p, "covSeed", 0);
  if (seed < 0) throw ArgError{gk::kInvalid, "'covSeed' must be >= 0"};
  o->cov_seed = (uint64_t)seed;
  if (const char* e = gk::loss_type_error(*o)) throw ArgError{gk::kInvalid, e};
}

// The sequence layout and per-token inputs shared by the step and the fused op.
void ReadLossInputs(Call& c, const Napi::Object& o, int64_t n, gk::LossStepArgs* s) {
  s->n = n;
  s->s = Int(o, "s", 0);
  if (s->s < 1) throw ArgError{gk::kShape, "at least one sequence is required"};
  CheckOffsets(Bind(c, o, "seqOffsets", kI64, (size_t)s->s + 1, &s->seq_offsets, kIn), s->s, n);
  ReadLossOptions(o, &s->opt);
  Bind(c, o, "advantages", kF32, s->opt.adv_per_token ? (size_t)n : (size_t)s->s, &s->advantages, kIn);
  const BindInfo sampler = BindOpt(c, o, "samplerLogp", kF32, (size_t)n, &s->sampler_logp);
  if (!sampler.given && (s->opt.rc_level != gk::kRcOff || s->opt.rs_count > 0))
    throw ArgError{gk::kInvalid, "'samplerLogp' is required for rollout correction and rejection"};
  BindOpt(c, o, "oldLogp", kF32, (size_t)n, &s->old_logp);
  BindOpt(c, o, "refLogp", kF32, (size_t)n, &s->ref_logp);
  BindOpt(c, o, "mask", kU8, (size_t)n, &s->mask);
  BindOpt(c, o, "truncated", kU8, (size_t)s->s, &s->truncated);
  BindOpt(c, o, "tokenLoss", kF32, (size_t)n, &s->token_loss, kOut);
  BindOpt(c, o, "keptMask", kU8, (size_t)n, &s->kept, kOut);
}

Napi::Value MetricsObject(Napi::Env env, const gk::LossMetrics& m) {
  Napi::Object r = Napi::Object::New(env);
  r.Set("loss", m.loss);
  r.Set("tokens", m.tokens);
  r.Set("klMean", m.kl_mean);
  r.Set("ratioMean", m.ratio_mean);
  r.Set("clipFractionLow", m.clip_low);
  r.Set("clipFractionHigh", m.clip_high);
  r.Set("clipFraction", m.clip);
  r.Set("entropyMean", m.entropy_mean);
  r.Set("entropyThreshold", m.entropy_threshold);
  r.Set("nonFiniteRows", m.non_finite);
  r.Set("isTruncatedFraction", m.is_truncated);
  r.Set("isMaskedFraction", m.is_masked);
  r.Set("rejectedFraction", m.rejected);
  r.Set("rejectedSeqFraction", m.rejected_seq);
  r.Set("isWeightMean", m.is_weight_mean);
  r.Set("isWeightMax", m.is_weight_max);
  r.Set("samplerKl", m.sampler_kl);
  r.Set("seqLogRatioMin", m.seq_lr_min);
  r.Set("seqLogRatioMax", m.seq_lr_max);
  r.Set("offPolicyMaskedFraction", m.off_policy_masked);
  r.Set("phiMean", m.phi_mean);
  return r;
}

Napi::Value GrpoLossStep(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto c = NewCall(o);
    auto s = std::make_shared<gk::LossStepArgs>();
    const int64_t n = Int(o, "n", 0);
    if (n < 0) throw ArgError{gk::kShape, "the token count must be >= 0"};
    Bind(*c, o, "logp", kF32, (size_t)n, &s->logp, kIn);
    BindOpt(*c, o, "entropy", kF32, (size_t)n, &s->entropy);
    ReadLossInputs(*c, o, n, s.get());
    Bind(*c, o, "dlogp", kF32, (size_t)n, &s->dlogp, kOut);
    BindOpt(*c, o, "dentropy", kF32, (size_t)n, &s->dentropy, kOut);
    return Run(env, o, c, [s] { return gk::cpu::grpo_loss_step(*s); },
               [s](gk::cuda::Stream st) { return gk::cuda::grpo_loss_step(*s, st); },
               [s](Napi::Env env) { return MetricsObject(env, s->out); });
  });
}

Napi::Value GrpoLossFused(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto c = NewCall(o);
    auto a = std::make_shared<gk::FusedLossArgs>();
    ReadLogitsView(*c, o, &a->fwd.in, true, Flag(o, "gradInPlace") ? kInOut : kIn);
    a->fwd.check_finite = Flag(o, "checkFinite");
    const size_t n = (size_t)a->fwd.in.n;
    Bind(*c, o, "logp", kF32, n, &a->fwd.logp, kOut);
    Bind(*c, o, "entropy", kF32, n, &a->fwd.entropy, kOut);
    Bind(*c, o, "lse", kF32, n, &a->fwd.lse, kOut);
    BindOpt(*c, o, "sumP2", kF32, n, &a->fwd.sum_p2, kOut);
    ReadLossInputs(*c, o, a->fwd.in.n, &a->step);
    BindGrad(*c, o, &a->fwd.in.logits, a->fwd.in.dtype, Count(a->fwd.in.n, a->fwd.in.v), &a->grad);
    return Run(env, o, c, [a] { return gk::cpu::grpo_loss_fused(*a); },
               [a](gk::cuda::Stream s) { return gk::cuda::grpo_loss_fused(*a, s); },
               [a](Napi::Env env) { return MetricsObject(env, a->step.out); });
  });
}

Napi::Value DistillLoss(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto c = NewCall(o);
    auto a = std::make_shared<gk::DistillArgs>();
    a->n = Int(o, "n", 0);
    a->v = Int(o, "v", 0);
    if (a->n < 0 || a->v < 1) throw ArgError{gk::kShape, "logits must have N >= 0 rows and V >= 1 columns"};
    a->student_dtype = ReadLogitsDtype(o, "studentDtype");
    a->teacher_dtype = ReadLogitsDtype(o, "teacherDtype");
    const size_t nv = Count(a->n, a->v), n = (size_t)a->n;
    Bind(*c, o, "student", LogitsTypes(a->student_dtype), nv, &a->student, Flag(o, "gradInPlace") ? kInOut : kIn);
    Bind(*c, o, "teacher", LogitsTypes(a->teacher_dtype), nv, &a->teacher, kIn);
    if (Has(o, "targets")) a->target_dtype = BindTargets(*c, o, n, &a->targets);
    a->ignore_index = Int(o, "ignoreIndex", -100);
    BindOpt(*c, o, "mask", kU8, n, &a->mask);
    a->s = Int(o, "s", 0);
    if (a->s < 1) throw ArgError{gk::kShape, "at least one sequence is required"};
    CheckOffsets(Bind(*c, o, "seqOffsets", kI64, (size_t)a->s + 1, &a->seq_offsets, kIn), a->s, a->n);
    a->divergence = Enum(o, "divergence", gk::kForwardKl, 3);
    a->beta = Finite(o, "beta", 0.5);
    if (a->divergence == gk::kJsd && !(a->beta > 0.0 && a->beta < 1.0)) throw ArgError{gk::kInvalid, "'beta' must be in (0, 1)"};
    a->temperature = ReadTemperature(o);
    a->hard_label_weight = Finite(o, "hardLabelWeight", 0.0);
    if (a->hard_label_weight != 0.0 && !Has(o, "targets")) throw ArgError{gk::kInvalid, "hardLabelWeight needs targets"};
    a->aggregation = Enum(o, "aggregation", gk::kTokenMean, 4);
    a->normalizer = Divisor(o, "normalizer");
    a->max_completion_length = Divisor(o, "maxCompletionLength");
    if (Flag(o, "gradInPlace") || Has(o, "grad")) BindGrad(*c, o, &a->student, a->student_dtype, nv, &a->grad);
    BindOpt(*c, o, "rowLoss", kF32, n, &a->row_loss, kOut);
    return Run(env, o, c, [a] { return gk::cpu::distill_loss(*a); },
               [a](gk::cuda::Stream s) { return gk::cuda::distill_loss(*a, s); },
               [a](Napi::Env env) {
                 Napi::Object r = Napi::Object::New(env);
                 r.Set("loss", a->loss);
                 r.Set("tokens", a->tokens);
                 return r;
               });
  });
}

Napi::Value SampleTokens(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto c = NewCall(o);
    auto a = std::make_shared<gk::SampleArgs>();
    ReadLogitsView(*c, o, &a->in, false);
    if (a->in.v > INT32_MAX) throw ArgError{gk::kShape, "sampling needs V < 2^31 columns"};
    a->greedy = Flag(o, "greedy");
    a->top_k = Int(o, "topK", 0);
    a->top_p = Num(o, "topP", 1.0);
    a->min_p = Num(o, "minP", 0.0);
    if (a->top_k < 0 || !(a->top_p > 0.0 && a->top_p <= 1.0) || !(a->min_p >= 0.0 && a->min_p < 1.0))
      throw ArgError{gk::kInvalid, "need topK >= 0, 0 < topP <= 1, 0 <= minP < 1"};
    a->seed = (uint64_t)Int(o, "seed", 0);
    a->step = (uint64_t)Int(o, "step", 0);
    a->row_offset = Int(o, "rowOffset", 0);
    const size_t n = (size_t)a->in.n;
    BindOpt(*c, o, "rowIds", kI64, n, &a->row_ids);
    Bind(*c, o, "tokens", kI32, n, &a->tokens, kOut);
    Bind(*c, o, "logp", kF32, n, &a->logp, kOut);
    Bind(*c, o, "logpTruncated", kF32, n, &a->logp_truncated, kOut);
    return Run(env, o, c, [a] { return gk::cpu::sample_tokens(*a); },
               [a](gk::cuda::Stream s) { return gk::cuda::sample_tokens(*a, s); }, Undefined);
  });
}

Napi::Value BradleyTerryLoss(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto c = NewCall(o);
    auto a = std::make_shared<gk::PreferenceArgs>();
    a->n = Int(o, "n", 0);
    if (a->n < 1) throw ArgError{gk::kShape, "at least one preference pair is required"};
    const size_t n = (size_t)a->n;
    Bind(*c, o, "chosen", kF32, n, &a->chosen, kIn);
    Bind(*c, o, "rejected", kF32, n, &a->rejected, kIn);
    BindOpt(*c, o, "margins", kF32, n, &a->margins);
    a->margin = Finite(o, "margin", 0.0);
    a->sum = Flag(o, "sum");
    Bind(*c, o, "gradChosen", kF32, n, &a->grad_chosen, kOut);
    Bind(*c, o, "gradRejected", kF32, n, &a->grad_rejected, kOut);
    return Run(env, o, c, [a] { return gk::cpu::bradley_terry_loss(*a); },
               [a](gk::cuda::Stream s) { return gk::cuda::bradley_terry_loss(*a, s); },
               [a](Napi::Env env) {
                 Napi::Object r = Napi::Object::New(env);
                 r.Set("loss", a->loss);
                 r.Set("accuracy", a->accuracy);
                 r.Set("meanMargin", a->mean_margin);
                 return r;
               });
  });
}

// ---------------------------------------------------------------------------------------------
// Device entry points.

int32_t DeviceArg(const Napi::Value& v) {
  if (!v.IsNumber()) throw ArgError{kDevice, "the device index must be a number"};
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 0 && d < kMaxDevices) || d != (double)(int32_t)d) throw ArgError{kDevice, "CUDA device index out of range"};
  return (int32_t)d;
}

template <class F>
Napi::Value GuardArgs(const Napi::CallbackInfo& info, F f) {
  Napi::Env env = info.Env();
  try {
    return f(env);
  } catch (const ArgError& e) {
    MakeError(env, e.code, e.msg).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

DevRef DevArg(const Napi::CallbackInfo& info, size_t i) {
  DevRef m = i < info.Length() ? AsDevMem(info.Env(), info[i]) : nullptr;
  if (!m) throw ArgError{gk::kInvalid, "expected a device buffer"};
  if (m->released) throw ArgError{kDisposed, "the device buffer was disposed"};
  return m;
}

uint64_t BigIntArg(const Napi::Value& v, const char* what) {
  if (!v.IsBigInt()) throw ArgError{gk::kInvalid, std::string(what) + " must be a BigInt"};
  bool lossless = false;
  const uint64_t x = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throw ArgError{gk::kInvalid, std::string(what) + " does not fit in 64 bits"};
  return x;
}

// deviceOpen(index): creates the device's context (stream, pool); throws GK_DEVICE/GK_CUDA.
Napi::Value DeviceOpen(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env env) -> Napi::Value {
    QueueOf(DeviceArg(info[0]));
    return env.Undefined();
  });
}

// deviceAlloc(index, bytes): a new owned buffer (allocated by the first job that uses it).
Napi::Value DeviceAlloc(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env env) -> Napi::Value {
    const int32_t dev = DeviceArg(info[0]);
    QueueOf(dev);
    if (info.Length() < 2 || !info[1].IsNumber()) throw ArgError{gk::kInvalid, "bytes must be a number"};
    const double b = info[1].As<Napi::Number>().DoubleValue();
    if (!(b >= 0 && b < 9.0e15) || b != (double)(uint64_t)b) throw ArgError{gk::kInvalid, "bytes must be a non-negative integer"};
    auto m = std::make_shared<DevMem>();
    m->device = dev;
    m->bytes = (uint64_t)b;
    return NewDevMem(env, m);
  });
}

// deviceWrap(index, pointer, bytes, stream?): external device memory (never freed here).
Napi::Value DeviceWrap(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env env) -> Napi::Value {
    const int32_t dev = DeviceArg(info[0]);
    QueueOf(dev);
    if (info.Length() < 3) throw ArgError{gk::kInvalid, "deviceWrap(index, pointer, bytes, stream?)"};
    const uint64_t ptr = BigIntArg(info[1], "the pointer");
    if (ptr == 0) throw ArgError{gk::kInvalid, "the pointer must not be null"};
    if (!info[2].IsNumber()) throw ArgError{gk::kInvalid, "bytes must be a number"};
    const double b = info[2].As<Napi::Number>().DoubleValue();
    if (!(b >= 0 && b < 9.0e15) || b != (double)(uint64_t)b) throw ArgError{gk::kInvalid, "bytes must be a non-negative integer"};
    auto m = std::make_shared<DevMem>();
    m->device = dev;
    m->ptr.store((void*)(uintptr_t)ptr);
    m->bytes = (uint64_t)b;
    m->owned = false;
    if (info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull()) {
      m->has_stream = true;
      m->stream = BigIntArg(info[3], "the stream");
    }
    return NewDevMem(env, m);
  });
}

Napi::Value DeviceRelease(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env env) -> Napi::Value {
    DevRef m = info.Length() > 0 ? AsDevMem(env, info[0]) : nullptr;
    if (!m) throw ArgError{gk::kInvalid, "expected a device buffer"};
    Release(env, m);
    return env.Undefined();
  });
}

// Keeps a call's arguments alive while its job runs.
Napi::Object Keep(const Napi::CallbackInfo& info) {
  Napi::Object k = Napi::Object::New(info.Env());
  for (size_t i = 0; i < info.Length(); ++i) k.Set((uint32_t)i, info[i]);
  return k;
}

// A device job on device buffers (the first is the one written): each allocated if new, and
// waited for if wrapped with a producer stream; `work` gets their addresses.
Napi::Value BufferJob(const Napi::CallbackInfo& info, std::vector<DevRef> bufs, bool timed,
                      std::function<Status(gk::cuda::Context*, const std::vector<void*>&)> work,
                      std::function<Napi::Value(Napi::Env)> done) {
  auto call = std::make_shared<Call>();
  call->device = bufs[0]->device;
  auto ptrs = std::make_shared<std::vector<void*>>(bufs.size(), nullptr);
  for (size_t i = 0; i < bufs.size(); ++i)
    call->binds.push_back(DeviceBound(bufs[i], &(*ptrs)[i], bufs[i]->bytes, i == 0 ? kInOut : kIn));
  return SubmitDevice(
      info.Env(), Keep(info), call->device,
      [call, ptrs, timed, work = std::move(work)](gk::cuda::Context* c) -> Status {
        Status st = call->Before(c);
        if (st.ok()) st = timed ? gk::cuda::run_timed(c, [&] { return work(c, *ptrs); }) : work(c, *ptrs);
        const Status after = call->After(c, false);  // nothing to download; drops leftover events
        return st.ok() ? after : st;
      },
      std::move(done));
}

// A typed array's bytes (any type), for uploads and downloads.
struct HostBytes {
  void* data = nullptr;
  size_t bytes = 0;
};
HostBytes HostArg(const Napi::CallbackInfo& info, size_t i) {
  if (i >= info.Length() || !info[i].IsTypedArray()) throw ArgError{gk::kDtype, "expected a typed array"};
  Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
  HostBytes h;
  napi_typedarray_type type;
  size_t len = 0;
  napi_value buf;
  size_t off = 0;
  if (napi_get_typedarray_info(info.Env(), ta, &type, &len, &h.data, &buf, &off) != napi_ok)
    throw ArgError{gk::kInvalid, "the typed array could not be read"};
  h.bytes = len * ElemSize(type);
  return h;
}

// deviceUpload(buffer, typedArray) / deviceDownload(buffer, typedArray): whole-buffer copies
// through pinned staging, ordered with the device's other work; resolve when done.
Napi::Value DeviceUpload(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env) -> Napi::Value {
    DevRef m = DevArg(info, 0);
    HostBytes h = HostArg(info, 1);
    if (h.bytes != m->bytes) throw ArgError{gk::kShape, "the array's byte length differs from the device buffer's"};
    return BufferJob(info, {m}, false, [h](gk::cuda::Context* c, const std::vector<void*>& p) { return gk::cuda::copy_to_device(c, p[0], h.data, h.bytes); },
                     Undefined);
  });
}

Napi::Value DeviceDownload(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env) -> Napi::Value {
    DevRef m = DevArg(info, 0);
    HostBytes h = HostArg(info, 1);
    if (h.bytes != m->bytes) throw ArgError{gk::kShape, "the array's byte length differs from the device buffer's"};
    return BufferJob(info, {m}, false, [h](gk::cuda::Context* c, const std::vector<void*>& p) { return gk::cuda::copy_to_host(c, h.data, p[0], h.bytes); },
                     Undefined);
  });
}

// deviceCopy(dst, src, dstOffsetBytes = 0): device-to-device copy of src's bytes (timed: the
// copy bandwidth).
Napi::Value DeviceCopy(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env) -> Napi::Value {
    DevRef dst = DevArg(info, 0);
    DevRef src = DevArg(info, 1);
    double off = 0;
    if (info.Length() > 2 && !info[2].IsUndefined()) {
      if (!info[2].IsNumber()) throw ArgError{gk::kInvalid, "deviceCopy: the offset must be a number"};
      off = info[2].As<Napi::Number>().DoubleValue();
    }
    if (dst->device != src->device) throw ArgError{kDevice, "deviceCopy: the buffers live on different devices"};
    if (!(off >= 0) || off != (double)(uint64_t)off || (uint64_t)off + src->bytes > dst->bytes)
      throw ArgError{gk::kShape, "deviceCopy: the source does not fit in the destination at that offset"};
    const uint64_t offset = (uint64_t)off;
    const uint64_t bytes = src->bytes;
    return BufferJob(info, {dst, src}, true,
                     [offset, bytes](gk::cuda::Context* c, const std::vector<void*>& p) {
                       return gk::cuda::copy_device(c, (char*)p[0] + offset, p[1], bytes);
                     },
                     Undefined);
  });
}

// devicePointer(buffer): resolves with the address (allocating a new buffer first).
Napi::Value DevicePointer(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env) -> Napi::Value {
    DevRef m = DevArg(info, 0);
    // Synchronised: the address is then usable from any stream.
    return BufferJob(info, {m}, false, [](gk::cuda::Context* c, const std::vector<void*>&) { return gk::cuda::synchronize(c); },
                     [m](Napi::Env env) { return Napi::BigInt::New(env, (uint64_t)(uintptr_t)m->ptr.load()); });
  });
}

// deviceSynchronize(index) / deviceMemory(index) / deviceResetPeak(index).
Napi::Value DeviceSynchronize(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env env) -> Napi::Value {
    return SubmitDevice(env, Keep(info), DeviceArg(info[0]), [](gk::cuda::Context* c) { return gk::cuda::synchronize(c); },
                        Undefined);
  });
}

Napi::Value DeviceMemory(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env env) -> Napi::Value {
    auto m = std::make_shared<gk::cuda::MemoryInfo>();
    return SubmitDevice(env, Keep(info), DeviceArg(info[0]), [m](gk::cuda::Context* c) { return gk::cuda::memory_info(c, m.get()); },
                        [m](Napi::Env env) {
                          Napi::Object r = Napi::Object::New(env);
                          r.Set("usedBytes", (double)m->used);
                          r.Set("peakBytes", (double)m->peak);
                          r.Set("reservedBytes", (double)m->reserved);
                          r.Set("freeBytes", (double)m->free);
                          r.Set("totalBytes", (double)m->total);
                          return r;
                        });
  });
}

Napi::Value DeviceResetPeak(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env env) -> Napi::Value {
    return SubmitDevice(env, Keep(info), DeviceArg(info[0]), [](gk::cuda::Context* c) { return gk::cuda::reset_peak(c); },
                        Undefined);
  });
}

// deviceLastOpMs(index): GPU time of the last op (or copy) run on the device, in ms.
Napi::Value DeviceLastOpMs(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, gk::cuda::last_op_ms(QueueOf(DeviceArg(info[0])))); });
}

// cpuFloor(bytes): the benchmark's floor (gk::cpu::measure_floor), synchronous (about a second).
Napi::Value CpuFloor(const Napi::CallbackInfo& info) {
  return GuardArgs(info, [&](Napi::Env env) -> Napi::Value {
    if (info.Length() < 1 || !info[0].IsNumber()) throw ArgError{gk::kInvalid, "cpuFloor(bytes): bytes must be a number"};
    const double b = info[0].As<Napi::Number>().DoubleValue();
    if (!(b >= 1048576.0 && b <= 17179869184.0) || b != (double)(int64_t)b)
      throw ArgError{gk::kInvalid, "cpuFloor(bytes): bytes must be an integer in [2^20, 2^34]"};
    gk::cpu::Floor f;
    try {
      f = gk::cpu::measure_floor((size_t)b);
    } catch (const std::bad_alloc& e) {
      throw ArgError{gk::kOom, e.what()};
    }
    Napi::Object r = Napi::Object::New(env);
    r.Set("readGBs", f.read_gbs);
    r.Set("copyGBs", f.copy_gbs);
    r.Set("expGElems", f.exp_gelems);
    r.Set("threads", (double)f.threads);
    return r;
  });
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object r = Napi::Object::New(env);
  r.Set("version", GK_VERSION);
  r.Set("napiVersion", (double)NAPI_VERSION);
  r.Set("threads", (double)gk::cpu::num_threads());
  r.Set("simd", gk::cpu::simd_level());
  Napi::Object c = Napi::Object::New(env);
  c.Set("compiled", gk::cuda::compiled());
  gk::cuda::DeviceInfo d;
  gk::cuda::probe(&d);
  c.Set("emulated", d.emulated);
  c.Set("deviceCount", (double)d.count);
  c.Set("runtimeVersion", (double)d.runtime_version);
  c.Set("driverVersion", (double)d.driver_version);
  c.Set("error", d.error);
  Napi::Array devs = Napi::Array::New(env);
  for (int i = 0; i < d.count && i < 8; ++i) {
    Napi::Object x = Napi::Object::New(env);
    x.Set("index", (double)i);
    x.Set("name", d.names[i]);
    x.Set("computeCapability", std::to_string(d.cc_major[i]) + "." + std::to_string(d.cc_minor[i]));
    x.Set("memoryBytes", (double)d.memory[i]);
    devs.Set((uint32_t)i, x);
  }
  c.Set("devices", devs);
  r.Set("cuda", c);
  return r;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("cpuFloor", Napi::Function::New(env, CpuFloor));
  exports.Set("tokenLogProbs", Napi::Function::New(env, TokenLogProbs));
  exports.Set("tokenLogProbsBackward", Napi::Function::New(env, TokenLogProbsBackward));
  exports.Set("groupAdvantages", Napi::Function::New(env, GroupAdvantages));
  exports.Set("grpoLossStep", Napi::Function::New(env, GrpoLossStep));
  exports.Set("grpoLossFused", Napi::Function::New(env, GrpoLossFused));
  exports.Set("distillLoss", Napi::Function::New(env, DistillLoss));
  exports.Set("sampleTokens", Napi::Function::New(env, SampleTokens));
  exports.Set("bradleyTerryLoss", Napi::Function::New(env, BradleyTerryLoss));
  exports.Set("deviceOpen", Napi::Function::New(env, DeviceOpen));
  exports.Set("deviceAlloc", Napi::Function::New(env, DeviceAlloc));
  exports.Set("deviceWrap", Napi::Function::New(env, DeviceWrap));
  exports.Set("deviceRelease", Napi::Function::New(env, DeviceRelease));
  exports.Set("deviceUpload", Napi::Function::New(env, DeviceUpload));
  exports.Set("deviceDownload", Napi::Function::New(env, DeviceDownload));
  exports.Set("deviceCopy", Napi::Function::New(env, DeviceCopy));
  exports.Set("devicePointer", Napi::Function::New(env, DevicePointer));
  exports.Set("deviceSynchronize", Napi::Function::New(env, DeviceSynchronize));
  exports.Set("deviceMemory", Napi::Function::New(env, DeviceMemory));
  exports.Set("deviceResetPeak", Napi::Function::New(env, DeviceResetPeak));
  exports.Set("deviceLastOpMs", Napi::Function::New(env, DeviceLastOpMs));
  return exports;
}

}  // namespace

NODE_API_MODULE(grpo_kernels, Init)
