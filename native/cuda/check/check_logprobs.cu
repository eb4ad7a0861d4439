// Standalone self-check of the CUDA kernels against the CPU backend and a float64 reference.
// NOT part of the addon (not in native/sources.json). Build and run on a GPU host, from the
// repository root (same flags as the addon build; add more -gencode lines for other GPUs):
/*
  nvcc -std=c++17 -O3 -lineinfo -gencode=arch=compute_90,code=sm_90 \
    -Xcompiler "-O3 -fno-math-errno -fno-trapping-math" -o /tmp/check_logprobs \
    native/cuda/check/check_logprobs.cu native/cuda/logprobs.cu native/cuda/loss.cu native/cuda/fused.cu \
    native/cpu/pool.cc native/cpu/rows.cc native/cpu/logprobs.cc native/cpu/loss.cc native/cpu/fused.cc \
  && /tmp/check_logprobs
*/
// Options: --quick (small shapes only, no benchmark)  --no-bench  --bench-only  --seed=N
// Add -DGK_CUDA_EXACT_EXP to every nvcc line to use the CPU's exp_nonpos in the kernels.
//
// What it checks (exit code 0 only when every line says PASS):
//  * token_logprobs / token_logprobs_backward for V = 1, 33, 1000, 5000, 32000, 151936 (N up to
//    4096, and N = 70000 for a grid-stride check), float32/bfloat16/float16, int32/int64 targets,
//    temperature 1 and 0.7, ignored rows, rows with -inf logits, gl = gh = 0 rows, grad aliasing
//    the logits, logits/grad pointers that are not 16-byte aligned, lse/entropy given or
//    recomputed. Errors are ‖gpu − ref‖ / ‖ref‖ against the CPU backend (all rows) and against a
//    float64 reference (all rows, or a sample of rows for the big shapes), with the tolerances of
//    docs/grpo-math.md. Outputs are poisoned with NaN before each run: an unwritten element fails.
//  * error reporting: bad targets (kTargetRange, smallest row), check_finite (kNonFinite), as the
//    CPU backend reports them.
//  * grpo_loss_step (several surrogates, IS levels, KL estimators, aggregations, entropy quantile,
//    truncation) and grpo_loss_fused against the CPU backend; run-to-run bitwise determinism.
//  * timing (cudaEvents, median of 20) of the forward and backward kernels, with GB/s.
#include "check_common.cuh"

#include "../fused.cuh"
#include "../logprobs.cuh"
#include "../loss.cuh"

using namespace gk;

static uint64_t g_seed = 12345;

// Logits generator: row scale varies (every 5th row 4x larger), rows r % 7 == 3 get about 30% of
// their entries at -inf (never the target), and `nan_row` / `ninf_row` (>= 0) make a row with a
// NaN / an entirely -inf row.
__global__ void gen_logits(void* z, int32_t dt, int64_t n, int64_t v, const int64_t* targets, uint64_t seed,
                           bool masked_inf, int64_t nan_row, int64_t ninf_row) {
  const int64_t total = n * v;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / v, j = i - r * v;
    const uint64_t h = mix64(seed ^ mix64((uint64_t)i));
    float x = approx_normal(h) * ((r % 5 == 1) ? 8.0f : 2.0f);
    if (masked_inf && r % 7 == 3 && j != targets[r] && unit(mix64(h)) < 0.3) x = -INFINITY;
    if (r == ninf_row) x = -INFINITY;
    if (r == nan_row && j == v / 2) x = NAN;
    from_f32(z, dt, i, x);
  }
}

// ------------------------------------------------------------------------------------------------
// Values within 1e-5 (docs/grpo-math.md; gradients: grad_tol). Err counts a NaN where the
// reference has a number (or the reverse) as a mismatch.

constexpr double kFwdTol = 1e-5;

static std::string err_str(const Err& e) { return err_str(e, "NaN"); }

// ------------------------------------------------------------------------------------------------
// float64 reference of spec §1 for one row.

struct RefRow {
  double lse, logp, h;
};
static RefRow ref_row(const void* z, int32_t dt, int64_t r, int64_t v, int64_t y, double temp, std::vector<double>& u) {
  u.resize((size_t)v);
  double m = -INFINITY;
  bool bad = false;
  for (int64_t j = 0; j < v; ++j) {
    u[(size_t)j] = (double)to_f32(z, dt, r * v + j) / temp;
    if (std::isnan(u[(size_t)j]) || u[(size_t)j] == INFINITY) bad = true;
    m = std::max(m, u[(size_t)j]);
  }
  if (bad || m == -INFINITY) return RefRow{NAN, NAN, NAN};
  double s = 0, t = 0;
  for (int64_t j = 0; j < v; ++j) {
    const double e = std::exp(u[(size_t)j] - m);
    s += e;
    if (e > 0) t += e * (u[(size_t)j] - m);
  }
  const double lse = m + std::log(s);
  return RefRow{lse, u[(size_t)y] - lse, std::log(s) - t / s};
}

// ------------------------------------------------------------------------------------------------
// §1 forward/backward cases.

struct Case {
  int64_t n, v;
  int32_t dtype;
  int32_t tdtype;
  float temp;
  bool entropy;       // forward computes entropy; backward has gh
  bool masked_inf;
  int grad_mode;      // 0 separate buffer, 1 grad aliases the logits, 2 separate buffer misaligned vs logits
  int logits_off;     // logits pointer offset in elements (0 or 1)
  bool give_stats;    // backward gets lse/entropy (else recomputes)
};

static void run_case(const Case& c, uint64_t seed) {
  const int64_t n = c.n, v = c.v;
  const size_t es = elem_size(c.dtype);
  const size_t zbytes = (size_t)n * (size_t)v * es;
  Rng rng(seed);

  // Targets: ~10% ignored (-100), the rest uniform in [0, V).
  std::vector<int64_t> y64((size_t)n);
  for (int64_t r = 0; r < n; ++r) y64[(size_t)r] = rng.uniform() < 0.1 ? -100 : rng.below(v);
  std::vector<int32_t> y32(y64.begin(), y64.end());
  std::vector<float> gl((size_t)n), gh((size_t)n);
  for (int64_t r = 0; r < n; ++r) {
    const bool zero = rng.uniform() < 0.1;
    gl[(size_t)r] = zero ? 0.0f : rng.normal();
    gh[(size_t)r] = zero ? 0.0f : 0.3f * rng.normal();
  }

  // Logits generated on the device, copied back for the references.
  DevBuf zbuf(zbytes + 16);
  void* dz = zbuf.as<char>(c.logits_off * es);
  DevBuf dy64(sizeof(int64_t) * (size_t)n);
  upload(dy64, y64);
  gen_logits<<<1024, 256>>>(dz, c.dtype, n, v, dy64.as<int64_t>(), seed, c.masked_inf, -1, -1);
  CK(cudaGetLastError());
  std::vector<uint8_t> hz = download<uint8_t>(dz, zbytes);
  DevBuf dy32(sizeof(int32_t) * (size_t)n);
  upload(dy32, y32);
  const void* dtargets = c.tdtype == kI32 ? dy32.p : dy64.p;
  const void* htargets = c.tdtype == kI32 ? (const void*)y32.data() : (const void*)y64.data();

  // CPU backend.
  std::vector<float> c_logp((size_t)n), c_ent((size_t)n), c_lse((size_t)n);
  LogProbArgs fa;
  fa.in.logits = hz.data();
  fa.in.dtype = c.dtype;
  fa.in.n = n;
  fa.in.v = v;
  fa.in.targets = htargets;
  fa.in.target_dtype = c.tdtype;
  fa.in.temperature = c.temp;
  fa.logp = c_logp.data();
  fa.entropy = c.entropy ? c_ent.data() : nullptr;
  fa.lse = c_lse.data();
  const Status cst = cpu::token_logprobs(fa);
  std::vector<uint8_t> c_grad(zbytes);
  LogProbBackwardArgs ba;
  ba.in = fa.in;
  ba.gl = gl.data();
  ba.gh = c.entropy ? gh.data() : nullptr;
  ba.lse = c.give_stats ? c_lse.data() : nullptr;
  ba.entropy = c.give_stats && c.entropy ? c_ent.data() : nullptr;
  ba.grad = c_grad.data();
  const Status cbst = cpu::token_logprobs_backward(ba);

  // GPU.
  DevBuf d_logp(4 * (size_t)n), d_ent(4 * (size_t)n), d_lse(4 * (size_t)n), d_gl(4 * (size_t)n), d_gh(4 * (size_t)n);
  upload(d_gl, gl);
  upload(d_gh, gh);
  d_logp.poison();
  d_ent.poison();
  d_lse.poison();
  LogProbArgs ga = fa;
  ga.in.logits = dz;
  ga.in.targets = dtargets;
  ga.logp = d_logp.as<float>();
  ga.entropy = c.entropy ? d_ent.as<float>() : nullptr;
  ga.lse = d_lse.as<float>();
  const Status gst = cuda::token_logprobs(ga, 0);
  std::vector<float> g_logp = download<float>(d_logp.p, (size_t)n), g_ent = download<float>(d_ent.p, (size_t)n),
                     g_lse = download<float>(d_lse.p, (size_t)n);

  // Determinism: a second forward gives the same bits.
  d_logp.poison();
  cuda::token_logprobs(ga, 0);
  std::vector<float> g_logp2 = download<float>(d_logp.p, (size_t)n);
  const bool deterministic = memcmp(g_logp.data(), g_logp2.data(), 4 * (size_t)n) == 0;

  // grad_mode 2 (and mode 0 with logits_off 1): grad's 16-byte alignment differs from the logits'
  // (vector loads, scalar stores); mode 0 with logits_off 0: both aligned; mode 1: in place.
  DevBuf gbuf(c.grad_mode == 1 ? 0 : zbytes + 16);
  const int goff = c.grad_mode == 2 ? c.logits_off + 1 : 0;
  void* dg = c.grad_mode == 1 ? dz : gbuf.as<char>(goff * es);
  if (c.grad_mode != 1) CK(cudaMemset(dg, 0xFF, zbytes));
  LogProbBackwardArgs gb = ba;
  gb.in = ga.in;
  gb.gl = d_gl.as<float>();
  gb.gh = c.entropy ? d_gh.as<float>() : nullptr;
  gb.lse = c.give_stats ? d_lse.as<float>() : nullptr;
  gb.entropy = c.give_stats && c.entropy ? d_ent.as<float>() : nullptr;
  gb.grad = dg;
  // The second forward rewrote lse/entropy identically (checked above for logp).
  const Status gbst = cuda::token_logprobs_backward(gb, 0);
  std::vector<uint8_t> g_grad = download<uint8_t>(dg, zbytes);

  // Compare with the CPU backend (all rows).
  Err e_logp, e_ent, e_lse, e_grad;
  for (int64_t r = 0; r < n; ++r) {
    e_logp.add(g_logp[(size_t)r], c_logp[(size_t)r]);
    if (c.entropy) e_ent.add(g_ent[(size_t)r], c_ent[(size_t)r]);
    e_lse.add(g_lse[(size_t)r], c_lse[(size_t)r]);
  }
  for (int64_t i = 0; i < n * v; ++i) e_grad.add(to_f32(g_grad.data(), c.dtype, i), to_f32(c_grad.data(), c.dtype, i));

  // Compare with float64 (all rows up to ~8M elements, else an evenly spaced sample).
  Err f_logp, f_ent, f_grad;
  const int64_t step = std::max<int64_t>(1, (n * v) / 8000000 + 1);
  std::vector<double> u;
  for (int64_t r = 0; r < n; r += (step == 1 ? 1 : step)) {
    const int64_t y = y64[(size_t)r];
    const double glr = gl[(size_t)r], ghr = c.entropy ? gh[(size_t)r] : 0.0;
    if (y == -100) {
      f_logp.add(g_logp[(size_t)r], 0.0);
      for (int64_t j = 0; j < v; ++j) f_grad.add(to_f32(g_grad.data(), c.dtype, r * v + j), 0.0);
      continue;
    }
    const RefRow rr = ref_row(hz.data(), c.dtype, r, v, y, c.temp, u);
    f_logp.add(g_logp[(size_t)r], rr.logp);
    if (c.entropy) f_ent.add(g_ent[(size_t)r], rr.h);
    for (int64_t j = 0; j < v; ++j) {
      double g = 0.0;
      if (glr != 0.0 || ghr != 0.0) {
        const double p = std::exp(u[(size_t)j] - rr.lse);
        g = glr * ((j == y ? 1.0 : 0.0) - p);
        if (p > 0) g -= ghr * p * (u[(size_t)j] - rr.lse + rr.h);
        g /= c.temp;
      }
      f_grad.add(to_f32(g_grad.data(), c.dtype, r * v + j), g);
    }
  }

  const double gt = grad_tol(c.dtype);
  const bool status_ok = gst.code == cst.code && gst.row == cst.row && gbst.code == cbst.code && gbst.row == cbst.row;
  const bool pass = status_ok && deterministic && e_logp.ok(kFwdTol) && e_lse.ok(kFwdTol) && e_ent.ok(kFwdTol) &&
                    f_logp.ok(kFwdTol) && f_ent.ok(kFwdTol) && e_grad.ok(gt) && f_grad.ok(gt);
  static const char* gmode[] = {"sep", "alias", "misal"};
  report(pass,
         "logprobs N=%-6lld V=%-6lld %-4s %s T=%.1f%s%s grad=%-5s off=%d %s | vs cpu: logp %s lse %s H %s grad %s | "
         "vs f64: logp %s H %s grad %s (tol %.0e)%s%s",
         (long long)n, (long long)v, dtype_name(c.dtype), c.tdtype == kI32 ? "i32" : "i64", c.temp,
         c.entropy ? " +H" : "", c.masked_inf ? " -inf" : "", gmode[c.grad_mode], c.logits_off,
         c.give_stats ? "stats" : "recompute", err_str(e_logp).c_str(), err_str(e_lse).c_str(),
         err_str(e_ent).c_str(), err_str(e_grad).c_str(), err_str(f_logp).c_str(), err_str(f_ent).c_str(),
         err_str(f_grad).c_str(), gt, status_ok ? "" : " [status differs]", deterministic ? "" : " [not deterministic]");
  if (!status_ok)
    printf("     cpu fwd %d/%lld bwd %d/%lld, gpu fwd %d/%lld (%s) bwd %d/%lld (%s)\n", cst.code, (long long)cst.row,
           cbst.code, (long long)cbst.row, gst.code, (long long)gst.row, gst.message, gbst.code, (long long)gbst.row,
           gbst.message);
}

// ------------------------------------------------------------------------------------------------
// Error reporting: bad targets and check_finite, compared with the CPU backend's statuses.

static void run_error_case(int64_t n, int64_t v, int32_t dt, uint64_t seed) {
  const size_t es = elem_size(dt), zbytes = (size_t)n * (size_t)v * es;
  Rng rng(seed);
  std::vector<int64_t> y((size_t)n);
  for (auto& t : y) t = rng.below(v);
  y[(size_t)(n / 3)] = v;        // bad
  y[(size_t)(n / 2)] = -5;       // bad (not ignore_index)
  y[(size_t)(n - 1)] = -100;     // ignored
  DevBuf dy(8 * (size_t)n), dz(zbytes);
  upload(dy, y);
  // Forward with check_finite: row n/5 holds a NaN, row n/4 is entirely -inf.
  gen_logits<<<1024, 256>>>(dz.p, dt, n, v, dy.as<int64_t>(), seed, false, n / 5, n / 4);
  CK(cudaGetLastError());
  std::vector<uint8_t> hz = download<uint8_t>(dz.p, zbytes);
  std::vector<float> c_logp((size_t)n), c_lse((size_t)n);
  DevBuf d_logp(4 * (size_t)n), d_lse(4 * (size_t)n), d_gl(4 * (size_t)n), d_grad(zbytes);
  std::vector<float> gl((size_t)n, 1.0f);
  upload(d_gl, gl);

  for (int pass = 0; pass < 2; ++pass) {
    // pass 0: with the bad targets (kTargetRange wins); pass 1: targets fixed (kNonFinite).
    if (pass == 1) {
      y[(size_t)(n / 3)] = 0;
      y[(size_t)(n / 2)] = 1;
      upload(dy, y);
    }
    LogProbArgs a;
    a.in.logits = hz.data();
    a.in.dtype = dt;
    a.in.n = n;
    a.in.v = v;
    a.in.targets = y.data();
    a.in.target_dtype = kI64;
    a.check_finite = true;
    a.logp = c_logp.data();
    a.lse = c_lse.data();
    const Status cs = cpu::token_logprobs(a);
    a.in.logits = dz.p;
    a.in.targets = dy.p;
    a.logp = d_logp.as<float>();
    a.lse = d_lse.as<float>();
    d_logp.poison();
    const Status gs = cuda::token_logprobs(a, 0);
    std::vector<float> g_logp = download<float>(d_logp.p, (size_t)n);
    Err e;
    for (int64_t r = 0; r < n; ++r) e.add(g_logp[(size_t)r], c_logp[(size_t)r]);

    std::vector<uint8_t> c_grad(zbytes);
    LogProbBackwardArgs b;
    b.in = a.in;
    b.in.logits = hz.data();
    b.in.targets = y.data();
    b.gl = gl.data();
    b.grad = c_grad.data();
    const Status cbs = cpu::token_logprobs_backward(b);
    b.in.logits = dz.p;
    b.in.targets = dy.p;
    b.gl = d_gl.as<float>();
    b.grad = d_grad.p;
    d_grad.poison();
    const Status gbs = cuda::token_logprobs_backward(b, 0);
    std::vector<uint8_t> g_grad = download<uint8_t>(d_grad.p, zbytes);
    Err eg;
    for (int64_t i = 0; i < n * v; ++i) eg.add(to_f32(g_grad.data(), dt, i), to_f32(c_grad.data(), dt, i));

    const bool pass_ok = gs.code == cs.code && gs.row == cs.row && cs.code != kOk && gbs.code == cbs.code &&
                         gbs.row == cbs.row && e.ok(kFwdTol) && eg.ok(grad_tol(dt));
    report(pass_ok, "errors   N=%lld V=%lld %s %s: fwd cpu %d row %lld / gpu %d row %lld \"%s\"; bwd cpu %d/%lld gpu %d/%lld; logp %s grad %s",
           (long long)n, (long long)v, dtype_name(dt), pass == 0 ? "bad targets" : "check_finite", cs.code,
           (long long)cs.row, gs.code, (long long)gs.row, gs.message, cbs.code, (long long)cbs.row, gbs.code,
           (long long)gbs.row, err_str(e).c_str(), err_str(eg).c_str());
  }
}

// ------------------------------------------------------------------------------------------------
// Loss step (§3-5) against the CPU backend.

struct LossInputs {
  int64_t S = 0, n = 0;
  std::vector<int64_t> off;
  std::vector<float> logp, old_logp, ref_logp, entropy, adv;
  std::vector<uint8_t> mask, truncated;
};

static LossInputs make_loss_inputs(int64_t S, int64_t max_len, uint64_t seed) {
  Rng rng(seed);
  LossInputs in;
  in.S = S;
  in.off.push_back(0);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t len = (s == 2) ? 0 : 1 + rng.below(max_len);  // one empty sequence
    in.off.push_back(in.off.back() + len);
  }
  in.n = in.off.back();
  for (int64_t t = 0; t < in.n; ++t) {
    const float lp = -3.0f * (float)rng.uniform() * (float)rng.uniform();
    in.logp.push_back(lp);
    in.old_logp.push_back(lp + 0.2f * rng.normal());
    in.ref_logp.push_back(lp + 0.3f * rng.normal());
    in.entropy.push_back((float)(4.0 * rng.uniform() * rng.uniform()));
    in.mask.push_back(rng.uniform() < 0.9 ? 1 : 0);
  }
  for (int64_t s = 0; s < S; ++s) {
    in.adv.push_back(rng.normal());
    in.truncated.push_back(rng.uniform() < 0.2 ? 1 : 0);
  }
  return in;
}

static LossOptions base_options() {
  LossOptions o;
  o.surrogate = kClip;
  o.is_level = kIsToken;
  o.kl = kK3;
  o.aggregation = kSeqMeanTokenMean;
  o.epsilon_low = 0.2;
  o.epsilon_high = 0.2;
  o.delta = 0.0;
  o.tau_pos = 1.0;
  o.tau_neg = 1.05;
  o.beta = 0.0;
  o.entropy_coef = 0.0;
  o.normalizer = 0.0;
  o.max_completion_length = 0.0;
  o.mask_truncated = 0;
  o.top_entropy_quantile = 1.0;
  return o;
}

static bool close_scalar(double got, double ref, double tol) {
  if (std::isnan(got) || std::isnan(ref)) return std::isnan(got) && std::isnan(ref);
  if (std::isinf(got) || std::isinf(ref)) return got == ref;
  return std::fabs(got - ref) <= tol * std::max(std::fabs(ref), 1e-6);
}

static bool metrics_close(const LossMetrics& g, const LossMetrics& c, std::string* why) {
  struct F { const char* name; double a, b; } f[] = {
      {"loss", g.loss, c.loss}, {"tokens", g.tokens, c.tokens}, {"kl", g.kl_mean, c.kl_mean},
      {"ratio", g.ratio_mean, c.ratio_mean}, {"clip_low", g.clip_low, c.clip_low},
      {"clip_high", g.clip_high, c.clip_high}, {"clip", g.clip, c.clip}, {"H", g.entropy_mean, c.entropy_mean},
      {"threshold", g.entropy_threshold, c.entropy_threshold}};
  bool ok = true;
  char b[160];
  for (const F& x : f)
    if (!close_scalar(x.a, x.b, kFwdTol)) {
      ok = false;
      snprintf(b, sizeof(b), " %s gpu %.9g cpu %.9g;", x.name, x.a, x.b);
      *why += b;
    }
  return ok;
}

static void run_loss_case(const char* name, const LossInputs& in, LossOptions o, bool with_old, bool with_ref,
                          bool with_mask, bool with_trunc) {
  const int64_t n = in.n, S = in.S;
  LossStepArgs c;
  c.logp = in.logp.data();
  c.old_logp = with_old ? in.old_logp.data() : nullptr;
  c.ref_logp = with_ref ? in.ref_logp.data() : nullptr;
  c.entropy = in.entropy.data();
  c.advantages = in.adv.data();
  c.seq_offsets = in.off.data();
  c.s = S;
  c.n = n;
  c.mask = with_mask ? in.mask.data() : nullptr;
  c.truncated = with_trunc ? in.truncated.data() : nullptr;
  c.opt = o;
  std::vector<float> c_dlogp((size_t)n), c_dent((size_t)n), c_tl((size_t)n);
  c.dlogp = c_dlogp.data();
  c.dentropy = c_dent.data();
  c.token_loss = c_tl.data();
  const Status cs = cpu::grpo_loss_step(c);

  DevBuf d_logp(4 * n), d_old(4 * n), d_ref(4 * n), d_ent(4 * n), d_adv(4 * S), d_off(8 * (S + 1)), d_mask(n),
      d_tr(S), d_dlogp(4 * n), d_dent(4 * n), d_tl(4 * n);
  upload(d_logp, in.logp);
  upload(d_old, in.old_logp);
  upload(d_ref, in.ref_logp);
  upload(d_ent, in.entropy);
  upload(d_adv, in.adv);
  upload(d_off, in.off);
  upload(d_mask, in.mask);
  upload(d_tr, in.truncated);
  LossStepArgs g = c;
  g.logp = d_logp.as<float>();
  g.old_logp = with_old ? d_old.as<float>() : nullptr;
  g.ref_logp = with_ref ? d_ref.as<float>() : nullptr;
  g.entropy = d_ent.as<float>();
  g.advantages = d_adv.as<float>();
  g.seq_offsets = d_off.as<int64_t>();
  g.mask = with_mask ? d_mask.as<uint8_t>() : nullptr;
  g.truncated = with_trunc ? d_tr.as<uint8_t>() : nullptr;
  g.dlogp = d_dlogp.as<float>();
  g.dentropy = d_dent.as<float>();
  g.token_loss = d_tl.as<float>();
  g.out = LossMetrics{};
  d_dlogp.poison();
  d_dent.poison();
  d_tl.poison();
  const Status gs = cuda::grpo_loss_step(g, 0);
  std::vector<float> g_dlogp = download<float>(d_dlogp.p, n), g_dent = download<float>(d_dent.p, n),
                     g_tl = download<float>(d_tl.p, n);
  LossMetrics first = g.out;
  cuda::grpo_loss_step(g, 0);
  std::vector<float> g_dlogp2 = download<float>(d_dlogp.p, n);
  const bool det = memcmp(&first, &g.out, sizeof(first)) == 0 && memcmp(g_dlogp.data(), g_dlogp2.data(), 4 * n) == 0;

  Err ed, ee, et;
  for (int64_t t = 0; t < n; ++t) {
    ed.add(g_dlogp[t], c_dlogp[t]);
    ee.add(g_dent[t], c_dent[t]);
    et.add(g_tl[t], c_tl[t]);
  }
  std::string why;
  const bool mok = metrics_close(first, c.out, &why);
  const bool pass = gs.code == cs.code && cs.code == kOk && mok && det && ed.ok(kFwdTol) && ee.ok(kFwdTol) &&
                    et.ok(kFwdTol);
  report(pass, "loss     %-28s S=%lld N=%lld loss %.9g (cpu %.9g) thr %.6g | dlogp %s dH %s tok %s%s%s%s",
         name, (long long)S, (long long)n, first.loss, c.out.loss, first.entropy_threshold, err_str(ed).c_str(),
         err_str(ee).c_str(), err_str(et).c_str(), det ? "" : " [not deterministic]", why.c_str(),
         gs.code == cs.code ? "" : " [status differs]");
  if (gs.code != kOk) printf("     gpu: %s\n", gs.message);
}

static void run_loss_layout_errors() {
  // Bad seqOffsets: not ending at N, and decreasing.
  const int64_t n = 10;
  std::vector<float> lp(n, -1.0f), adv(3, 1.0f);
  DevBuf d_lp(4 * n), d_adv(12), d_off(32), d_d(4 * n);
  upload(d_lp, lp);
  upload(d_adv, adv);
  const std::vector<std::vector<int64_t>> offs = {{0, 4, 8, 9}, {0, 6, 4, 10}};
  for (const auto& off : offs) {
    upload(d_off, off);
    LossStepArgs c;
    c.logp = lp.data();
    c.advantages = adv.data();
    c.seq_offsets = off.data();
    c.s = 3;
    c.n = n;
    c.opt = base_options();
    std::vector<float> dl(n);
    c.dlogp = dl.data();
    const Status cs = cpu::grpo_loss_step(c);
    LossStepArgs g = c;
    g.logp = d_lp.as<float>();
    g.advantages = d_adv.as<float>();
    g.seq_offsets = d_off.as<int64_t>();
    g.dlogp = d_d.as<float>();
    const Status gs = cuda::grpo_loss_step(g, 0);
    report(gs.code == cs.code && strcmp(gs.message, cs.message) == 0, "loss     layout error: cpu %d \"%s\" / gpu %d \"%s\"",
           cs.code, cs.message, gs.code, gs.message);
  }
}

// ------------------------------------------------------------------------------------------------
// Fused (§6) against the CPU backend.

static void run_fused_case(int32_t dt, int64_t v, int64_t S, int64_t max_len, bool alias, bool bad_target,
                           LossOptions o, uint64_t seed) {
  LossInputs in = make_loss_inputs(S, max_len, seed);
  const int64_t n = in.n;
  const size_t es = elem_size(dt), zbytes = (size_t)n * (size_t)v * es;
  Rng rng(seed ^ 77);
  std::vector<int64_t> y((size_t)n);
  for (auto& t : y) t = rng.uniform() < 0.05 ? -100 : rng.below(v);
  if (bad_target) y[(size_t)(n / 2)] = v + 3;
  DevBuf dy(8 * (size_t)n), dz(zbytes);
  upload(dy, y);
  gen_logits<<<1024, 256>>>(dz.p, dt, n, v, dy.as<int64_t>(), seed, true, -1, -1);
  CK(cudaGetLastError());
  std::vector<uint8_t> hz = download<uint8_t>(dz.p, zbytes);

  // CPU.
  std::vector<float> c_logp((size_t)n), c_ent((size_t)n), c_lse((size_t)n);
  std::vector<uint8_t> c_grad(zbytes);
  FusedLossArgs c;
  c.fwd.in.logits = hz.data();
  c.fwd.in.dtype = dt;
  c.fwd.in.n = n;
  c.fwd.in.v = v;
  c.fwd.in.targets = y.data();
  c.fwd.in.target_dtype = kI64;
  c.fwd.in.temperature = 0.9f;
  c.fwd.logp = c_logp.data();
  c.fwd.entropy = c_ent.data();
  c.fwd.lse = c_lse.data();
  c.step.old_logp = in.old_logp.data();
  c.step.ref_logp = in.ref_logp.data();
  c.step.advantages = in.adv.data();
  c.step.seq_offsets = in.off.data();
  c.step.s = S;
  c.step.n = n;
  c.step.mask = in.mask.data();
  c.step.truncated = in.truncated.data();
  c.step.opt = o;
  c.grad = c_grad.data();
  const Status cs = cpu::grpo_loss_fused(c);

  // GPU.
  DevBuf d_logp(4 * n), d_ent(4 * n), d_lse(4 * n), d_old(4 * n), d_ref(4 * n), d_adv(4 * S), d_off(8 * (S + 1)),
      d_mask(n), d_tr(S), d_grad(alias ? 0 : zbytes);
  upload(d_old, in.old_logp);
  upload(d_ref, in.ref_logp);
  upload(d_adv, in.adv);
  upload(d_off, in.off);
  upload(d_mask, in.mask);
  upload(d_tr, in.truncated);
  FusedLossArgs g;
  g.fwd = c.fwd;
  g.fwd.in.logits = dz.p;
  g.fwd.in.targets = dy.p;
  g.fwd.logp = d_logp.as<float>();
  g.fwd.entropy = d_ent.as<float>();
  g.fwd.lse = d_lse.as<float>();
  g.step = LossStepArgs{};
  g.step.old_logp = d_old.as<float>();
  g.step.ref_logp = d_ref.as<float>();
  g.step.advantages = d_adv.as<float>();
  g.step.seq_offsets = d_off.as<int64_t>();
  g.step.s = S;
  g.step.n = n;
  g.step.mask = d_mask.as<uint8_t>();
  g.step.truncated = d_tr.as<uint8_t>();
  g.step.opt = o;
  g.grad = alias ? dz.p : d_grad.p;
  if (!alias) d_grad.poison();
  const Status gs = cuda::grpo_loss_fused(g, 0);
  std::vector<uint8_t> g_grad = download<uint8_t>(g.grad, zbytes);

  std::string why;
  bool pass = gs.code == cs.code && gs.row == cs.row;
  Err eg;
  if (cs.code == kOk) {
    pass = pass && metrics_close(g.step.out, c.step.out, &why);
    for (int64_t i = 0; i < n * (int64_t)v; ++i) eg.add(to_f32(g_grad.data(), dt, i), to_f32(c_grad.data(), dt, i));
    pass = pass && eg.ok(grad_tol(dt));
  } else if (alias) {
    // The error must leave the (aliased) logits untouched.
    const bool intact = memcmp(g_grad.data(), hz.data(), zbytes) == 0;
    if (!intact) why += " [aliased logits were modified on error]";
    pass = pass && intact;
  }
  report(pass, "fused    %-4s V=%-6lld S=%lld N=%lld %s%s: cpu %d/%lld gpu %d/%lld loss %.9g (cpu %.9g) grad %s (tol %.0e)%s",
         dtype_name(dt), (long long)v, (long long)S, (long long)n, alias ? "alias" : "sep",
         bad_target ? " bad-target" : "", cs.code, (long long)cs.row, gs.code, (long long)gs.row, g.step.out.loss,
         c.step.out.loss, err_str(eg).c_str(), grad_tol(dt), why.c_str());
}

// ------------------------------------------------------------------------------------------------
// Timing.

static void bench(int64_t n, int64_t v, int32_t dt, uint64_t seed) {
  const size_t es = elem_size(dt), zbytes = (size_t)n * (size_t)v * es;
  Rng rng(seed);
  std::vector<int64_t> y((size_t)n);
  for (auto& t : y) t = rng.below(v);
  std::vector<float> gl((size_t)n), gh((size_t)n);
  for (int64_t r = 0; r < n; ++r) {
    gl[(size_t)r] = rng.normal();
    gh[(size_t)r] = 0.1f * rng.normal();
  }
  DevBuf dz(zbytes), dg(zbytes), dy(8 * n), d_logp(4 * n), d_ent(4 * n), d_lse(4 * n), d_gl(4 * n), d_gh(4 * n),
      d_flags(sizeof(cuda::detail::DeviceFlags));
  upload(dy, y);
  upload(d_gl, gl);
  upload(d_gh, gh);
  gen_logits<<<2048, 256>>>(dz.p, dt, n, v, dy.as<int64_t>(), seed, false, -1, -1);
  CK(cudaGetLastError());
  CK(cudaMemset(d_flags.p, 0xFF, d_flags.bytes));
  auto* flags = d_flags.as<cuda::detail::DeviceFlags>();

  LogProbArgs a;
  a.in.logits = dz.p;
  a.in.dtype = dt;
  a.in.n = n;
  a.in.v = v;
  a.in.targets = dy.p;
  a.in.target_dtype = kI64;
  a.logp = d_logp.as<float>();
  a.entropy = d_ent.as<float>();
  a.lse = d_lse.as<float>();
  LogProbBackwardArgs b;
  b.in = a.in;
  b.gl = d_gl.as<float>();
  b.gh = d_gh.as<float>();
  b.lse = d_lse.as<float>();
  b.entropy = d_ent.as<float>();
  b.grad = dg.p;
  LogProbBackwardArgs br = b;  // recomputing lse/H: one more read
  br.lse = nullptr;
  br.entropy = nullptr;

  const EventPair ev;
  auto time_it = [&](auto&& fn) {
    const float ms = time_median_ms(ev, 3, 20, fn);
    CK(cudaGetLastError());
    return ms;
  };
  const float t_fwd = time_it([&] { cuda::detail::enqueue_token_logprobs(a, flags, 0); });
  const float t_bwd = time_it([&] { cuda::detail::enqueue_token_logprobs_backward(b, nullptr, &flags->bad_target, 0); });
  const float t_bwdr = time_it([&] { cuda::detail::enqueue_token_logprobs_backward(br, nullptr, &flags->bad_target, 0); });
  const float t_api = time_it([&] { cuda::token_logprobs(a, 0); });
  const double fwd_bytes = (double)zbytes + n * (8.0 + 12.0);
  const double bwd_bytes = 2.0 * zbytes + n * (8.0 + 16.0);
  const double bwdr_bytes = 3.0 * zbytes + n * (8.0 + 8.0);
  printf("BENCH %-4s N=%-5lld V=%-6lld  fwd %.3f ms %6.0f GB/s | bwd %.3f ms %6.0f GB/s | bwd+recompute %.3f ms %6.0f GB/s"
         " | fwd via API (alloc+sync) %.3f ms\n",
         dtype_name(dt), (long long)n, (long long)v, t_fwd, fwd_bytes / t_fwd / 1e6, t_bwd, bwd_bytes / t_bwd / 1e6,
         t_bwdr, bwdr_bytes / t_bwdr / 1e6, t_api);
  fflush(stdout);
}

// ------------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
  CheckRun run;
  if (!start_check(argc, argv, &g_seed, kExactExpTag, false, &run)) return 2;
  const int32_t dtypes[3] = {kF32, kBF16, kF16};

  if (!run.bench_only) {
    uint64_t seed = g_seed;
    // Small and medium shapes: every feature combination that matters, for each dtype.
    for (int32_t dt : dtypes) {
      run_case({64, 1, dt, kI64, 1.0f, true, false, 0, 0, true}, ++seed);
      run_case({70000, 1, dt, kI32, 1.0f, true, false, 1, 0, false}, ++seed);
      run_case({1000, 33, dt, kI32, 0.7f, true, true, 0, 1, true}, ++seed);
      run_case({70000, 33, dt, kI64, 1.0f, true, false, 2, 0, false}, ++seed);
      run_case({257, 1000, dt, kI64, 1.0f, false, true, 1, 1, true}, ++seed);
      run_case({300, 2048, dt, kI32, 0.7f, true, true, 2, 1, false}, ++seed);
      run_case({300, 2049, dt, kI64, 1.0f, true, true, 0, 1, true}, ++seed);
      run_case({200, 5000, dt, kI64, 0.7f, true, true, 2, 0, false}, ++seed);
      run_case({100, 40000, dt, kI32, 1.0f, true, true, 1, 1, false}, ++seed);
      run_error_case(300, 1000, dt, ++seed);
      run_error_case(300, 5000, dt, ++seed);
    }
    if (!run.quick) {
      for (int32_t dt : dtypes) {
        run_case({4096, 32000, dt, kI64, 1.0f, true, true, 0, 0, true}, ++seed);
        run_case({2048, 32000, dt, kI32, 0.7f, true, false, 1, 0, false}, ++seed);
        run_case({4096, 151936, dt, kI64, 1.0f, true, true, 1, 0, true}, ++seed);
        run_case({512, 151936, dt, kI32, 0.7f, true, false, 2, 1, false}, ++seed);
      }
    }

    // Loss step.
    const LossInputs li = make_loss_inputs(37, 400, ++seed);
    LossOptions o = base_options();
    run_loss_case("grpo clip/token", li, o, true, false, true, false);
    o.beta = 0.04;
    run_loss_case("grpo + k3 beta", li, o, true, true, true, true);
    o.mask_truncated = 1;
    run_loss_case("grpo + mask_truncated", li, o, true, true, true, true);
    o = base_options();
    o.aggregation = kTokenMean;
    o.epsilon_high = 0.28;
    o.normalizer = 1234.0;
    run_loss_case("dapo tokenMean normalizer", li, o, true, false, true, false);
    o.aggregation = kConstant;
    o.normalizer = 0.0;
    run_loss_case("dr_grpo constant (longest)", li, o, true, false, true, false);
    o.max_completion_length = 512;
    run_loss_case("dr_grpo constant 512", li, o, false, false, false, false);
    o = base_options();
    o.is_level = kIsSequence;
    run_loss_case("gspo sequence", li, o, true, true, true, true);
    o.is_level = kIsSequenceToken;
    o.aggregation = kSeqMeanTokenSum;
    o.delta = 3.0;
    run_loss_case("gspo-token seqSum dual-clip", li, o, true, false, true, false);
    o = base_options();
    o.surrogate = kCispo;
    o.epsilon_high = 5.0;
    o.aggregation = kTokenMean;
    run_loss_case("cispo tokenMean", li, o, true, false, true, false);
    o = base_options();
    o.surrogate = kSapo;
    o.kl = kK2;
    o.beta = 0.1;
    run_loss_case("sapo k2", li, o, true, true, true, false);
    o = base_options();
    o.kl = kK1;
    o.beta = 0.02;
    o.entropy_coef = 0.01;
    o.top_entropy_quantile = 0.2;
    o.mask_truncated = 1;
    run_loss_case("k1 + entropy + q=0.2", li, o, true, true, true, true);
    o.top_entropy_quantile = 0.5;
    run_loss_case("on-policy q=0.5", li, o, false, true, true, true);
    // NaN entropies have no rank in the quantile (CPU semantics); all NaN: nothing ranks.
    LossInputs nan_h = li;
    for (size_t t = 0; t < nan_h.entropy.size(); t += 29) nan_h.entropy[t] = NAN;
    o = base_options();
    o.top_entropy_quantile = 0.4;
    run_loss_case("q=0.4 with NaN entropies", nan_h, o, true, false, true, false);
    for (float& h : nan_h.entropy) h = NAN;
    run_loss_case("q=0.4 all entropies NaN", nan_h, o, true, false, true, false);
    const LossInputs big = make_loss_inputs(1500, 700, ++seed);
    o = base_options();
    o.top_entropy_quantile = 0.8;
    o.beta = 0.04;
    run_loss_case("big S=1500 q=0.8", big, o, true, true, true, true);
    run_loss_layout_errors();

    // Fused.
    for (int32_t dt : dtypes) {
      LossOptions fo = base_options();
      fo.beta = 0.04;
      fo.entropy_coef = 0.01;
      fo.mask_truncated = 1;
      run_fused_case(dt, 33, 9, 50, false, false, fo, ++seed);
      run_fused_case(dt, 5000, 12, 100, true, false, fo, ++seed);
      fo.is_level = kIsSequence;
      fo.entropy_coef = 0.0;
      fo.top_entropy_quantile = 0.3;
      run_fused_case(dt, run.quick ? 5000 : 32000, 8, 256, false, false, fo, ++seed);
      run_fused_case(dt, 2049, 8, 64, true, true, fo, ++seed);
    }
  }

  if (run.do_bench) {
    for (int32_t dt : dtypes) {
      bench(4096, 32000, dt, g_seed + 1000);
      bench(4096, 151936, dt, g_seed + 2000);
    }
  }
  return finish(run);
}
