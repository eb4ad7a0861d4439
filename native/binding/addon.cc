// N-API glue only: unpack arguments, run the op on a libuv worker thread, map native status
// codes to JS errors. No math here.
#include <napi.h>

#include <functional>
#include <memory>
#include <new>
#include <string>

#include "../backend.h"

#ifndef GK_VERSION
#define GK_VERSION "0.0.0"
#endif

namespace {

using gk::Status;

const char* CodeName(int32_t c) {
  switch (c) {
    case gk::kShape: return "GK_SHAPE";
    case gk::kDtype: return "GK_DTYPE";
    case gk::kTargetRange: return "GK_TARGET_RANGE";
    case gk::kNonFinite: return "GK_NONFINITE";
    case gk::kCuda: return "GK_CUDA";
    case gk::kOom: return "GK_OOM";
    case gk::kInvalid: return "GK_INVALID_ARG";
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

struct Arr {
  void* data = nullptr;
  size_t length = 0;
  napi_typedarray_type type = napi_float32_array;
};

bool Has(const Napi::Object& o, const char* key) {
  if (!o.Has(key)) return false;
  Napi::Value v = o.Get(key);
  return !v.IsUndefined() && !v.IsNull();
}

Arr GetArray(const Napi::Object& o, const char* key, const std::initializer_list<napi_typedarray_type>& types,
             size_t expect_len) {
  if (!Has(o, key)) throw ArgError{gk::kInvalid, std::string("missing array argument '") + key + "'"};
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray()) throw ArgError{gk::kDtype, std::string("'") + key + "' must be a typed array"};
  Napi::TypedArray ta = v.As<Napi::TypedArray>();
  Arr a;
  a.type = ta.TypedArrayType();
  bool ok = false;
  for (auto t : types) ok = ok || t == a.type;
  if (!ok) throw ArgError{gk::kDtype, std::string("'") + key + "' has the wrong typed-array type"};
  a.length = ta.ElementLength();
  if (a.length != expect_len)
    throw ArgError{gk::kShape, std::string("'") + key + "' has " + std::to_string(a.length) + " elements, expected " +
                                   std::to_string(expect_len)};
  // napi_get_typedarray_info also covers SharedArrayBuffer-backed arrays.
  void* data = nullptr;
  napi_typedarray_type type;
  size_t len = 0;
  napi_value buf;
  size_t off = 0;
  if (napi_get_typedarray_info(o.Env(), ta, &type, &len, &data, &buf, &off) != napi_ok)
    throw ArgError{gk::kInvalid, std::string("'") + key + "' could not be read"};
  // An empty array may have no storage; point it at a harmless dummy so "given" stays non-null.
  static uint64_t empty_storage[2] = {0, 0};
  a.data = data ? data : (void*)empty_storage;
  return a;
}

template <class T>
T* Opt(const Napi::Object& o, const char* key, std::initializer_list<napi_typedarray_type> types, size_t len) {
  return Has(o, key) ? (T*)GetArray(o, key, types, len).data : nullptr;
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

// a * b as an element count, rejecting products that do not fit.
size_t Count(int64_t a, int64_t b) {
  uint64_t r = 0;
  if (a < 0 || b < 0 || __builtin_mul_overflow((uint64_t)a, (uint64_t)b, &r) || r > ((uint64_t)1 << 48))
    throw ArgError{gk::kShape, "tensor too large: " + std::to_string(a) + " x " + std::to_string(b) + " elements"};
  return (size_t)r;
}

// Runs `work` off the JS thread; resolves with `done(env)` or rejects with a coded error.
class Job : public Napi::AsyncWorker {
 public:
  Job(Napi::Env env, Napi::Object keep, std::function<Status()> work, std::function<Napi::Value(Napi::Env)> done)
      : Napi::AsyncWorker(env, "grpo-kernels"),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        done_(std::move(done)) {
    keep_ = Napi::Persistent(keep);  // keeps every typed array of the call alive
  }
  Napi::Promise Promise() { return deferred_.Promise(); }
  void Execute() override {
    try {
      status_ = work_();
    } catch (const std::bad_alloc&) {
      status_.code = gk::kOom;
      snprintf(status_.message, sizeof(status_.message), "out of host memory");
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

Napi::Value Queue(Napi::Env env, Napi::Object keep, std::function<Status()> work,
                  std::function<Napi::Value(Napi::Env)> done) {
  Job* job = new Job(env, keep, std::move(work), std::move(done));
  Napi::Promise p = job->Promise();
  job->Queue();
  return p;
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

const std::initializer_list<napi_typedarray_type> kF32 = {napi_float32_array};
const std::initializer_list<napi_typedarray_type> kU8 = {napi_uint8_array};
const std::initializer_list<napi_typedarray_type> kU16 = {napi_uint16_array};

// float32 logits arrive as Float32Array, 16-bit ones as Uint16Array of raw bits.
const std::initializer_list<napi_typedarray_type>& LogitsTypes(int32_t dtype) { return dtype == gk::kF32 ? kF32 : kU16; }

// logits (with dtype, n, v), targets, temperature and ignoreIndex.
gk::LogitsView ReadLogitsView(const Napi::Object& o) {
  gk::LogitsView x;
  x.dtype = (int32_t)Int(o, "dtype", gk::kF32);
  x.n = Int(o, "n", 0);
  x.v = Int(o, "v", 0);
  if (x.n < 0 || x.v < 1) throw ArgError{gk::kShape, "logits must have N >= 0 rows and V >= 1 columns"};
  if (x.dtype != gk::kF32 && x.dtype != gk::kF16 && x.dtype != gk::kBF16)
    throw ArgError{gk::kDtype, "logits dtype must be float32, float16 or bfloat16"};
  x.logits = GetArray(o, "logits", LogitsTypes(x.dtype), Count(x.n, x.v)).data;
  Arr t = GetArray(o, "targets", {napi_int32_array, napi_bigint64_array}, (size_t)x.n);
  x.targets = t.data;
  x.target_dtype = t.type == napi_int32_array ? gk::kI32 : gk::kI64;
  x.temperature = (float)Num(o, "temperature", 1.0);
  if (!(x.temperature > 0.0f)) throw ArgError{gk::kInvalid, "temperature must be > 0"};
  x.ignore_index = Int(o, "ignoreIndex", -100);
  return x;
}

void ReadForward(const Napi::Object& o, gk::LogProbArgs* a) {
  a->in = ReadLogitsView(o);
  a->check_finite = Has(o, "checkFinite") && o.Get("checkFinite").ToBoolean().Value();
}

Napi::Value TokenLogProbs(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto a = std::make_shared<gk::LogProbArgs>();
    ReadForward(o, a.get());
    const size_t n = (size_t)a->in.n;
    a->logp = (float*)GetArray(o, "logp", kF32, n).data;
    a->entropy = Opt<float>(o, "entropy", kF32, n);
    a->lse = Opt<float>(o, "lse", kF32, n);
    return Queue(env, o, [a] { return gk::cpu::token_logprobs(*a); }, Undefined);
  });
}

Napi::Value TokenLogProbsBackward(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto a = std::make_shared<gk::LogProbBackwardArgs>();
    a->in = ReadLogitsView(o);
    const size_t n = (size_t)a->in.n;
    a->gl = Opt<float>(o, "gradLogp", kF32, n);
    a->gh = Opt<float>(o, "gradEntropy", kF32, n);
    a->lse = Opt<float>(o, "lse", kF32, n);
    a->entropy = Opt<float>(o, "entropy", kF32, n);
    a->grad = GetArray(o, "grad", LogitsTypes(a->in.dtype), Count(a->in.n, a->in.v)).data;
    return Queue(env, o, [a] { return gk::cpu::token_logprobs_backward(*a); }, Undefined);
  });
}

Napi::Value GroupAdvantages(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto a = std::make_shared<gk::AdvantageArgs>();
    a->k = Int(o, "k", 1);
    a->n = Int(o, "n", 0);
    a->group = Int(o, "groupSize", 1);
    if (a->k < 1 || a->n < 1 || a->group < 1 || a->n % a->group != 0)
      throw ArgError{gk::kShape, "rewards must be k >= 1 functions of n samples, n divisible by groupSize"};
    a->rewards = (const double*)GetArray(o, "rewards", {napi_float64_array}, Count(a->k, a->n)).data;
    a->weights = Opt<double>(o, "weights", {napi_float64_array}, (size_t)a->k);
    a->opt.scale = Enum(o, "scale", gk::kScaleGroup, 3);
    a->opt.estimator = Enum(o, "estimator", gk::kEstGrpo, 2);
    a->opt.eps = Num(o, "eps", 1e-4);
    a->advantages = (float*)GetArray(o, "advantages", kF32, (size_t)a->n).data;
    a->combined = (double*)GetArray(o, "combined", {napi_float64_array}, (size_t)a->n).data;
    const size_t groups = (size_t)(a->n / a->group);
    a->group_mean = Opt<double>(o, "groupMean", {napi_float64_array}, groups);
    a->group_std = Opt<double>(o, "groupStd", {napi_float64_array}, groups);
    return Queue(env, o, [a] { return gk::cpu::group_advantages(*a); },
                 [a](Napi::Env env) { return Napi::Number::New(env, (double)a->zero_variance_groups); });
  });
}

void ReadLossOptions(const Napi::Object& root, gk::LossOptions* o) {
  if (!Has(root, "options") || !root.Get("options").IsObject()) throw ArgError{gk::kInvalid, "missing 'options'"};
  Napi::Object p = root.Get("options").As<Napi::Object>();
  o->surrogate = Enum(p, "surrogate", gk::kClip, 3);
  o->is_level = Enum(p, "importanceSamplingLevel", gk::kIsToken, 3);
  o->kl = Enum(p, "klEstimator", gk::kK3, 3);
  o->aggregation = Enum(p, "aggregation", gk::kSeqMeanTokenMean, 4);
  o->epsilon_low = Num(p, "epsilonLow", 0.2);
  o->epsilon_high = Num(p, "epsilonHigh", 0.2);
  o->delta = Num(p, "delta", 0.0);
  o->tau_pos = Num(p, "tauPos", 1.0);
  o->tau_neg = Num(p, "tauNeg", 1.05);
  o->beta = Num(p, "beta", 0.0);
  o->entropy_coef = Num(p, "entropyCoef", 0.0);
  o->normalizer = Num(p, "normalizer", 0.0);
  o->max_completion_length = Num(p, "maxCompletionLength", 0.0);
  o->mask_truncated = Has(p, "maskTruncatedCompletions") && p.Get("maskTruncatedCompletions").ToBoolean().Value();
  o->top_entropy_quantile = Num(p, "topEntropyQuantile", 1.0);
  if (!(o->top_entropy_quantile > 0.0 && o->top_entropy_quantile <= 1.0))
    throw ArgError{gk::kInvalid, "'topEntropyQuantile' must be in (0, 1]"};
}

// The sequence layout and per-token inputs shared by the step and the fused op.
void ReadLossInputs(const Napi::Object& o, int64_t n, gk::LossStepArgs* s) {
  s->n = n;
  s->s = Int(o, "s", 0);
  if (s->s < 1) throw ArgError{gk::kShape, "at least one sequence is required"};
  s->seq_offsets = (const int64_t*)GetArray(o, "seqOffsets", {napi_bigint64_array}, (size_t)s->s + 1).data;
  s->advantages = (const float*)GetArray(o, "advantages", kF32, (size_t)s->s).data;
  s->old_logp = Opt<float>(o, "oldLogp", kF32, (size_t)n);
  s->ref_logp = Opt<float>(o, "refLogp", kF32, (size_t)n);
  s->mask = Opt<uint8_t>(o, "mask", kU8, (size_t)n);
  s->truncated = Opt<uint8_t>(o, "truncated", kU8, (size_t)s->s);
  s->token_loss = Opt<float>(o, "tokenLoss", kF32, (size_t)n);
  ReadLossOptions(o, &s->opt);
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
  return r;
}

Napi::Value GrpoLossStep(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto s = std::make_shared<gk::LossStepArgs>();
    const int64_t n = Int(o, "n", 0);
    s->logp = (const float*)GetArray(o, "logp", kF32, (size_t)n).data;
    s->entropy = Opt<float>(o, "entropy", kF32, (size_t)n);
    ReadLossInputs(o, n, s.get());
    s->dlogp = (float*)GetArray(o, "dlogp", kF32, (size_t)n).data;
    s->dentropy = Opt<float>(o, "dentropy", kF32, (size_t)n);
    return Queue(env, o, [s] { return gk::cpu::grpo_loss_step(*s); },
                 [s](Napi::Env env) { return MetricsObject(env, s->out); });
  });
}

Napi::Value GrpoLossFused(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto a = std::make_shared<gk::FusedLossArgs>();
    ReadForward(o, &a->fwd);
    const size_t n = (size_t)a->fwd.in.n;
    a->fwd.logp = (float*)GetArray(o, "logp", kF32, n).data;
    a->fwd.entropy = (float*)GetArray(o, "entropy", kF32, n).data;
    a->fwd.lse = (float*)GetArray(o, "lse", kF32, n).data;
    ReadLossInputs(o, a->fwd.in.n, &a->step);
    a->grad = GetArray(o, "grad", LogitsTypes(a->fwd.in.dtype), Count(a->fwd.in.n, a->fwd.in.v)).data;
    return Queue(env, o, [a] { return gk::cpu::grpo_loss_fused(*a); },
                 [a](Napi::Env env) { return MetricsObject(env, a->step.out); });
  });
}

Napi::Value DistillLoss(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto a = std::make_shared<gk::DistillArgs>();
    a->n = Int(o, "n", 0);
    a->v = Int(o, "v", 0);
    if (a->n < 0 || a->v < 1) throw ArgError{gk::kShape, "logits must have N >= 0 rows and V >= 1 columns"};
    a->student_dtype = (int32_t)Int(o, "studentDtype", gk::kF32);
    a->teacher_dtype = (int32_t)Int(o, "teacherDtype", gk::kF32);
    for (int32_t d : {a->student_dtype, a->teacher_dtype})
      if (d != gk::kF32 && d != gk::kF16 && d != gk::kBF16) throw ArgError{gk::kDtype, "logits dtype must be float32, float16 or bfloat16"};
    const size_t nv = Count(a->n, a->v), n = (size_t)a->n;
    a->student = GetArray(o, "student", LogitsTypes(a->student_dtype), nv).data;
    a->teacher = GetArray(o, "teacher", LogitsTypes(a->teacher_dtype), nv).data;
    if (Has(o, "targets")) {
      Arr t = GetArray(o, "targets", {napi_int32_array, napi_bigint64_array}, n);
      a->targets = t.data;
      a->target_dtype = t.type == napi_int32_array ? gk::kI32 : gk::kI64;
    }
    a->ignore_index = Int(o, "ignoreIndex", -100);
    a->mask = Opt<uint8_t>(o, "mask", kU8, n);
    a->s = Int(o, "s", 0);
    if (a->s < 1) throw ArgError{gk::kShape, "at least one sequence is required"};
    a->seq_offsets = (const int64_t*)GetArray(o, "seqOffsets", {napi_bigint64_array}, (size_t)a->s + 1).data;
    a->divergence = Enum(o, "divergence", gk::kForwardKl, 3);
    a->beta = Num(o, "beta", 0.5);
    if (a->divergence == gk::kJsd && !(a->beta > 0.0 && a->beta < 1.0)) throw ArgError{gk::kInvalid, "'beta' must be in (0, 1)"};
    a->temperature = (float)Num(o, "temperature", 1.0);
    if (!(a->temperature > 0.0f)) throw ArgError{gk::kInvalid, "temperature must be > 0"};
    a->hard_label_weight = Num(o, "hardLabelWeight", 0.0);
    if (a->hard_label_weight != 0.0 && !a->targets) throw ArgError{gk::kInvalid, "hardLabelWeight needs targets"};
    a->aggregation = Enum(o, "aggregation", gk::kTokenMean, 4);
    a->normalizer = Num(o, "normalizer", 0.0);
    a->max_completion_length = Num(o, "maxCompletionLength", 0.0);
    if (Has(o, "grad")) a->grad = GetArray(o, "grad", LogitsTypes(a->student_dtype), nv).data;
    a->row_loss = Opt<float>(o, "rowLoss", kF32, n);
    return Queue(env, o, [a] { return gk::cpu::distill_loss(*a); }, [a](Napi::Env env) {
      Napi::Object r = Napi::Object::New(env);
      r.Set("loss", a->loss);
      r.Set("tokens", a->tokens);
      return r;
    });
  });
}

Napi::Value SampleTokens(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto a = std::make_shared<gk::SampleArgs>();
    // No targets for sampling: read the logits part of the view only.
    gk::LogitsView& x = a->in;
    x.dtype = (int32_t)Int(o, "dtype", gk::kF32);
    x.n = Int(o, "n", 0);
    x.v = Int(o, "v", 0);
    if (x.n < 0 || x.v < 1 || x.v > INT32_MAX) throw ArgError{gk::kShape, "logits must have N >= 0 rows and 1 <= V < 2^31 columns"};
    if (x.dtype != gk::kF32 && x.dtype != gk::kF16 && x.dtype != gk::kBF16)
      throw ArgError{gk::kDtype, "logits dtype must be float32, float16 or bfloat16"};
    x.logits = GetArray(o, "logits", LogitsTypes(x.dtype), Count(x.n, x.v)).data;
    x.temperature = (float)Num(o, "temperature", 1.0);
    if (!(x.temperature > 0.0f)) throw ArgError{gk::kInvalid, "temperature must be > 0"};
    a->greedy = Has(o, "greedy") && o.Get("greedy").ToBoolean().Value();
    a->top_k = Int(o, "topK", 0);
    a->top_p = Num(o, "topP", 1.0);
    a->min_p = Num(o, "minP", 0.0);
    if (a->top_k < 0 || !(a->top_p > 0.0 && a->top_p <= 1.0) || !(a->min_p >= 0.0 && a->min_p < 1.0))
      throw ArgError{gk::kInvalid, "need topK >= 0, 0 < topP <= 1, 0 <= minP < 1"};
    a->seed = (uint64_t)Int(o, "seed", 0);
    a->step = (uint64_t)Int(o, "step", 0);
    a->row_offset = Int(o, "rowOffset", 0);
    const size_t n = (size_t)x.n;
    a->row_ids = Opt<int64_t>(o, "rowIds", {napi_bigint64_array}, n);
    a->tokens = (int32_t*)GetArray(o, "tokens", {napi_int32_array}, n).data;
    a->logp = (float*)GetArray(o, "logp", kF32, n).data;
    a->logp_truncated = (float*)GetArray(o, "logpTruncated", kF32, n).data;
    return Queue(env, o, [a] { return gk::cpu::sample_tokens(*a); }, Undefined);
  });
}

Napi::Value BradleyTerryLoss(const Napi::CallbackInfo& info) {
  return Guard(info, [](Napi::Env env, Napi::Object o) {
    auto a = std::make_shared<gk::PreferenceArgs>();
    a->n = Int(o, "n", 0);
    if (a->n < 1) throw ArgError{gk::kShape, "at least one preference pair is required"};
    const size_t n = (size_t)a->n;
    a->chosen = (const float*)GetArray(o, "chosen", kF32, n).data;
    a->rejected = (const float*)GetArray(o, "rejected", kF32, n).data;
    a->margins = Opt<float>(o, "margins", kF32, n);
    a->margin = Num(o, "margin", 0.0);
    a->sum = Has(o, "sum") && o.Get("sum").ToBoolean().Value();
    a->grad_chosen = (float*)GetArray(o, "gradChosen", kF32, n).data;
    a->grad_rejected = (float*)GetArray(o, "gradRejected", kF32, n).data;
    return Queue(env, o, [a] { return gk::cpu::bradley_terry_loss(*a); }, [a](Napi::Env env) {
      Napi::Object r = Napi::Object::New(env);
      r.Set("loss", a->loss);
      r.Set("accuracy", a->accuracy);
      r.Set("meanMargin", a->mean_margin);
      return r;
    });
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
  exports.Set("tokenLogProbs", Napi::Function::New(env, TokenLogProbs));
  exports.Set("tokenLogProbsBackward", Napi::Function::New(env, TokenLogProbsBackward));
  exports.Set("groupAdvantages", Napi::Function::New(env, GroupAdvantages));
  exports.Set("grpoLossStep", Napi::Function::New(env, GrpoLossStep));
  exports.Set("grpoLossFused", Napi::Function::New(env, GrpoLossFused));
  exports.Set("distillLoss", Napi::Function::New(env, DistillLoss));
  exports.Set("sampleTokens", Napi::Function::New(env, SampleTokens));
  exports.Set("bradleyTerryLoss", Napi::Function::New(env, BradleyTerryLoss));
  return exports;
}

}  // namespace

NODE_API_MODULE(grpo_kernels, Init)
