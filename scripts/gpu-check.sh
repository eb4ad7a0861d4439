#!/usr/bin/env bash
# The whole GPU check in one command, on a CUDA host with no Node.js and no network (see README,
# "Checking on a GPU"). Run from the repository root of a tree carried over with
#   .gpu (../shared/gpu/pack-node.sh), build/Release, dist, node_modules/node-gyp-build,
#   node_modules/node-addon-api, node_modules/node-api-headers
# GPU leases are short: the default mode is planned to finish within 8 minutes on an H100/H200
# (GK_GPU_BUDGET_S, default 450 s), most telling first, each step under its own timeout and
# skipped when the budget left cannot hold it, and every result written as it comes, so a run
# cut short still returns what it measured. Every log goes under $OUT (default /tmp/gk-gpu);
# the benchmark JSON also under bench/results/.
#   1. Node unpacked; the carried addon, or one rebuilt here with cmake + nvcc for this GPU;
#   2. selftest --device cuda: every op case against the float64 reference, the CPU-vs-GPU
#      checks and the device-runtime checks;
#   3. the headline benchmark (bf16, V = 151936, N = 8192/16384; floor = bytes over the copy
#      bandwidth measured in the same run) with the PyTorch eager peers;
#   4. compute-sanitizer memcheck, then racecheck, on selftest --quick;
#   5. if time remains: the peers' torch.compile variants at the headline shapes.
# Usage: scripts/gpu-check.sh [all|selftest|sanitize|bench|full-bench]
#        scripts/gpu-check.sh --emulated   the same script against the emulated build (CI): no
#          Node unpacking, rebuild or compute-sanitizer; the benchmark runs its smoke mode (tiny
#          shapes, no timing figures, no peers), so every path of this script keeps working.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gk-gpu}
mkdir -p "$OUT"
what=${1:-all}
emulated=0
if [ "$what" = --emulated ]; then emulated=1; what=all; fi
budget=${GK_GPU_BUDGET_S:-450}
status=0
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }
left() { echo $((budget - SECONDS)); }

if [ $emulated -eq 0 ] && ! command -v node >/dev/null; then
  python3 -c "import lzma,shutil,os;shutil.copyfileobj(lzma.open('.gpu/node.xz'),open('/tmp/node','wb'));os.chmod('/tmp/node',0o755)"
  export PATH=/tmp:$PATH
fi
log "node $(node --version); $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"

node bin/grpo-kernels.js info > "$OUT/info.txt" 2>&1
if [ $emulated -eq 1 ]; then
  grep -q 'EMULATED' "$OUT/info.txt" || { cat "$OUT/info.txt"; log "--emulated: the addon loaded is not the emulated build"; exit 1; }
elif ! grep -q 'cuda used: yes' "$OUT/info.txt"; then
  log "the carried addon cannot use this GPU ($(grep 'cuda used' "$OUT/info.txt")); rebuilding here with cmake + nvcc"
  arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
  cmake -S . -B /tmp/gk-build -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="${arch:-90}" \
    -DCMAKE_JS_INC="$PWD/node_modules/node-api-headers/include" > "$OUT/cmake.txt" 2>&1 &&
    cmake --build /tmp/gk-build -j 16 >> "$OUT/cmake.txt" 2>&1 &&
    cp /tmp/gk-build/grpo_kernels.node build/Release/grpo_kernels.node ||
    { log "rebuild FAILED (see cmake.txt)"; exit 1; }
  node bin/grpo-kernels.js info > "$OUT/info.txt" 2>&1
fi
cat "$OUT/info.txt"

# step NAME SECONDS CMD...: runs CMD under a timeout of SECONDS (less when the budget is short),
# skipped when under 20 s are left. Its output goes to $OUT/NAME.txt.
step() {
  local name=$1 limit=$2
  shift 2
  local l
  l=$(left)
  if [ $emulated -eq 0 ] && [ "$l" -lt 20 ]; then
    log "$name: skipped (${l} s of the ${budget} s budget left)"
    return
  fi
  [ $emulated -eq 0 ] && [ "$limit" -gt "$l" ] && limit=$l
  [ $emulated -eq 1 ] && limit=$((limit * 10))  # the emulator is far slower than a GPU; no lease to save
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || status=1
  log "$name: exit $rc$([ $rc -eq 124 ] && echo ' (timed out)') in $((SECONDS - t0)) s; last line: $(tail -1 "$OUT/$name.txt")"
}

results=bench/results
[ $emulated -eq 1 ] && results=$OUT

case $what in
  all|selftest)
    # (Emulated, the full selftest has just run in scripts/emu-ci.sh: the quick JSON one suffices.)
    [ $emulated -eq 0 ] && step selftest-cuda 120 node bin/grpo-kernels.js selftest --device cuda
    step selftest-cuda-json 60 node bin/grpo-kernels.js selftest --device cuda --quick --json ;;
esac
case $what in
  all|bench)
    if [ $emulated -eq 1 ]; then
      step bench-cuda-smoke 900 node --expose-gc dist/bench/run.js --device cuda --smoke --out "$OUT/cuda-smoke.json"
      node -e 'const r = require(process.argv[1]); if (r.partial || r.rows.length < 10 || !r.emulated) process.exit(1)' "$OUT/cuda-smoke.json" ||
        { status=1; log "bench-cuda-smoke: the JSON is incomplete"; }
    else
      step bench-headline 200 node --expose-gc dist/bench/run.js --device cuda --headline --no-compile
    fi
    cp "$results"/cuda-*.json "$results"/cuda-*.svg "$OUT/" 2>/dev/null ;;
  full-bench)
    step bench-cuda 1800 node --expose-gc dist/bench/run.js --device cuda
    cp bench/results/cuda-*.json bench/results/cuda-*.svg "$OUT/" 2>/dev/null ;;
esac
case $what in
  all|sanitize)
    if [ $emulated -eq 1 ]; then
      log "sanitize: compute-sanitizer is for a GPU; the emulated build has its own ASan/UBSan and TSan runs (scripts/emu-ci.sh)"
    elif command -v compute-sanitizer >/dev/null; then
      step memcheck 120 compute-sanitizer --tool memcheck --target-processes all --error-exitcode 1 node bin/grpo-kernels.js selftest --device cuda --quick
      step racecheck 120 compute-sanitizer --tool racecheck --target-processes all --error-exitcode 1 node bin/grpo-kernels.js selftest --device cuda --quick
    else
      log "compute-sanitizer not found"
    fi ;;
esac
if [ "$what" = all ] && [ $emulated -eq 0 ] && [ "$(left)" -gt 120 ]; then
  step bench-headline-compile $(($(left) - 10)) node --expose-gc dist/bench/run.js --device cuda --headline \
    --out "bench/results/cuda-headline-compile.json"
  cp bench/results/cuda-headline-compile.* "$OUT/" 2>/dev/null
fi
log "done in $SECONDS s: status $status"
exit $status
