#!/usr/bin/env bash
# The CUDA backend's test suite without a GPU (README, "Verifying the CUDA backend without a GPU"):
# the whole addon built with its CUDA sources on the CPU emulator (GK_CUDA=emu, native/emu), then
#   1. `selftest --device cuda` (every op case, the cross-backend checks and the device-runtime
#      checks) in three scheduling orders of the emulated threads: fifo, reverse, and seeded
#      random (the seed is printed: EMU_SEED=<seed> reproduces it), and with blocks run on two
#      OS threads at once;
#   2. the device tap tests on the emulated GPU;
#   3. `selftest --device cuda --quick` under AddressSanitizer + UBSan, and under ThreadSanitizer;
#   4. scripts/gpu-check.sh in its emulated mode (the GPU host's script, so it cannot rot);
#   5. scripts/planted-bugs.sh (each typical kernel bug must be caught).
# Every part prints its own line; the last line is the total, "emu: N passed, N failed", counting
# each selftest case, tap test, planted bug and build as one. Needs dist/ (npm run build:ts).
# Usage: scripts/emu-ci.sh [--no-bugs] [--no-sanitizers]
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/emu-lib.sh
logs=${GK_LOG_DIR:-/tmp/gk-emu-ci}
mkdir -p "$logs"
bugs=1
sanitizers=1
for a in "$@"; do
  case $a in
    --no-bugs) bugs=0 ;;
    --no-sanitizers) sanitizers=0 ;;
    *) echo "usage: scripts/emu-ci.sh [--no-bugs] [--no-sanitizers]"; exit 2 ;;
  esac
done
seed=${EMU_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
pass=0
fail=0
add() { pass=$((pass + $1)); fail=$((fail + $2)); }
part() { echo; echo "=== emu: $* ($(date +%T))"; }

# build FLAVOUR: counts as one check.
build() {
  local t0=$SECONDS
  if emu_build "$1" "$logs/build-$1.log"; then
    echo "built the $1 emulated addon in $((SECONDS - t0)) s"
    add 1 0
    return 0
  fi
  tail -30 "$logs/build-$1.log"
  echo "FAILED: the $1 emulated build (log $logs/build-$1.log)"
  add 0 1
  return 1
}

# selftest NAME FLAVOUR [ENV=V ...] -- [selftest args]: the cases count, a finding fails the run.
selftest() {
  local name=$1 fl=$2
  shift 2
  local envs=()
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  local log="$logs/selftest-$name.log" t0=$SECONDS
  env "${envs[@]}" EMU_STRICT=1 timeout 1800 bash -c '. scripts/emu-lib.sh; fl=$1; shift; emu_node "$fl" bin/grpo-kernels.js selftest --device cuda "$@"' _ "$fl" "$@" >"$log" 2>&1
  local rc=$?
  local counts
  counts=$(emu_cases "$log")
  local ok=${counts% *} all=${counts#* }
  [ -z "$counts" ] && ok=0 all=0
  grep -E '^device: ' "$log"
  grep -E ' FAIL ' "$log" | head -20
  local findings
  findings=$(emu_findings "$log" | head -5)
  [ -n "$findings" ] && echo "$findings"
  if [ $rc -ne 0 ] || [ -n "$findings" ] || [ "$all" -eq 0 ]; then
    add "$ok" $((all - ok + 1))
    echo "FAILED: selftest $name (exit $rc; log $log)"
    tail -5 "$log"
  else
    add "$ok" 0
  fi
  echo "selftest $name ($fl, ${envs[*]}): $ok/$all cases passed in $((SECONDS - t0)) s"
}

part "build (GK_CUDA=emu)"
if build plain; then
  part "selftest --device cuda on the emulated GPU; random order seed $seed (EMU_SEED=$seed reproduces it)"
  selftest random plain EMU_SCHED=random EMU_SEED="$seed" --
  selftest fifo plain EMU_SCHED=fifo -- --quick
  selftest reverse plain EMU_SCHED=reverse -- --quick
  selftest two-os-threads plain EMU_SCHED=random EMU_SEED="$seed" EMU_THREADS=2 -- --quick

  part "device tap tests on the emulated GPU"
  log="$logs/tap-device.log"
  GK_ADDON_PATH=$(emu_addon plain) npx tap --disable-coverage --allow-incomplete-coverage test/device.test.ts test/emu/device.test.ts >"$log" 2>&1
  rc=$?
  summary=$(grep -E '^# \{ total: [0-9]+' "$log" | tail -1)
  p=$(sed -nE 's/.*pass: ([0-9]+).*/\1/p' <<<"$summary")
  f=$(sed -nE 's/.*fail: ([0-9]+).*/\1/p' <<<"$summary")
  p=${p:-0} f=${f:-0}
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  add "$p" "$f"
  [ "$f" -ne 0 ] && tail -40 "$log"
  echo "device tap tests: $p passed, $f failed"

  part "scripts/gpu-check.sh --emulated"
  log="$logs/gpu-check.log"
  GK_ADDON_PATH=$(emu_addon plain) OUT="$logs/gpu-check-out" timeout 1200 bash scripts/gpu-check.sh --emulated >"$log" 2>&1
  rc=$?
  tail -3 "$log"
  if [ $rc -eq 0 ]; then add 1 0; else add 0 1; echo "FAILED: gpu-check.sh --emulated (exit $rc; log $log)"; fi
fi

if [ $sanitizers -eq 1 ]; then
  part "AddressSanitizer + UBSan"
  build asan && selftest asan asan -- --quick
  part "ThreadSanitizer"
  build tsan && selftest tsan tsan EMU_SCHED=random EMU_SEED="$seed" -- --quick
fi

if [ $bugs -eq 1 ]; then
  part "planted bugs (scripts/planted-bugs.sh)"
  GK_LOG_DIR="$logs/planted" bash scripts/planted-bugs.sh | tee "$logs/planted.log"
  counts=$(sed -nE 's/^planted-bugs: ([0-9]+) passed, ([0-9]+) failed/\1 \2/p' "$logs/planted.log")
  if [ -n "$counts" ]; then add ${counts% *} ${counts#* }; else add 0 1; fi
fi

echo
echo "emu: $pass passed, $fail failed"
[ $fail -eq 0 ]
