// Standalone GPU self-check of the issue-5 ops (sampling, group advantages, Bradley–Terry loss)
// against the CPU backend. NOT part of the addon (not in native/sources.json). Build and run on a
// GPU host, from the repository root (add -gencode lines for other GPUs):
/*
  nvcc -std=c++17 -O3 -lineinfo -gencode=arch=compute_90,code=sm_90 \
    -Xcompiler "-O3 -fno-math-errno -fno-trapping-math" -o /tmp/check_issue5 \
    native/cuda/check/check_issue5_ops.cu native/cuda/advantages.cu native/cuda/preference.cu \
    native/cuda/sampling.cu native/cpu/pool.cc native/cpu/rows.cc native/cpu/advantages.cc \
    native/cpu/preference.cc native/cpu/sampling.cc -lpthread \
  && /tmp/check_issue5
*/
// Options: --quick (small shapes, no benchmark)  --no-bench  --bench-only  --seed=N (default: from
// the clock, printed, so every run draws fresh data).
//
// What it checks (exit code 0 only when every line says PASS):
//  * sample_tokens for V = 1, 2, 7, 33, 1000, 4099, 8192, 8193, 32000, 151936 (N = 0, 1, up to
//    70000 for the grid-stride loop), float32/bfloat16/float16 logits, rows that start off a
//    16-byte boundary, temperature 1 / 0.7 / 1.3, row_offset and per-row int64 counters (row_ids),
//    greedy / plain / topK / topP / minP and their combination, logits with many exact ties,
//    -inf-masked vocabularies, peaked rows. Every token must equal the CPU's (the count of
//    differing draws is printed; 0 allowed), log-probs within 2e-6 (relative, per element) of the
//    CPU's, NaN exactly where the CPU has NaN.
//  * error rows: an all -inf row, a NaN and a +inf logit -> kNonFinite naming the smallest bad row,
//    with the CPU's message; token -1 and NaN log-probs on those rows, the others still sampled.
//  * group_advantages (k reward functions, weights, NaN rewards, group sizes 1..9000, scales
//    group/batch/none, estimators grpo/rloo, equal-reward groups, group_mean/std outputs, n up to
//    1e6): combined, group mean/std, advantages bit-identical to the CPU (scale 'batch': the batch
//    std is a parallel sum, so advantages within 1e-6), the same zero-variance count and Status.
//  * bradley_terry_loss (n = 0, 1, 1000, 1e6, per-pair or scalar margin, sum/mean): gradients
//    within 1 float ulp, loss/mean margin within 1e-12, accuracy exact.
//  * determinism: every op runs twice; the outputs must be bit-identical.
//  * outputs are poisoned (0x7F bytes: 3.4e38 / token 2139062143) before each run, so an element
//    the GPU does not write fails.
//  * timing (cudaEvents, median of 10, through the public entry points, which include the final
//    synchronisation): sampling at N = 8192, V = 151936 bf16 with GB/s and the fraction of the
//    device's HBM bandwidth (peak from the memory clock/bus width, and a measured read-only
//    kernel), plus greedy / topK / topP variants; advantages and preference at n = 1e6.
#include "check_common.cuh"

#include "../advantages.cuh"
#include "../preference.cuh"
#include "../sampling.cuh"

using namespace gk;

static uint64_t g_seed = 0;
static long long g_draws = 0, g_draws_differ = 0;

// Outputs are poisoned with 0x7F bytes (3.4e38 / token 2139062143), not DevBuf's default NaN bits.
constexpr int kPoison = 0x7F;

enum Pattern { kNormal = 0, kTies = 1, kMasked = 2, kPeaked = 3, kWide = 4 };
static const char* pattern_name(int p) {
  static const char* n[] = {"normal", "ties", "masked", "peaked", "wide"};
  return n[p];
}

// Logits: row scale varies (every 3rd row 4x wider); kTies rounds to multiples of 0.5 (many exact
// ties); kMasked puts ~30% of the entries at -inf; kPeaked adds +12 to ~1% of the entries;
// kWide has std 30 (many e_i underflow). Rows ninf_row / nan_row / inf_row (>= 0) are made bad.
__global__ void gen_logits(void* z, int32_t dt, int64_t n, int64_t v, uint64_t seed, int pattern, int64_t ninf_row,
                           int64_t nan_row, int64_t inf_row) {
  const int64_t total = n * v;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (int64_t)gridDim.x * blockDim.x) {
    const int64_t r = i / v, j = i - r * v;
    const uint64_t h = mix64(seed ^ mix64((uint64_t)i));
    const float g = approx_normal(h);
    float x;
    switch (pattern) {
      case kTies: x = rintf(g * 4.0f) * 0.5f; break;
      case kMasked: x = unit(mix64(h)) < 0.3 ? -INFINITY : g * 3.0f; break;
      case kPeaked: x = g + (unit(mix64(h)) < 0.01 ? 12.0f : 0.0f); break;
      case kWide: x = g * 30.0f; break;
      default: x = g * ((r % 3 == 1) ? 8.0f : 2.0f); break;
    }
    if (r == ninf_row) x = -INFINITY;
    if (r == nan_row && j == v / 2) x = NAN;
    if (r == inf_row && j == v / 3) x = INFINITY;
    from_f32(z, dt, i, x);
  }
}

// Read-only bandwidth probe: sums 16-byte vectors (what a perfect single-read kernel achieves).
__global__ void read_kernel(const uint4* p, int64_t n, unsigned* out) {
  unsigned acc = 0;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const uint4 v = __ldg(p + i);
    acc ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (acc == 0x12345678u) *out = acc;
}

// ------------------------------------------------------------------------------------------------
// Comparisons.

// |got - ref| <= tol * max(1, |ref|), NaN exactly where ref is NaN.
static bool close_rel(double got, double ref, double tol) {
  if (std::isnan(got) || std::isnan(ref)) return std::isnan(got) && std::isnan(ref);
  if (std::isinf(got) || std::isinf(ref)) return got == ref;
  return std::fabs(got - ref) <= tol * std::max(1.0, std::fabs(ref));
}

static int64_t float_ulps(float a, float b) {
  int32_t ia, ib;
  memcpy(&ia, &a, 4);
  memcpy(&ib, &b, 4);
  if (ia < 0) ia = INT32_MIN - ia;
  if (ib < 0) ib = INT32_MIN - ib;
  return std::llabs((long long)ia - (long long)ib);
}

// ------------------------------------------------------------------------------------------------
// Sampling.

struct SampleOpts {
  const char* name;
  bool greedy;
  int64_t top_k;
  double top_p, min_p;
};

struct SampleCase {
  int64_t n, v;
  int32_t dtype;
  int pattern;
  float temp;
  int logits_off;   // elements: 0, or 1 to start every row off its natural alignment
  bool row_ids;     // per-row int64 counters instead of row_offset
  int64_t ninf_row = -1, nan_row = -1, inf_row = -1;
};

static const double kLogpTol = 2e-6;

static void run_sample_case(const SampleCase& c, const SampleOpts& o, uint64_t seed) {
  const int64_t n = c.n, v = c.v;
  const size_t es = elem_size(c.dtype), zbytes = (size_t)n * (size_t)v * es;
  DevBuf zbuf(zbytes + 64);
  void* dz = zbuf.as<char>((size_t)c.logits_off * es);
  if (n * v > 0) {
    gen_logits<<<2048, 256>>>(dz, c.dtype, n, v, seed, c.pattern, c.ninf_row, c.nan_row, c.inf_row);
    CK(cudaGetLastError());
  }
  std::vector<uint8_t> hz = download<uint8_t>(dz, zbytes);
  std::vector<int64_t> ids((size_t)n);
  for (int64_t r = 0; r < n; ++r) ids[(size_t)r] = (int64_t)(mix64(seed + 77 * r) % 1000000007ull);
  DevBuf d_ids(8 * (size_t)n);
  upload(d_ids, ids);

  SampleArgs a;
  a.in.logits = hz.data();
  a.in.dtype = c.dtype;
  a.in.n = n;
  a.in.v = v;
  a.in.temperature = c.temp;
  a.greedy = o.greedy;
  a.top_k = o.top_k;
  a.top_p = o.top_p;
  a.min_p = o.min_p;
  a.seed = mix64(seed) >> 11;
  a.step = seed % 97;
  a.row_offset = c.row_ids ? 0 : (int64_t)(seed % 1000);
  a.row_ids = c.row_ids ? ids.data() : nullptr;

  // CPU.
  std::vector<int32_t> ct((size_t)n);
  std::vector<float> cl((size_t)n), clt((size_t)n);
  SampleArgs ca = a;
  ca.tokens = ct.data();
  ca.logp = cl.data();
  ca.logp_truncated = clt.data();
  const Status cs = cpu::sample_tokens(ca);

  // GPU, twice (determinism), outputs poisoned before each run.
  DevBuf d_tok(4 * (size_t)n), d_lp(4 * (size_t)n), d_lt(4 * (size_t)n);
  SampleArgs ga = a;
  ga.in.logits = dz;
  ga.row_ids = c.row_ids ? d_ids.as<int64_t>() : nullptr;
  ga.tokens = d_tok.as<int32_t>();
  ga.logp = d_lp.as<float>();
  ga.logp_truncated = d_lt.as<float>();
  std::vector<int32_t> gt[2];
  std::vector<float> gl[2], glt[2];
  Status gs[2];
  for (int run = 0; run < 2; ++run) {
    d_tok.poison(kPoison);
    d_lp.poison(kPoison);
    d_lt.poison(kPoison);
    gs[run] = cuda::sample_tokens(ga, 0);
    gt[run] = download<int32_t>(d_tok.p, (size_t)n);
    gl[run] = download<float>(d_lp.p, (size_t)n);
    glt[run] = download<float>(d_lt.p, (size_t)n);
  }
  const bool det = same_status(gs[0], gs[1]) && gt[0] == gt[1] &&
                   memcmp(gl[0].data(), gl[1].data(), 4 * (size_t)n) == 0 &&
                   memcmp(glt[0].data(), glt[1].data(), 4 * (size_t)n) == 0;

  int64_t differ = 0, lp_bad = 0, bad_rows = 0;
  double max_d = 0.0;
  for (int64_t r = 0; r < n; ++r) {
    if (ct[(size_t)r] != gt[0][(size_t)r]) ++differ;
    if (!close_rel(gl[0][(size_t)r], cl[(size_t)r], kLogpTol) || !close_rel(glt[0][(size_t)r], clt[(size_t)r], kLogpTol))
      ++lp_bad;
    if (ct[(size_t)r] < 0) ++bad_rows;
    if (!std::isnan(cl[(size_t)r]) && !std::isnan(gl[0][(size_t)r]))
      max_d = std::max(max_d, std::fabs((double)gl[0][(size_t)r] - (double)cl[(size_t)r]));
  }
  g_draws += n - bad_rows;
  g_draws_differ += differ;
  const bool st_ok = same_status(gs[0], cs);
  const bool pass = st_ok && det && differ == 0 && lp_bad == 0;
  report(pass,
         "sample %-4s N=%-6lld V=%-6lld %-6s T=%.1f off=%d %s %-12s | tokens differing %lld/%lld, log-probs off %lld "
         "(max |d| %.1e) | status cpu %d/%lld gpu %d/%lld%s%s",
         dtype_name(c.dtype), (long long)n, (long long)v, pattern_name(c.pattern), c.temp, c.logits_off,
         c.row_ids ? "ids" : "off", o.name, (long long)differ, (long long)n, (long long)lp_bad, max_d, cs.code,
         (long long)cs.row, gs[0].code, (long long)gs[0].row, st_ok ? "" : " [status/message differs]",
         det ? "" : " [not deterministic]");
  if (!pass) {
    int shown = 0;
    for (int64_t r = 0; r < n && shown < 5; ++r) {
      const size_t i = (size_t)r;
      if (ct[i] != gt[0][i] || !close_rel(gl[0][i], cl[i], kLogpTol) || !close_rel(glt[0][i], clt[i], kLogpTol)) {
        printf("     row %lld: cpu token %d logp %.9g trunc %.9g | gpu token %d logp %.9g trunc %.9g\n", (long long)r,
               ct[i], cl[i], clt[i], gt[0][i], gl[0][i], glt[0][i]);
        ++shown;
      }
    }
    if (!st_ok) printf("     cpu: \"%s\"\n     gpu: \"%s\"\n", cs.message, gs[0].message);
  }
}

static void run_sampling(bool quick, uint64_t& seed) {
  const SampleOpts plain{"plain", false, 0, 1.0, 0.0}, greedy{"greedy", true, 0, 1.0, 0.0},
      k1{"topK=1", false, 1, 1.0, 0.0}, k50{"topK=50", false, 50, 1.0, 0.0}, p1{"topP=0.1", false, 0, 0.1, 0.0},
      p9{"topP=0.9", false, 0, 0.9, 0.0}, m05{"minP=0.05", false, 0, 1.0, 0.05},
      kpm{"K40,P.8,m.02", false, 40, 0.8, 0.02}, kp{"K7,P.6", false, 7, 0.6, 0.0};
  const SampleOpts* all[] = {&plain, &greedy, &k1, &k50, &p1, &p9, &m05, &kpm, &kp};
  const int32_t dtypes[3] = {kF32, kBF16, kF16};

  // N = 0 and V = 0 (every row bad) first.
  run_sample_case({0, 1000, kBF16, kNormal, 1.0f, 0, false}, plain, ++seed);
  run_sample_case({5, 0, kF32, kNormal, 1.0f, 0, false}, plain, ++seed);
  for (int32_t dt : dtypes) {
    for (int64_t v : {1, 2, 7, 33}) {
      for (const SampleOpts* o : all) {
        ++seed;
        run_sample_case({64, v, dt, kNormal, 1.0f, (int)(seed % 2), seed % 2 == 0}, *o, seed);
      }
    }
    run_sample_case({1, 151936, dt, kNormal, 1.0f, 1, false}, plain, ++seed);
    run_sample_case({70000, 1, dt, kNormal, 1.0f, 0, false}, plain, ++seed);
    run_sample_case({70000, 33, dt, kNormal, 0.7f, 1, true}, plain, ++seed);
    run_sample_case({1000, 33, dt, kTies, 1.0f, 0, false}, kpm, ++seed);
    for (const SampleOpts* o : all) {
      run_sample_case({257, 1000, dt, kNormal, 0.7f, 1, true}, *o, ++seed);
      run_sample_case({300, 4099, dt, kTies, 1.0f, 0, false}, *o, ++seed);
      run_sample_case({100, 8193, dt, kMasked, 1.3f, 1, true}, *o, ++seed);
    }
    run_sample_case({200, 8192, dt, kPeaked, 1.0f, 0, false}, plain, ++seed);
    run_sample_case({200, 8192, dt, kWide, 1.0f, 1, false}, p9, ++seed);
    // Error rows: all -inf, NaN, +inf; the smallest bad row is named.
    run_sample_case({300, 1000, dt, kNormal, 1.0f, 0, false, 41, 17, 250}, plain, ++seed);
    run_sample_case({300, 5000, dt, kMasked, 1.0f, 1, true, 7, 200, 9}, greedy, ++seed);
    run_sample_case({100, 40000, dt, kNormal, 1.0f, 0, false, 60, -1, 33}, kpm, ++seed);
    if (!quick) {
      for (const SampleOpts* o : all) {
        run_sample_case({512, 32000, dt, kNormal, 1.0f, 1, false}, *o, ++seed);
        ++seed;
        run_sample_case({256, 151936, dt, (int)(seed % 4), 1.0f, (int)(seed % 2), seed % 2 == 1}, *o, seed);
      }
      run_sample_case({2048, 151936, dt, kPeaked, 1.0f, 0, false}, plain, ++seed);
      run_sample_case({1024, 151936, dt, kNormal, 0.7f, 0, true}, plain, ++seed);
    }
  }
  report(g_draws_differ == 0, "sample: %lld of %lld draws differ from the CPU", g_draws_differ, g_draws);
}

// ------------------------------------------------------------------------------------------------
// Group advantages.

static void run_adv_case(int64_t k, int64_t n, int64_t G, bool weights, int32_t scale, int32_t est, double nan_frac,
                         bool equal_groups, uint64_t seed) {
  Rng rng(seed);
  std::vector<double> r((size_t)(k * n)), w((size_t)k);
  for (auto& x : w) x = rng.normal();
  for (size_t i = 0; i < r.size(); ++i) {
    r[i] = std::round(rng.normal() * 4.0) / 4.0 + 0.125;  // never all zero; equal values happen
    if (rng.uniform() < nan_frac) r[i] = NAN;
  }
  if (equal_groups && G > 0)
    for (int64_t g0 = 0; g0 + G <= n; g0 += 3 * G)
      for (int64_t kk = 0; kk < k; ++kk)
        for (int64_t j = 1; j < G; ++j) r[(size_t)(kk * n + g0 + j)] = r[(size_t)(kk * n + g0)];
  AdvantageArgs a;
  a.rewards = r.data();
  a.k = k;
  a.n = n;
  a.group = G;
  a.weights = weights ? w.data() : nullptr;
  a.opt = AdvOptions{scale, est, 1e-4};
  const int64_t groups = G > 0 ? n / G : 0;

  std::vector<float> c_adv((size_t)n);
  std::vector<double> c_comb((size_t)n), c_mean((size_t)groups + 1), c_std((size_t)groups + 1);
  AdvantageArgs c = a;
  c.advantages = c_adv.data();
  c.combined = c_comb.data();
  c.group_mean = c_mean.data();
  c.group_std = c_std.data();
  const Status cs = cpu::group_advantages(c);

  DevBuf d_r(8 * r.size()), d_w(8 * w.size()), d_adv(4 * (size_t)n), d_comb(8 * (size_t)n),
      d_mean(8 * (size_t)(groups + 1)), d_std(8 * (size_t)(groups + 1));
  upload(d_r, r);
  upload(d_w, w);
  AdvantageArgs g = a;
  g.rewards = d_r.as<double>();
  g.weights = weights ? d_w.as<double>() : nullptr;
  g.advantages = d_adv.as<float>();
  g.combined = d_comb.as<double>();
  g.group_mean = d_mean.as<double>();
  g.group_std = d_std.as<double>();
  std::vector<float> g_adv[2];
  std::vector<double> g_comb[2], g_mean[2], g_std[2];
  Status gs[2];
  int64_t zero[2];
  for (int run = 0; run < 2; ++run) {
    d_adv.poison(kPoison);
    d_comb.poison(kPoison);
    d_mean.poison(kPoison);
    d_std.poison(kPoison);
    g.zero_variance_groups = -7;
    gs[run] = cuda::group_advantages(g, 0);
    zero[run] = g.zero_variance_groups;
    g_adv[run] = download<float>(d_adv.p, (size_t)n);
    g_comb[run] = download<double>(d_comb.p, (size_t)n);
    g_mean[run] = download<double>(d_mean.p, (size_t)groups);
    g_std[run] = download<double>(d_std.p, (size_t)groups);
  }
  const bool det = same_status(gs[0], gs[1]) && zero[0] == zero[1] &&
                   memcmp(g_adv[0].data(), g_adv[1].data(), 4 * (size_t)n) == 0 &&
                   memcmp(g_comb[0].data(), g_comb[1].data(), 8 * (size_t)n) == 0 &&
                   memcmp(g_mean[0].data(), g_mean[1].data(), 8 * (size_t)groups) == 0 &&
                   memcmp(g_std[0].data(), g_std[1].data(), 8 * (size_t)groups) == 0;
  bool ok = same_status(gs[0], cs) && det;
  int64_t bad = 0;
  if (cs.ok()) {
    ok = ok && zero[0] == c.zero_variance_groups;
    bad += memcmp(g_comb[0].data(), c_comb.data(), 8 * (size_t)n) != 0;
    bad += memcmp(g_mean[0].data(), c_mean.data(), 8 * (size_t)groups) != 0;
    bad += memcmp(g_std[0].data(), c_std.data(), 8 * (size_t)groups) != 0;
    for (int64_t i = 0; i < n; ++i) {
      const float x = g_adv[0][(size_t)i], y = c_adv[(size_t)i];
      if (scale == kScaleBatch ? !close_rel(x, y, 1e-6) : memcmp(&x, &y, 4) != 0) ++bad;
    }
  }
  ok = ok && bad == 0;
  char zv[64] = "n/a (error)";
  if (cs.ok()) snprintf(zv, sizeof(zv), "cpu %lld gpu %lld", (long long)c.zero_variance_groups, (long long)zero[0]);
  report(ok, "advantages k=%lld n=%-7lld G=%-5lld weights=%d scale=%d est=%d NaN=%.2f eq=%d | zero-variance groups %s, mismatches %lld, status cpu %d gpu %d%s",
         (long long)k, (long long)n, (long long)G, (int)weights, scale, est, nan_frac, (int)equal_groups, zv,
         (long long)bad, cs.code, gs[0].code, det ? "" : " [not deterministic]");
  if (!same_status(gs[0], cs)) printf("     cpu: \"%s\"\n     gpu: \"%s\"\n", cs.message, gs[0].message);
}

static void run_advantages(bool quick, uint64_t& seed) {
  run_adv_case(1, 0, 4, false, kScaleGroup, kEstGrpo, 0.0, false, ++seed);
  run_adv_case(1, 10, 3, false, kScaleGroup, kEstGrpo, 0.0, false, ++seed);  // kShape
  run_adv_case(1, 10, 0, false, kScaleGroup, kEstGrpo, 0.0, false, ++seed);  // kShape
  for (int32_t scale : {kScaleGroup, kScaleBatch, kScaleNone})
    for (int32_t est : {kEstGrpo, kEstRloo}) {
      run_adv_case(1, 64, 8, false, scale, est, 0.1, true, ++seed);
      run_adv_case(3, 12328, 4, true, scale, est, 0.2, true, ++seed);
      run_adv_case(2, 1000, 1, true, scale, est, 0.0, false, ++seed);
      run_adv_case(2, 9000, 9000, false, scale, est, 0.5, false, ++seed);
      if (!quick) run_adv_case(2, 1000000, 16, true, scale, est, 0.05, true, ++seed);
    }
}

// ------------------------------------------------------------------------------------------------
// Bradley–Terry loss.

static void run_pref_case(int64_t n, bool margins, bool sum, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> ch((size_t)n), rj((size_t)n), mg((size_t)n);
  for (int64_t i = 0; i < n; ++i) {
    ch[(size_t)i] = rng.normal() * 3.0f;
    rj[(size_t)i] = i % 7 == 0 ? ch[(size_t)i] : rng.normal() * 3.0f;
    mg[(size_t)i] = (float)rng.uniform();
  }
  PreferenceArgs a;
  a.margins = nullptr;
  a.margin = 0.25;
  a.n = n;
  a.sum = sum;
  std::vector<float> cgc((size_t)n), cgr((size_t)n);
  PreferenceArgs c = a;
  c.chosen = ch.data();
  c.rejected = rj.data();
  c.margins = margins ? mg.data() : nullptr;
  c.grad_chosen = cgc.data();
  c.grad_rejected = cgr.data();
  const Status cs = cpu::bradley_terry_loss(c);

  DevBuf d_ch(4 * (size_t)n), d_rj(4 * (size_t)n), d_mg(4 * (size_t)n), d_gc(4 * (size_t)n), d_gr(4 * (size_t)n);
  upload(d_ch, ch);
  upload(d_rj, rj);
  upload(d_mg, mg);
  PreferenceArgs g = a;
  g.chosen = d_ch.as<float>();
  g.rejected = d_rj.as<float>();
  g.margins = margins ? d_mg.as<float>() : nullptr;
  g.grad_chosen = d_gc.as<float>();
  g.grad_rejected = d_gr.as<float>();
  std::vector<float> ggc[2], ggr[2];
  double loss[2], acc[2], mm[2];
  Status gs[2];
  for (int run = 0; run < 2; ++run) {
    d_gc.poison(kPoison);
    d_gr.poison(kPoison);
    g.loss = g.accuracy = g.mean_margin = -7.0;
    gs[run] = cuda::bradley_terry_loss(g, 0);
    loss[run] = g.loss;
    acc[run] = g.accuracy;
    mm[run] = g.mean_margin;
    ggc[run] = download<float>(d_gc.p, (size_t)n);
    ggr[run] = download<float>(d_gr.p, (size_t)n);
  }
  const bool det = same_status(gs[0], gs[1]) && ggc[0] == ggc[1] && ggr[0] == ggr[1] && loss[0] == loss[1] &&
                   acc[0] == acc[1] && mm[0] == mm[1];
  int64_t max_ulp = 0;
  for (int64_t i = 0; i < n; ++i) {
    max_ulp = std::max(max_ulp, float_ulps(ggc[0][(size_t)i], cgc[(size_t)i]));
    max_ulp = std::max(max_ulp, float_ulps(ggr[0][(size_t)i], cgr[(size_t)i]));
  }
  const bool ok = same_status(gs[0], cs) && det && max_ulp <= 1 && close_rel(loss[0], c.loss, 1e-12) &&
                  acc[0] == c.accuracy && close_rel(mm[0], c.mean_margin, 1e-12);
  report(ok, "preference n=%-7lld margins=%d sum=%d | loss %.17g (cpu %.17g) accuracy %.9g (cpu %.9g) margin %.12g (cpu %.12g) grads max %lld ulp%s",
         (long long)n, (int)margins, (int)sum, loss[0], c.loss, acc[0], c.accuracy, mm[0], c.mean_margin,
         (long long)max_ulp, det ? "" : " [not deterministic]");
}

static void run_preference(bool quick, uint64_t& seed) {
  run_pref_case(0, false, false, ++seed);
  run_pref_case(1, false, false, ++seed);
  run_pref_case(1000, true, false, ++seed);
  run_pref_case(9001, false, true, ++seed);
  if (!quick) run_pref_case(1000000, true, false, ++seed);
}

// ------------------------------------------------------------------------------------------------
// Timing.

template <class Fn>
static float time_ms(Fn&& fn, int reps = 10) {
  const EventPair ev;
  return time_median_ms(ev, 2, reps, fn);
}

static void bench(uint64_t seed) {
  const double peak = hbm_peak_bytes_per_s();

  const int64_t n = 8192, v = 151936;
  const int32_t dt = kBF16;
  const size_t zbytes = (size_t)n * v * 2;
  DevBuf dz(zbytes), d_tok(4 * n), d_lp(4 * n), d_lt(4 * n), d_out(4);
  gen_logits<<<4096, 256>>>(dz.p, dt, n, v, seed, kPeaked, -1, -1, -1);
  CK(cudaGetLastError());
  const float t_read = time_ms([&] { read_kernel<<<4096, 256>>>(dz.as<uint4>(), (int64_t)(zbytes / 16), d_out.as<unsigned>()); });
  const double read_bw = zbytes / (t_read * 1e-3);
  printf("BENCH device HBM peak %.0f GB/s (memory clock x bus width); read-only kernel %.3f ms = %.0f GB/s\n", peak / 1e9,
         t_read, read_bw / 1e9);
  SampleArgs a;
  a.in.logits = dz.p;
  a.in.dtype = dt;
  a.in.n = n;
  a.in.v = v;
  a.seed = 1234;
  a.tokens = d_tok.as<int32_t>();
  a.logp = d_lp.as<float>();
  a.logp_truncated = d_lt.as<float>();
  struct Variant {
    const char* name;
    bool greedy;
    int64_t k;
    double p, mp;
    int pattern;
  } vars[] = {{"plain  (peaked logits)", false, 0, 1.0, 0.0, kPeaked},
              {"plain  (normal logits)", false, 0, 1.0, 0.0, kNormal},
              {"greedy", true, 0, 1.0, 0.0, kNormal},
              {"topK=50", false, 50, 1.0, 0.0, kNormal},
              {"topP=0.9", false, 0, 0.9, 0.0, kNormal},
              {"topK=50 topP=0.9 minP=0.05", false, 50, 0.9, 0.05, kNormal}};
  int cur_pattern = kPeaked;
  for (const Variant& var : vars) {
    if (var.pattern != cur_pattern) {
      gen_logits<<<4096, 256>>>(dz.p, dt, n, v, seed + 1, var.pattern, -1, -1, -1);
      CK(cudaGetLastError());
      cur_pattern = var.pattern;
    }
    SampleArgs b = a;
    b.greedy = var.greedy;
    b.top_k = var.k;
    b.top_p = var.p;
    b.min_p = var.mp;
    Status st;
    const float t = time_ms([&] { st = cuda::sample_tokens(b, 0); }, var.k || var.p < 1.0 ? 3 : 10);
    const double bw = zbytes / (t * 1e-3);
    printf("BENCH sample %-27s N=%lld V=%lld bf16: %8.3f ms  %6.0f GB/s  = %3.0f%% of HBM peak, %3.0f%% of the read-only kernel%s\n",
           var.name, (long long)n, (long long)v, t, bw / 1e9, 100.0 * bw / peak, 100.0 * bw / read_bw,
           st.ok() ? "" : " [error]");
  }
  // Determinism and a CPU spot check of the benchmark data (first 256 rows, plain).
  {
    SampleArgs b = a;
    cuda::sample_tokens(b, 0);
    std::vector<int32_t> t1 = download<int32_t>(d_tok.p, n);
    cuda::sample_tokens(b, 0);
    std::vector<int32_t> t2 = download<int32_t>(d_tok.p, n);
    const int64_t rows = 256;
    std::vector<uint8_t> hz = download<uint8_t>(dz.p, (size_t)rows * v * 2);
    std::vector<int32_t> ct(rows);
    std::vector<float> cl(rows), clt(rows);
    SampleArgs c = a;
    c.in.logits = hz.data();
    c.in.n = rows;
    c.tokens = ct.data();
    c.logp = cl.data();
    c.logp_truncated = clt.data();
    cpu::sample_tokens(c);
    int64_t differ = 0;
    for (int64_t r = 0; r < rows; ++r) differ += ct[r] != t1[r];
    report(t1 == t2 && differ == 0, "bench data: two runs identical %s, first %lld rows vs CPU: %lld differ",
           t1 == t2 ? "yes" : "NO", (long long)rows, (long long)differ);
  }

  // Advantages and preference at n = 1e6.
  {
    const int64_t na = 1000000, G = 16;
    std::vector<double> r((size_t)na);
    Rng rng(seed);
    for (auto& x : r) x = rng.normal();
    DevBuf d_r(8 * na), d_adv(4 * na), d_comb(8 * na), d_m(8 * na / G), d_s(8 * na / G);
    upload(d_r, r);
    AdvantageArgs g;
    g.rewards = d_r.as<double>();
    g.k = 1;
    g.n = na;
    g.group = G;
    g.advantages = d_adv.as<float>();
    g.combined = d_comb.as<double>();
    g.group_mean = d_m.as<double>();
    g.group_std = d_s.as<double>();
    const float tg = time_ms([&] { cuda::group_advantages(g, 0); });
    g.opt.scale = kScaleBatch;
    const float tb = time_ms([&] { cuda::group_advantages(g, 0); });
    printf("BENCH advantages n=%lld G=%lld: scale group %.3f ms, scale batch %.3f ms\n", (long long)na, (long long)G, tg, tb);
    std::vector<float> f((size_t)na);
    for (auto& x : f) x = rng.normal();
    DevBuf d_c(4 * na), d_rj(4 * na), d_gc(4 * na), d_gr(4 * na);
    upload(d_c, f);
    upload(d_rj, f);
    PreferenceArgs p;
    p.chosen = d_c.as<float>();
    p.rejected = d_rj.as<float>();
    p.n = na;
    p.grad_chosen = d_gc.as<float>();
    p.grad_rejected = d_gr.as<float>();
    const float tp = time_ms([&] { cuda::bradley_terry_loss(p, 0); });
    printf("BENCH preference n=%lld: %.3f ms\n", (long long)na, tp);
  }
  fflush(stdout);
}

// ------------------------------------------------------------------------------------------------

int main(int argc, char** argv) {
  CheckRun run;
  if (!start_check(argc, argv, &g_seed, "", true, &run)) return 2;  // a fresh seed from the clock unless given
  uint64_t seed = g_seed;
  if (!run.bench_only) {
    run_advantages(run.quick, seed);
    run_preference(run.quick, seed);
    run_sampling(run.quick, seed);
  }
  if (run.do_bench) bench(g_seed + 99);
  return finish(run);
}
