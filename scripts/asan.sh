#!/usr/bin/env bash
# AddressSanitizer + UndefinedBehaviorSanitizer run of the CPU addon.
#
# 1. Builds the addon with GK_CUDA=0 and GK_SANITIZE=ON (-fsanitize=address,undefined,
#    float-cast-overflow, -O1 -g) into build-asan/ (build/ is left alone).
# 2. Runs the op tap tests and the fuzzer with that build loaded (GK_ADDON_PATH), the ASan runtime
#    preloaded into every node process (LD_PRELOAD of gcc's libasan.so), with:
#      - an allocation cap (allocator_may_return_null, max_allocation_size_mb; the addon's scratch
#        cap GK_MAX_SCRATCH_BYTES) so that a huge-V case fails cleanly with GK_OOM,
#      - every report written to a log file (log_path) and fatal (halt_on_error, UBSan
#        -fno-sanitize-recover).
# 3. Fails when a test fails or when any sanitizer report was written.
#
# Prints a final line "N passed, N failed" (tap's assertion counts, plus one failure for a build
# failure or for any sanitizer report). Exit status 0 only when both are clean.
#
#   GK_ASAN_TESTS   test files to run (default: the op tests below)
#   GK_FUZZ_CALLS   fuzz calls (default 10000); GK_FUZZ_SEED to reproduce a run
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
out=build-asan
tests=${GK_ASAN_TESTS:-"test/invariance.test.ts test/logprobs.test.ts test/fused.test.ts test/loss.test.ts test/loss-types.test.ts test/distill.test.ts test/sampling.test.ts test/advantages.test.ts test/preference.test.ts test/native.test.ts test/errors.test.ts test/tensor.test.ts test/device.test.ts test/robustness.test.ts test/fuzz.test.ts"}

finish() {  # passed failed
  echo
  echo "$1 passed, $2 failed"
  [ "$2" -eq 0 ]
  exit $?
}

echo "=== asan: building the CPU addon with AddressSanitizer + UBSan into $out/"
cmakejs=$(node -p "require.resolve('cmake-js/bin/cmake-js')" 2>/dev/null) || { echo "asan: cmake-js is not installed (npm ci first)"; finish 0 1; }
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2}
args=(--out "$out" --CDGK_CUDA=OFF --CDGK_SANITIZE=ON)
node "$cmakejs" configure "${args[@]}" >"$out.log" 2>&1 && node "$cmakejs" build "${args[@]}" >>"$out.log" 2>&1 \
  || { tail -40 "$out.log"; echo "asan: the sanitizer build failed (log: $out.log)"; finish 0 1; }
addon="$root/$out/Release/grpo_kernels.node"
[ -f "$addon" ] || addon=$(find "$root/$out" -name 'grpo_kernels.node' -print -quit)
[ -n "$addon" ] && [ -f "$addon" ] || { echo "asan: no grpo_kernels.node under $out/"; finish 0 1; }
syms=$(nm -u "$addon" 2>/dev/null)
grep -q '__asan_' <<<"$syms" && grep -q '__ubsan_' <<<"$syms" || { echo "asan: $addon is not instrumented"; finish 0 1; }
echo "asan: built $addon"

libasan=$(gcc -print-file-name=libasan.so)
[ -e "$libasan" ] || { echo "asan: libasan.so not found (gcc -print-file-name=libasan.so gave '$libasan')"; finish 0 1; }

logs=$(mktemp -d)
log="$logs/tap.txt"
export GK_ADDON_PATH="$addon"
export GK_MAX_SCRATCH_BYTES=$((256 * 1024 * 1024))
export GK_FUZZ_ULIMIT_KB=0  # ASan's shadow memory is a huge reservation: no ulimit -v
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=4096:halt_on_error=1:abort_on_error=1:log_path=$logs/asan"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$logs/ubsan"

echo "=== asan: tap with the sanitizer build ($tests)"
# shellcheck disable=SC2086
LD_PRELOAD="$libasan" npx tap --reporter=tap $tests 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

summary=$(grep -E '^# \{ total: [0-9]+' "$log" | tail -1)
pass=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary")
fail=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary")
pass=${pass:-0}
fail=${fail:-0}
if [ -z "$summary" ] || { [ "$rc" -ne 0 ] && [ "$fail" -eq 0 ]; }; then fail=$((fail + 1)); fi

reports=$(find "$logs" -name 'asan.*' -o -name 'ubsan.*' | sort)
if [ -n "$reports" ]; then
  echo "=== asan: sanitizer reports:"
  for f in $reports; do echo "--- $f"; head -80 "$f"; done
  fail=$((fail + 1))
else
  echo "=== asan: no sanitizer report"
fi
finish "$pass" "$fail"
