// Standalone self-check of the CUDA distillation loss (native/cuda/distill.cu) against the CPU backend
// (gk::cpu::distill_loss) and a float64 reference of spec §7. NOT part of the addon (not in
// native/sources.json). Build on a GPU host, from the repository root, with the one-line command
// below (one line, so that scripts/gpu-check.sh can take it from here; for other GPUs change the
// -gencode), then run /tmp/check_distill:
/*
  nvcc -std=c++17 -O3 -lineinfo -gencode=arch=compute_90,code=sm_90 -Xcompiler "-O3 -fno-math-errno -fno-trapping-math" -o /tmp/check_distill native/cuda/check/check_distill.cu native/cuda/distill.cu native/cpu/pool.cc native/cpu/rows.cc native/cpu/distill.cc -lpthread
*/
// Options: --quick (small shapes only, no benchmark)  --no-bench  --bench-only  --seed=N
// Variants (add to every nvcc line): -DGK_CUDA_EXACT_EXP (the CPU's exp_nonpos in the kernels);
// -DGK_DISTILL_MAX_GRID=3 (a 3-block grid: exercises the row kernel's grid-stride loop; run with
// --no-bench); -DGK_DISTILL_ROW_THREADS=256 (the long-row block size, a tuning knob).
//
// What it checks (exit code 0 only when every line says PASS):
//  * cuda::distill_loss against cpu::distill_loss on fresh random logits (normal, scale 3, never
//    zeros): V = 1, 7, 33, 1001, 4096, 4097, 32000 and 151936 (a few rows), all three divergences,
//    temperature 1 and 0.7, hard-label weight 0 and 0.3, every aggregation (with and without a
//    normalizer / maxCompletionLength), int32 / int64 / no targets, ignored rows, masked rows,
//    empty sequences, teacher rows with -inf entries and rows whose vocabulary is masked (-inf) in
//    both, student/teacher dtypes mixed (f32/bf16/f16), grad in a separate buffer, aliasing the
//    student, offset by one element from the student, or absent (loss only), row_loss present or
//    absent, student/teacher row starts that are not 16-byte aligned (and aligned differently), and
//    teachers close to the student (KL ~ 0.01: the regime where float32 rounding matters most).
//    Every element of grad and row_loss, the loss and the token count are compared: ‖gpu − ref‖ /
//    ‖ref‖ with docs/grpo-math.md's tolerances (values 1e-5; gradients 1e-5 / 1e-3 / 8e-3 for a
//    float32 / float16 / bfloat16 student), against the CPU backend and against float64 (every
//    row up to ~4M elements, else a sample; gradients against float64 rounded to the student
//    dtype). Outputs are poisoned (NaN bits) before every run, so an unwritten element fails;
//    NaN/inf must sit exactly where the CPU has them.
//  * run-to-run determinism: a second run gives the same bits (grad, row_loss, loss).
//  * errors, as the CPU reports them (code, row, message): a target outside [0, V) (kTargetRange,
//    smallest row; nothing written: the aliased student, row_loss and the scalars stay as they
//    were), bad seqOffsets (kShape: end != N, start != 0, decreasing; also together with a bad
//    target), non-finite rows (kNonFinite, smallest row, everything written), N = 0.
//  * timing (cudaEvents, median of 15, the op's GPU span including its small kernels) at N = 8192,
//    V = 151936, bfloat16 student and teacher: GB/s over the bytes of the passes the kernel makes
//    (forward/reverse KL with grad: 2 reads of each input + 1 write; without grad: 1 read of each;
//    JSD: 3 reads of each + 1 write, 2 reads without grad), next to a device-to-device copy.
#include "check_common.cuh"

#include "../distill.cuh"

using namespace gk;

static uint64_t g_seed = 2024;

static const char* div_name(int32_t d) { return d == kForwardKl ? "fwdKL" : (d == kReverseKl ? "revKL" : "jsd"); }
static const char* agg_name(int32_t a) {
  return a == kSeqMeanTokenMean ? "smtm" : (a == kTokenMean ? "tmean" : (a == kConstant ? "const" : "smts"));
}

// Logits z[n, v] = scale·N(0, 1), or (with `base`) base + noise·N(0, 1) (a teacher close to the
// student). inf_mode: rows r % 7 == 3 get ~30% -inf entries (never at the row's target); rows
// r % 5 == 2 get ~20% -inf entries at columns shared by student and teacher (masked vocabulary).
__global__ void gen_logits(void* z, int32_t dt, int64_t n, int64_t v, uint64_t seed, float scale, const void* base,
                           int32_t base_dt, float noise, bool inf_mode, bool is_teacher, const int64_t* targets) {
  const int64_t total = n * v;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / v, j = i - r * v;
    const uint64_t h = mix64(seed ^ mix64((uint64_t)i));
    float x = base ? to_f32(base, base_dt, i) + noise * approx_normal(h) : scale * approx_normal(h);
    if (inf_mode && v > 1) {
      const int64_t y = targets ? targets[r] : -1;
      if (is_teacher && r % 7 == 3 && j != y && unit(mix64(h ^ 0x51)) < 0.3) x = -INFINITY;
      if (r % 5 == 2 && j != y && j != 0 && unit(mix64((uint64_t)i * 0x9E37u + 0x77)) < 0.2) x = -INFINITY;
    }
    from_f32(z, dt, i, x);
  }
}

// ------------------------------------------------------------------------------------------------
// Values within 1e-5 (docs/grpo-math.md; gradients: grad_tol). Err: NaN or inf must match exactly.

constexpr double kValueTol = 1e-5;

static std::string err_str(const Err& e) { return err_str(e, "nonfinite mismatches"); }

static bool same_scalar(double a, double b, double tol) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  if (std::isinf(a) || std::isinf(b)) return a == b;
  return std::fabs(a - b) <= tol * std::max(std::fabs(b), 1e-300) || a == b;
}

// ------------------------------------------------------------------------------------------------
// float64 reference of spec §7 for one row (test/reference/distill.ts): the row value and
// ∂value/∂u_S (the caller applies w / T).

struct RefRow {
  double value;
  std::vector<double> grad;
};
static RefRow ref_row(const void* zs, int32_t sdt, const void* zt, int32_t tdt, int64_t r, int64_t v, double T,
                      int32_t div, double b, double hw, int64_t y) {
  std::vector<double> ls(v), lt(v), ps(v), pt(v), lm(v, -INFINITY);
  auto lsm = [&](const void* z, int32_t dt, std::vector<double>& l) {
    double m = -INFINITY;
    for (int64_t j = 0; j < v; ++j) {
      l[j] = (double)to_f32(z, dt, r * v + j) / T;
      m = std::max(m, l[j]);
    }
    double s = 0;
    for (int64_t j = 0; j < v; ++j) s += std::exp(l[j] - m);
    const double lse = m + std::log(s);
    for (int64_t j = 0; j < v; ++j) l[j] -= lse;
  };
  lsm(zs, sdt, ls);
  lsm(zt, tdt, lt);
  for (int64_t j = 0; j < v; ++j) {
    ps[j] = std::exp(ls[j]);
    pt[j] = std::exp(lt[j]);
  }
  auto xl = [](double x, double lx, double ly) { return x > 0 ? x * (lx - ly) : 0.0; };
  double d = 0, kl = 0;
  for (int64_t j = 0; j < v; ++j) {
    if (div == kForwardKl) d += xl(pt[j], lt[j], ls[j]);
    else if (div == kReverseKl) d += xl(ps[j], ls[j], lt[j]);
    else {
      const double m = b * pt[j] + (1 - b) * ps[j];
      lm[j] = m > 0 ? std::log(m) : -INFINITY;
      d += b * xl(pt[j], lt[j], lm[j]) + (1 - b) * xl(ps[j], ls[j], lm[j]);
      kl += xl(ps[j], ls[j], lm[j]);
    }
  }
  RefRow rr;
  rr.value = d + (y >= 0 ? hw * -ls[y] : 0.0);
  rr.grad.resize(v);
  for (int64_t j = 0; j < v; ++j) {
    double g;
    if (div == kForwardKl) g = ps[j] - pt[j];
    else if (div == kReverseKl) g = ps[j] > 0 ? ps[j] * (ls[j] - lt[j] - d) : 0;
    else g = ps[j] > 0 ? (1 - b) * ps[j] * (ls[j] - lm[j] - kl) : 0;
    if (y >= 0) g += hw * (ps[j] - (j == y ? 1 : 0));
    rr.grad[j] = g;
  }
  return rr;
}

// The CPU's row weights (spec §4), for the float64 loss.
static std::vector<double> row_weights(const std::vector<int64_t>& off, const std::vector<uint8_t>* mask,
                                       const std::vector<int64_t>* y, int64_t ignore, int32_t agg, double normalizer,
                                       double mcl) {
  const int64_t S = (int64_t)off.size() - 1, n = off.back();
  std::vector<double> w((size_t)n, 0.0), count((size_t)S, 0.0);
  double tokens = 0, longest = 0;
  for (int64_t s = 0; s < S; ++s) {
    longest = std::max(longest, (double)(off[s + 1] - off[s]));
    for (int64_t t = off[s]; t < off[s + 1]; ++t) {
      const bool ok = (!mask || (*mask)[t]) && !(y && (*y)[t] == ignore);
      w[t] = ok;
      count[s] += ok;
    }
    tokens += count[s];
  }
  LossOptions o{};
  o.aggregation = agg;
  o.normalizer = normalizer;
  o.max_completion_length = mcl;
  for (int64_t s = 0; s < S; ++s) {
    const double ws = aggregation_weight(o, count[s], (double)S, tokens, longest);
    for (int64_t t = off[s]; t < off[s + 1]; ++t) w[t] *= ws;
  }
  return w;
}

// ------------------------------------------------------------------------------------------------
// Cases against the CPU backend and float64.

struct Case {
  int64_t S, max_len, v;
  int32_t sdt, tdt;
  int32_t ydt;        // kI32, kI64, or -1: no targets
  int32_t div;
  double beta;
  float temp;
  double hw;
  int32_t agg;
  double normalizer;  // tokenMean: 0 = Σ m
  double mcl;         // constant: 0 = longest
  bool masked;        // ~20% rows masked out
  bool ignored;       // ~10% rows ignore_index
  bool inf_mode;      // -inf entries (teacher rows r%7==3; shared masked vocabulary rows r%5==2)
  bool close;         // teacher = student + 0.3·N(0, 1)
  int s_off, t_off;   // element offsets of the student / teacher base pointers
  int grad_mode;      // 0 none (loss only), 1 separate, 2 aliases the student, 3 separate + 1 element
  bool row_loss;
};

static std::string case_name(const Case& c) {
  char b[256];
  snprintf(b, sizeof(b), "%s/%s V=%lld S=%lld %s b=%.2g T=%.2g hw=%.2g %s%s%s%s%s%s%s%s off=%d/%d %s%s", dtype_name(c.sdt),
           dtype_name(c.tdt), (long long)c.v, (long long)c.S, div_name(c.div), c.beta, c.temp, c.hw, agg_name(c.agg),
           c.normalizer > 0 ? "+norm" : "", c.mcl > 0 ? "+mcl" : "", c.ydt < 0 ? " noy" : (c.ydt == kI32 ? " y32" : " y64"),
           c.masked ? " mask" : "", c.ignored ? " ign" : "", c.inf_mode ? " -inf" : "", c.close ? " close" : "", c.s_off,
           c.t_off, c.grad_mode == 0 ? "nograd" : (c.grad_mode == 1 ? "grad" : (c.grad_mode == 2 ? "inplace" : "grad+1")),
           c.row_loss ? "" : " norow");
  return b;
}

static void run_case(const Case& c, uint64_t seed) {
  Rng rng(seed);
  const int64_t v = c.v;
  const int64_t ignore = -100;
  // Sequences of 0..max_len rows (the first one non-empty).
  std::vector<int64_t> off(1, 0);
  for (int64_t s = 0; s < c.S; ++s) {
    int64_t len = rng.below(c.max_len + 1);
    if (s == 0 && len == 0) len = 1;
    off.push_back(off.back() + len);
  }
  const int64_t n = off.back();
  std::vector<int64_t> y64((size_t)n);
  for (int64_t r = 0; r < n; ++r) y64[r] = (c.ignored && rng.uniform() < 0.1) ? ignore : rng.below(v);
  std::vector<int32_t> y32(y64.begin(), y64.end());
  std::vector<uint8_t> mask((size_t)n, 1);
  if (c.masked)
    for (int64_t r = 0; r < n; ++r) mask[r] = rng.uniform() < 0.2 ? 0 : (uint8_t)(1 + rng.below(200));
  const bool has_y = c.ydt >= 0;

  // Logits on the device (student first: a close teacher is built from its stored values).
  const size_t ess = elem_size(c.sdt), est = elem_size(c.tdt);
  const size_t sbytes = (size_t)n * v * ess, tbytes = (size_t)n * v * est;
  DevBuf sbuf(sbytes + 64), tbuf(tbytes + 64), pristine(sbytes + 64), dy64(8 * (size_t)n + 8), dy32(4 * (size_t)n + 4),
      dmask((size_t)n + 1), doff(8 * off.size()), drow(4 * (size_t)n + 4);
  void* dzs = sbuf.as<char>(c.s_off * ess);
  void* dzt = tbuf.as<char>(c.t_off * est);
  upload(dy64.p, y64);
  upload(dy32.p, y32);
  upload(dmask.p, mask);
  upload(doff.p, off);
  if (n * v > 0) {
    gen_logits<<<1024, 256>>>(dzs, c.sdt, n, v, seed * 3 + 1, 3.0f, nullptr, c.sdt, 0.0f, c.inf_mode, false,
                              dy64.as<int64_t>());
    gen_logits<<<1024, 256>>>(dzt, c.tdt, n, v, seed * 3 + 2, 3.0f, c.close ? dzs : nullptr, c.sdt, 0.3f, c.inf_mode,
                              true, dy64.as<int64_t>());
    CK(cudaGetLastError());
  }
  CK(cudaMemcpy(pristine.p, sbuf.p, sbuf.bytes, cudaMemcpyDeviceToDevice));
  std::vector<uint8_t> hs = download<uint8_t>(dzs, sbytes), ht = download<uint8_t>(dzt, tbytes);

  // CPU backend on the same bytes.
  DistillArgs ca;
  ca.student = hs.data();
  ca.student_dtype = c.sdt;
  ca.teacher = ht.data();
  ca.teacher_dtype = c.tdt;
  ca.n = n;
  ca.v = v;
  ca.targets = has_y ? (c.ydt == kI32 ? (const void*)y32.data() : (const void*)y64.data()) : nullptr;
  ca.target_dtype = has_y ? c.ydt : kI64;
  ca.ignore_index = ignore;
  ca.mask = c.masked ? mask.data() : nullptr;
  ca.seq_offsets = off.data();
  ca.s = c.S;
  ca.divergence = c.div;
  ca.beta = c.beta;
  ca.temperature = c.temp;
  ca.hard_label_weight = has_y ? c.hw : 0.0;
  ca.aggregation = c.agg;
  ca.normalizer = c.normalizer;
  ca.max_completion_length = c.mcl;
  std::vector<uint8_t> c_grad(c.grad_mode ? sbytes : 0);
  std::vector<float> c_row((size_t)n);
  ca.grad = c.grad_mode ? c_grad.data() : nullptr;
  ca.row_loss = c_row.data();  // always (the CPU's outputs do not depend on it): the float64 check skips its non-finite rows
  const Status cst = cpu::distill_loss(ca);

  // GPU, twice (determinism). Outputs poisoned with NaN bits; the scalars with a sentinel.
  DevBuf gbuf(c.grad_mode == 1 || c.grad_mode == 3 ? sbytes + 64 : 0);
  void* dg = nullptr;
  if (c.grad_mode == 1) dg = gbuf.as<char>(c.s_off * ess);
  if (c.grad_mode == 2) dg = dzs;
  if (c.grad_mode == 3) dg = gbuf.as<char>((c.s_off + 1) * ess);
  DistillArgs ga = ca;
  ga.student = dzs;
  ga.teacher = dzt;
  ga.targets = has_y ? (c.ydt == kI32 ? dy32.p : dy64.p) : nullptr;
  ga.mask = c.masked ? dmask.as<uint8_t>() : nullptr;
  ga.seq_offsets = doff.as<int64_t>();
  ga.grad = dg;
  ga.row_loss = c.row_loss ? drow.as<float>() : nullptr;
  std::vector<uint8_t> g_grad[2];
  std::vector<float> g_row[2];
  double g_loss[2], g_tokens[2];
  Status gst[2];
  for (int run = 0; run < 2; ++run) {
    CK(cudaMemcpy(sbuf.p, pristine.p, sbuf.bytes, cudaMemcpyDeviceToDevice));
    if (c.grad_mode == 1 || c.grad_mode == 3) gbuf.poison();
    drow.poison();
    ga.loss = ga.tokens = -12345.0;
    gst[run] = cuda::distill_loss(ga, 0);
    g_grad[run] = c.grad_mode ? download<uint8_t>(dg, sbytes) : std::vector<uint8_t>();
    g_row[run] = download<float>(drow.p, (size_t)n);
    g_loss[run] = ga.loss;
    g_tokens[run] = ga.tokens;
  }
  const bool det = same_status(gst[0], gst[1]) && g_grad[0] == g_grad[1] &&
                   memcmp(g_row[0].data(), g_row[1].data(), 4 * (size_t)n) == 0 &&
                   memcmp(&g_loss[0], &g_loss[1], 8) == 0 && memcmp(&g_tokens[0], &g_tokens[1], 8) == 0;

  // Against the CPU (every element).
  bool pass = same_status(gst[0], cst) && det;
  std::string why;
  if (!same_status(gst[0], cst)) why += " [status: cpu " + std::to_string(cst.code) + "/" + std::to_string(cst.row) +
                                         " gpu " + std::to_string(gst[0].code) + "/" + std::to_string(gst[0].row) + "]";
  if (!det) why += " [not deterministic]";
  // A teacher close to the student puts the loss near the float32 rounding of either backend: both
  // stay within the tolerance of float64 (checked below), so they may differ by up to twice it.
  const double cpu_factor = c.close ? 2.0 : 1.0;
  Err e_row, e_grad;
  if (c.row_loss)
    for (int64_t r = 0; r < n; ++r) e_row.add(g_row[0][r], c_row[r]);
  if (c.grad_mode)
    for (int64_t i = 0; i < n * v; ++i) e_grad.add(to_f32(g_grad[0].data(), c.sdt, i), to_f32(c_grad.data(), c.sdt, i));
  const bool loss_ok = same_scalar(g_loss[0], ca.loss, kValueTol * cpu_factor) && g_tokens[0] == ca.tokens;
  pass = pass && loss_ok && e_row.ok(kValueTol * cpu_factor) && e_grad.ok(grad_tol(c.sdt) * cpu_factor);
  if (!c.row_loss) {  // not written: still poisoned
    bool untouched = true;
    for (int64_t r = 0; r < n; ++r) untouched = untouched && std::isnan(g_row[0][r]);
    if (!untouched) why += " [row_loss written though null]";
    pass = pass && untouched;
  }
  if (c.grad_mode == 0 || c.grad_mode == 1 || c.grad_mode == 3) {  // the student is never written
    const std::vector<uint8_t> now = download<uint8_t>(dzs, sbytes);
    if (now != hs) why += " [student modified]";
    pass = pass && now == hs;
  }

  // Against float64 (rows whose CPU value is finite; every row up to ~4M elements, else a sample).
  // The gradient is compared with the float64 value rounded to the student dtype (the best a kernel
  // can write: float16 subnormals alone can exceed 1e-3 at small w / T); the distance to the
  // unrounded value is printed too.
  Err f_row, f_grad, f_grad_raw;
  double f_loss = 0;
  bool f_loss_ok = true;
  const std::vector<double> w = row_weights(off, c.masked ? &mask : nullptr, has_y ? &y64 : nullptr, ignore, c.agg,
                                            c.normalizer, c.mcl);
  const int64_t stride = std::max<int64_t>(1, (n * v) / 4000000 + 1);
  if (cst.code == kOk || cst.code == kNonFinite) {
    for (int64_t r = 0; r < n; r += stride) {
      if (w[r] == 0.0) {
        if (c.row_loss) f_row.add(g_row[0][r], 0.0);
        continue;
      }
      if (!std::isfinite(c_row[r])) continue;
      const RefRow rr = ref_row(hs.data(), c.sdt, ht.data(), c.tdt, r, v, c.temp, c.div, c.beta, ca.hard_label_weight,
                                has_y && ca.hard_label_weight != 0.0 ? y64[r] : -1);
      if (c.row_loss) f_row.add(g_row[0][r], rr.value);
      f_loss += w[r] * rr.value;
      if (c.grad_mode)
        for (int64_t j = 0; j < v; ++j) {
          const double ref = w[r] * rr.grad[j] / c.temp;
          uint16_t h[2];
          from_f32(h, c.sdt, 0, (float)ref);
          const double got = to_f32(g_grad[0].data(), c.sdt, r * v + j);
          f_grad.add(got, c.sdt == kF32 ? ref : (double)to_f32(h, c.sdt, 0));
          f_grad_raw.add(got, ref);
        }
    }
    f_loss_ok = stride > 1 || cst.code != kOk || same_scalar(g_loss[0], f_loss, kValueTol);
    pass = pass && f_row.ok(kValueTol) && f_grad.ok(grad_tol(c.sdt)) && f_loss_ok;
  }
  report(pass,
         "%-78s N=%-5lld | loss %.9g (cpu %.9g, f64 %s) tok %g | row: cpu %s f64 %s | grad: cpu %s f64 %s "
         "(unrounded %s, tol %.0e)%s",
         case_name(c).c_str(), (long long)n, g_loss[0], ca.loss,
         stride > 1 || cst.code != kOk ? "-" : std::to_string(f_loss).c_str(), g_tokens[0], err_str(e_row).c_str(),
         err_str(f_row).c_str(), err_str(e_grad).c_str(), err_str(f_grad).c_str(), err_str(f_grad_raw).c_str(),
         grad_tol(c.sdt), why.c_str());
  if (gst[0].code != kOk) printf("     gpu status %d row %lld: %s\n", gst[0].code, (long long)gst[0].row, gst[0].message);
}

// ------------------------------------------------------------------------------------------------
// Error cases: the status the CPU reports, and nothing written where the CPU writes nothing.

struct Small {
  int64_t n, v;
  std::vector<float> zs, zt;  // float32 logits
  std::vector<int64_t> y;
};
static Small small_rows(int64_t n, int64_t v, uint64_t seed) {
  Small s;
  s.n = n;
  s.v = v;
  Rng rng(seed);
  s.zs.resize((size_t)(n * v));
  s.zt.resize((size_t)(n * v));
  for (auto& x : s.zs) x = 3.0f * approx_normal(rng.next());
  for (auto& x : s.zt) x = 3.0f * approx_normal(rng.next());
  s.y.resize((size_t)n);
  for (auto& t : s.y) t = rng.below(v);
  return s;
}

// Runs CPU and GPU on the same float32 inputs (grad aliasing the student on the GPU) and checks the
// status and, when the CPU writes nothing, that the GPU wrote nothing.
static void run_error_case(const char* name, const Small& sm, const std::vector<int64_t>& off, int32_t ydt,
                           int32_t div, bool expect_untouched) {
  const int64_t n = sm.n, v = sm.v, S = (int64_t)off.size() - 1;
  std::vector<int32_t> y32(sm.y.begin(), sm.y.end());
  std::vector<float> c_grad((size_t)(n * v)), c_row((size_t)n, -7.0f);
  DistillArgs ca;
  ca.student = sm.zs.data();
  ca.teacher = sm.zt.data();
  ca.n = n;
  ca.v = v;
  ca.targets = ydt == kI32 ? (const void*)y32.data() : (const void*)sm.y.data();
  ca.target_dtype = ydt;
  ca.seq_offsets = off.data();
  ca.s = S;
  ca.divergence = div;
  ca.hard_label_weight = 0.3;
  ca.grad = c_grad.data();
  ca.row_loss = c_row.data();
  ca.loss = ca.tokens = -12345.0;
  const Status cs = cpu::distill_loss(ca);

  DevBuf dzs(4 * (size_t)(n * v) + 4), dzt(4 * (size_t)(n * v) + 4), dy(8 * (size_t)n + 8), doff(8 * off.size()),
      drow(4 * (size_t)n + 4);
  upload(dzs.p, sm.zs);
  upload(dzt.p, sm.zt);
  if (ydt == kI32) upload(dy.p, y32);
  else upload(dy.p, sm.y);
  upload(doff.p, off);
  drow.poison();
  DistillArgs ga = ca;
  ga.student = dzs.p;
  ga.teacher = dzt.p;
  ga.targets = dy.p;
  ga.seq_offsets = doff.as<int64_t>();
  ga.grad = dzs.p;  // in place: an error must leave the student as it was
  ga.row_loss = drow.as<float>();
  ga.loss = ga.tokens = -12345.0;
  const Status gs = cuda::distill_loss(ga, 0);
  const std::vector<float> g_student = download<float>(dzs.p, (size_t)(n * v)), g_row = download<float>(drow.p, (size_t)n);

  bool pass = same_status(gs, cs);
  std::string why;
  if (expect_untouched) {
    const bool student_same = memcmp(g_student.data(), sm.zs.data(), 4 * (size_t)(n * v)) == 0;
    bool row_same = true;
    for (float x : g_row) row_same = row_same && std::isnan(x);
    const bool scalars_same = ga.loss == -12345.0 && ga.tokens == -12345.0 && ca.loss == -12345.0;
    if (!student_same) why += " [aliased student modified]";
    if (!row_same) why += " [row_loss written]";
    if (!scalars_same) why += " [loss/tokens written]";
    pass = pass && student_same && row_same && scalars_same;
  } else {  // kNonFinite and N = 0: everything written, as the CPU
    Err eg, er;
    for (int64_t i = 0; i < n * v; ++i) eg.add(g_student[i], c_grad[i]);
    for (int64_t r = 0; r < n; ++r) er.add(g_row[r], c_row[r]);
    const bool scal = same_scalar(ga.loss, ca.loss, kValueTol) && ga.tokens == ca.tokens;
    if (!eg.ok(1e-5) || !er.ok(1e-5)) why += " [outputs: grad " + err_str(eg) + " row " + err_str(er) + "]";
    if (!scal) why += " [loss " + std::to_string(ga.loss) + " vs " + std::to_string(ca.loss) + "]";
    pass = pass && eg.ok(1e-5) && er.ok(1e-5) && scal;
  }
  report(pass, "error    %-44s cpu %d/%lld \"%s\" | gpu %d/%lld \"%s\"%s", name, cs.code, (long long)cs.row, cs.message,
         gs.code, (long long)gs.row, gs.message, why.c_str());
}

static void run_error_cases(uint64_t seed) {
  const int64_t n = 40, v = 1001;
  for (int32_t ydt : {kI64, kI32}) {
    Small sm = small_rows(n, v, ++seed);
    sm.y[3] = -100;  // ignored: fine
    sm.y[12] = -5;   // bad
    sm.y[7] = v;     // bad, the smallest
    sm.y[30] = v + 100;
    const std::vector<int64_t> off = {0, 10, 25, 40};
    run_error_case(ydt == kI32 ? "bad targets (int32) -> row 7" : "bad targets (int64) -> row 7", sm, off, ydt,
                   kForwardKl, true);
  }
  Small sm = small_rows(10, 33, ++seed);
  run_error_case("seqOffsets end != N", sm, {0, 4, 8, 9}, kI64, kForwardKl, true);
  run_error_case("seqOffsets start != 0", sm, {2, 4, 10}, kI64, kReverseKl, true);
  run_error_case("seqOffsets decreasing (seq 1)", sm, {0, 6, 4, 10}, kI64, kJsd, true);
  run_error_case("seqOffsets decreasing twice (seq 1)", sm, {0, 6, 4, 3, 10}, kI64, kJsd, true);
  Small bad = sm;
  bad.y[1] = 99;
  run_error_case("bad layout + bad target -> layout", bad, {0, 6, 4, 10}, kI64, kForwardKl, true);
  // Non-finite rows: student row 2 entirely -inf; teacher row 4 holds a NaN; student row 6 is -inf
  // where the teacher has mass (forward KL: +inf) and teacher row 8 -inf where the student has mass
  // (reverse KL: +inf). Everything is written; the smallest non-finite row is named.
  Small nf = small_rows(12, 257, ++seed);
  for (int64_t j = 0; j < 257; ++j) nf.zs[2 * 257 + j] = -INFINITY;
  nf.zt[4 * 257 + 100] = NAN;
  nf.zs[6 * 257 + 5] = -INFINITY;
  nf.zt[8 * 257 + 9] = -INFINITY;
  for (int64_t r = 0; r < 12; ++r) nf.y[r] = (nf.y[r] == 5 || nf.y[r] == 9) ? 11 : nf.y[r];
  nf.y[2] = -100;  // row 2 ignored: its -inf row is never evaluated
  for (int32_t d : {kForwardKl, kReverseKl, kJsd}) {
    char name[64];
    snprintf(name, sizeof(name), "non-finite rows (%s)", div_name(d));
    run_error_case(name, nf, {0, 5, 12}, kI64, d, false);
  }
  Small nf2 = nf;
  nf2.y[2] = 3;  // now row 2 (all -inf student) counts
  run_error_case("non-finite rows incl. all -inf row 2", nf2, {0, 5, 12}, kI64, kReverseKl, false);
  Small empty;
  empty.n = 0;
  empty.v = 5;
  run_error_case("N = 0 (three empty sequences)", empty, {0, 0, 0, 0}, kI64, kForwardKl, false);
}

// ------------------------------------------------------------------------------------------------
// Timing.

static void bench(int64_t n, int64_t v, uint64_t seed) {
  const int32_t dt = kBF16;
  const size_t bytes = (size_t)n * v * 2;
  const int64_t S = 8;
  std::vector<int64_t> off;
  for (int64_t s = 0; s <= S; ++s) off.push_back(n * s / S);
  Rng rng(seed);
  std::vector<int64_t> y((size_t)n);
  for (auto& t : y) t = rng.below(v);
  DevBuf dzs(bytes), dzt(bytes), dg(bytes), dy(8 * (size_t)n), doff(8 * off.size()), drow(4 * (size_t)n);
  upload(dy.p, y);
  upload(doff.p, off);
  gen_logits<<<4096, 256>>>(dzs.p, dt, n, v, seed + 1, 3.0f, nullptr, dt, 0.0f, false, false, nullptr);
  gen_logits<<<4096, 256>>>(dzt.p, dt, n, v, seed + 2, 3.0f, dzs.p, dt, 0.5f, false, true, nullptr);
  CK(cudaGetLastError());
  CK(cudaDeviceSynchronize());

  const EventPair ev;
  // The op's GPU span: the start event here, the stop event recorded by the op's final
  // synchronisation right after its last copy (detail::sync_stream).
  auto time_op = [&](DistillArgs a) {
    for (int i = 0; i < 2; ++i) cuda::distill_loss(a, 0);
    std::vector<float> ms;
    cuda::detail::OpTimer& t = cuda::detail::op_timer();
    t.start = ev.e0;
    t.stop = ev.e1;
    for (int i = 0; i < 15; ++i) {
      t.armed = true;
      t.stopped = false;
      CK(cudaEventRecord(ev.e0, 0));
      const Status st = cuda::distill_loss(a, 0);
      if (!st.ok()) printf("     bench status %d: %s\n", st.code, st.message);
      CK(cudaEventSynchronize(ev.e1));
      float x = 0;
      CK(cudaEventElapsedTime(&x, ev.e0, ev.e1));
      ms.push_back(x);
    }
    t.armed = false;
    return median(ms);
  };
  // Copy bandwidth of the same size (bytes read + written).
  std::vector<float> cms;
  for (int i = 0; i < 7; ++i) {
    CK(cudaEventRecord(ev.e0, 0));
    CK(cudaMemcpyAsync(dg.p, dzs.p, bytes, cudaMemcpyDeviceToDevice, 0));
    CK(cudaEventRecord(ev.e1, 0));
    CK(cudaEventSynchronize(ev.e1));
    float x = 0;
    CK(cudaEventElapsedTime(&x, ev.e0, ev.e1));
    cms.push_back(x);
  }
  std::sort(cms.begin(), cms.end());
  const double copy_gbs = 2.0 * bytes / cms[0] / 1e6;
  const double peak_gbs = hbm_peak_bytes_per_s() / 1e9;
  printf("BENCH bf16/bf16 N=%lld V=%lld (%.2f GB per input): device-to-device copy %.0f GB/s (best of 7), "
         "nominal peak %.0f GB/s\n",
         (long long)n, (long long)v, bytes / 1e9, copy_gbs, peak_gbs);

  DistillArgs a;
  a.student = dzs.p;
  a.student_dtype = dt;
  a.teacher = dzt.p;
  a.teacher_dtype = dt;
  a.n = n;
  a.v = v;
  a.targets = dy.p;
  a.target_dtype = kI64;
  a.seq_offsets = doff.as<int64_t>();
  a.s = S;
  a.aggregation = kTokenMean;
  a.row_loss = drow.as<float>();
  struct Variant {
    const char* name;
    int32_t div;
    bool grad, inplace;
    float temp;
    double hw;
  };
  const Variant vars[] = {
      {"forward KL + grad (the target)", kForwardKl, true, false, 1.0f, 0.0},
      {"forward KL + grad, T=0.7, hard 0.3", kForwardKl, true, false, 0.7f, 0.3},
      {"forward KL + grad in place", kForwardKl, true, true, 1.0f, 0.0},
      {"forward KL, loss only", kForwardKl, false, false, 1.0f, 0.0},
      {"reverse KL + grad", kReverseKl, true, false, 1.0f, 0.0},
      {"JSD + grad", kJsd, true, false, 1.0f, 0.0},
      {"JSD, loss only", kJsd, false, false, 1.0f, 0.0},
  };
  for (const Variant& var : vars) {
    DistillArgs b = a;
    b.divergence = var.div;
    b.temperature = var.temp;
    b.hard_label_weight = var.hw;
    b.grad = var.grad ? (var.inplace ? dzs.p : dg.p) : nullptr;
    DevBuf keep(var.inplace ? bytes : 0);
    if (var.inplace) CK(cudaMemcpy(keep.p, dzs.p, bytes, cudaMemcpyDeviceToDevice));
    const float ms = time_op(b);  // in place: later runs read earlier gradients (timing only)
    if (var.inplace) CK(cudaMemcpy(dzs.p, keep.p, bytes, cudaMemcpyDeviceToDevice));
    const int reads = var.div == kJsd ? (var.grad ? 3 : 2) : (var.grad ? 2 : 1);
    const double moved = (double)reads * 2.0 * bytes + (var.grad ? (double)bytes : 0.0);
    const double gbs = moved / ms / 1e6;
    const double floor_ms = moved / (copy_gbs * 1e6);
    printf("BENCH %-38s %7.3f ms | %d read(s) of each input%s = %5.2f GB -> %6.0f GB/s = %5.1f%% of copy "
           "(floor %.3f ms)%s\n",
           var.name, ms, reads, var.grad ? " + 1 write" : "", moved / 1e9, gbs, 100.0 * gbs / copy_gbs, floor_ms,
           var.div == kForwardKl && var.grad && !var.inplace && var.temp == 1.0f
               ? (gbs >= 0.8 * copy_gbs ? "  [>= 80%: meets the target]" : "  [< 80% of copy: below the target]")
               : "");
    fflush(stdout);
  }
}

// ------------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
  CheckRun run;
  if (!start_check(argc, argv, &g_seed, kExactExpTag, false, &run)) return 2;

  if (!run.bench_only) {
    uint64_t seed = g_seed;
    const int32_t dts[3] = {kF32, kBF16, kF16};
    const int32_t divs[3] = {kForwardKl, kReverseKl, kJsd};
    const int32_t aggs[4] = {kSeqMeanTokenMean, kTokenMean, kConstant, kSeqMeanTokenSum};
    // Case fields: S max_len V sdt tdt ydt div beta T hw agg normalizer mcl masked ignored -inf close s_off t_off
    // grad_mode row_loss.
    // 1. Every divergence x dtype pair x a rotation of the other options, small and odd V.
    int k = 0;
    for (int32_t sd : dts)
      for (int32_t td : dts)
        for (int32_t dv : divs) {
          ++k;
          const int64_t vs[4] = {1, 7, 33, 1001};
          const int64_t v = vs[k % 4];
          Case c{5, 9, v, sd, td, (k % 3 == 0) ? -1 : (k % 2 ? kI64 : kI32), dv, 0.3 + 0.2 * (k % 3), (k % 2) ? 0.7f : 1.0f,
                 (k % 4 == 1) ? 0.3 : 0.0, aggs[k % 4], (k % 8 == 1) ? 37.0 : 0.0, (k % 8 == 2) ? 50.0 : 0.0, k % 3 == 1,
                 k % 5 != 0, k % 2 == 0 && v > 1, false, (k % 7 == 3) ? 1 : 0, (k % 5 == 4) ? 3 : 0, k % 4, k % 6 != 5};
          if (c.ydt < 0) c.hw = 0.0;
          run_case(c, ++seed);
        }
    // 2. Rows per block (V > 4096) and the boundary, every grad mode, hard labels, close teachers.
    for (int32_t dv : divs) {
      run_case({4, 7, 4096, kBF16, kBF16, kI64, dv, 0.5, 1.0f, 0.3, kTokenMean, 0, 0, true, true, true, false, 0, 0, 2, true}, ++seed);
      run_case({4, 7, 4097, kF32, kBF16, kI32, dv, 0.5, 0.7f, 0.0, kSeqMeanTokenMean, 0, 0, false, true, true, false, 1, 0, 3, true}, ++seed);
      run_case({3, 5, 32000, kF16, kF32, kI64, dv, 0.4, 1.0f, 0.3, kConstant, 0, 0, true, false, true, false, 0, 0, 1, true}, ++seed);
      run_case({3, 6, 1001, kF32, kF32, -1, dv, 0.5, 1.0f, 0.0, kTokenMean, 0, 0, false, false, false, true, 0, 0, 1, true}, ++seed);
      run_case({2, 4, 32000, kF32, kF32, kI64, dv, 0.5, 0.7f, 0.0, kSeqMeanTokenSum, 0, 0, false, false, false, true, 0, 0, 2, true}, ++seed);
      run_case({3, 5, 5003, kBF16, kF16, kI64, dv, 0.5, 1.0f, 0.3, kTokenMean, 0, 0, false, true, true, false, 3, 5, 1, true}, ++seed);
      run_case({3, 5, 5003, kF16, kF16, kI32, dv, 0.5, 0.7f, 0.0, kTokenMean, 0, 0, true, true, true, false, 1, 1, 2, true}, ++seed);
    }
    // 3. Many rows per warp (grid of many blocks) and the float32 student at V = 151936.
    run_case({40, 300, 33, kBF16, kF32, kI64, kForwardKl, 0.5, 1.0f, 0.3, kTokenMean, 0, 0, true, true, true, false, 0, 0, 2, true}, ++seed);
    run_case({30, 400, 2048, kF32, kF32, kI32, kReverseKl, 0.5, 0.7f, 0.0, kSeqMeanTokenMean, 0, 0, true, true, true, false, 0, 0, 1, true}, ++seed);
    if (!run.quick) {
      for (int32_t dv : divs) {
        run_case({3, 8, 151936, kBF16, kBF16, kI64, dv, 0.5, 1.0f, 0.3, kTokenMean, 0, 0, false, true, true, false, 0, 0, 1, true}, ++seed);
        run_case({2, 6, 151936, kF32, kBF16, kI32, dv, 0.5, 0.7f, 0.0, kConstant, 0, 0, true, false, false, false, 0, 1, 2, true}, ++seed);
        run_case({2, 6, 151936, kF16, kF16, kI64, dv, 0.5, 2.0f, 0.5, kSeqMeanTokenMean, 0, 0, false, false, false, true, 1, 1, 3, true}, ++seed);
        run_case({2, 4, 151936, kF32, kF32, -1, dv, 0.5, 1.0f, 0.0, kTokenMean, 0, 0, false, false, false, true, 0, 0, 1, true}, ++seed);
      }
      run_case({64, 1024, 4099, kBF16, kBF16, kI64, kForwardKl, 0.5, 1.0f, 0.0, kTokenMean, 0, 0, true, true, true, false, 0, 0, 1, false}, ++seed);
      run_case({64, 1024, 4099, kBF16, kBF16, kI64, kJsd, 0.5, 1.0f, 0.0, kTokenMean, 0, 0, true, true, true, false, 0, 0, 0, true}, ++seed);
    }
    run_error_cases(++seed);
  }
  if (run.do_bench) bench(8192, 151936, g_seed + 1000);

  return finish(run);
}
