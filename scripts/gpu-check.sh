#!/usr/bin/env bash
# The whole GPU check in one command, on a CUDA host with no Node.js and no network (see README,
# "Checking on a GPU"). Run from the repository root of a tree carried over with
#   .gpu (../shared/gpu/pack-node.sh), build/Release, dist, node_modules/node-gyp-build,
#   node_modules/node-addon-api, node_modules/node-api-headers
# Every log goes under $OUT (default /tmp/gk-gpu). Steps: unpack Node; use the carried addon,
# or rebuild it here with cmake + nvcc when it cannot use this driver; selftest on the GPU;
# compute-sanitizer memcheck and racecheck; the standalone kernel checks; the benchmarks with
# the PyTorch peers. Usage: scripts/gpu-check.sh [all|selftest|sanitize|checks|bench|quick]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gk-gpu}
mkdir -p "$OUT"
what=${1:-all}
status=0
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

if ! command -v node >/dev/null; then
  python3 -c "import lzma,shutil,os;shutil.copyfileobj(lzma.open('.gpu/node.xz'),open('/tmp/node','wb'));os.chmod('/tmp/node',0o755)"
  export PATH=/tmp:$PATH
fi
log "node $(node --version); $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)"

node bin/grpo-kernels.js info > "$OUT/info.txt" 2>&1
if ! grep -q 'cuda used: yes' "$OUT/info.txt"; then
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

step() {
  local name=$1
  shift
  local t0=$SECONDS
  "$@" > "$OUT/$name.txt" 2>&1
  local rc=$?
  [ $rc -eq 0 ] || status=1
  log "$name: exit $rc in $((SECONDS - t0)) s; last line: $(tail -1 "$OUT/$name.txt")"
}

case $what in
  all|selftest|quick)
    step selftest-cuda node bin/grpo-kernels.js selftest --device cuda $([ "$what" = quick ] && echo --quick)
    step selftest-cuda-json node bin/grpo-kernels.js selftest --device cuda --quick --json ;;
esac
case $what in
  all|sanitize)
    if command -v compute-sanitizer >/dev/null; then
      step memcheck compute-sanitizer --tool memcheck --leak-check full --target-processes all node bin/grpo-kernels.js selftest --device cuda --quick
      step racecheck compute-sanitizer --tool racecheck --target-processes all node bin/grpo-kernels.js selftest --device cuda --quick
    else
      log "compute-sanitizer not found"
    fi ;;
esac
case $what in
  all|checks)
    arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
    for src in native/cuda/check/*.cu; do
      name=$(basename "$src" .cu)
      # The build line of each check program is the nvcc command in its header comment
      # (continuation backslashes joined, the trailing "&& /tmp/prog" run dropped).
      cmd=$(sed -n '/^ *nvcc /,/^\*\//p' "$src" | grep -v '^\*/' | sed 's/\\$//' | tr '\n' ' ' |
        sed -E "s/&&[[:space:]]*\/tmp\/[A-Za-z0-9_]+[[:space:]]*$//; s/compute_90,code=sm_90/compute_${arch:-90},code=sm_${arch:-90}/g")
      bin=$(grep -oE -- '-o /tmp/[A-Za-z0-9_]+' <<<"$cmd" | head -1 | cut -d' ' -f2)
      step "build-$name" bash -c "$cmd"
      [ -n "$bin" ] && [ -x "$bin" ] && step "$name" "$bin"
    done ;;
esac
case $what in
  all|bench|quick)
    step bench-cuda node --expose-gc dist/bench/run.js --device cuda $([ "$what" = quick ] && echo --quick)
    cp bench/results/cuda-*.json bench/results/cuda-*.svg "$OUT/" 2>/dev/null ;;
esac
log "done: status $status"
exit $status
