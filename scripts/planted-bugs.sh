#!/usr/bin/env bash
# Proof that the emulated CUDA checks catch typical kernel bugs (issue 8). Plants one bug at a
# time into the real sources (a copy is kept and put back), rebuilds the emulated addon in the
# flavour expected to catch it (scripts/emu-lib.sh), runs `selftest --device cuda --quick` on it,
# and requires the bug to be caught: a failing case, an emulator error (EMU ERROR) or a sanitizer
# report. Each bug is a PASS when caught. Run from anywhere; needs dist/ built (npm run build:ts).
# Usage: scripts/planted-bugs.sh [name ...]   (default: all). Logs under $GK_LOG_DIR (/tmp/gk-planted).
set -uo pipefail
cd "$(dirname "$0")/.."
. scripts/emu-lib.sh
logs=${GK_LOG_DIR:-/tmp/gk-planted}
mkdir -p "$logs/orig"
pass=0
fail=0
planted=""
put_back() {
  [ -n "$planted" ] && cp "$logs/orig/$(basename "$planted")" "$planted" && touch "$planted"
  planted=""
}
trap put_back EXIT

# replace FILE FROM TO: exact text replacement of the first occurrence; exit 3 when FROM is absent.
replace() {
  node -e 'const fs = require("fs"); const [f, a, b] = process.argv.slice(1); const s = fs.readFileSync(f, "utf8");
           if (!s.includes(a)) process.exit(3); fs.writeFileSync(f, s.replace(a, b));' "$@"
}

# plant NAME FLAVOUR FILE FROM TO WHAT
plant() {
  local name=$1 fl=$2 file=$3 from=$4 to=$5 what=$6
  if [ ${#only[@]} -gt 0 ] && [[ ! " ${only[*]} " == *" $name "* ]]; then return; fi
  local log="$logs/$name.log"
  cp "$file" "$logs/orig/$(basename "$file")"
  planted=$file
  if ! replace "$file" "$from" "$to"; then
    echo "not ok  $name: the bug could not be planted ($file changed?)"
    fail=$((fail + 1))
    put_back
    return
  fi
  local t0=$SECONDS
  if ! emu_build "$fl" "$log.build"; then
    echo "not ok  $name: the $fl build failed (see $log.build)"
    fail=$((fail + 1))
    put_back
    return
  fi
  put_back
  EMU_SCHED=${EMU_SCHED:-fifo} timeout 900 bash -c '. scripts/emu-lib.sh; emu_node "$0" bin/grpo-kernels.js selftest --device cuda --quick --seed 1' "$fl" >"$log" 2>&1
  local rc=$?
  local how=""
  local finding
  finding=$(emu_findings "$log" | head -1)
  if [ -n "$finding" ]; then
    how="$fl build: $finding"
  elif grep -q ' FAIL ' "$log"; then
    how="$fl build: wrong results: $(grep ' FAIL ' "$log" | head -1 | sed -E 's/ +/ /g' | cut -c1-160)"
  elif [ $rc -ne 0 ]; then
    how="$fl build: selftest exited $rc: $(tail -1 "$log" | cut -c1-120)"
  fi
  if [ -n "$how" ] && [ $rc -ne 0 ]; then
    echo "ok      $name ($what): caught in $((SECONDS - t0)) s by the $how"
    pass=$((pass + 1))
  else
    echo "not ok  $name ($what): NOT caught (rc $rc, $fl build; log $log)"
    fail=$((fail + 1))
  fi
}

only=("$@")
C=native/cuda/common.cuh
L=native/cuda/logprobs.cu
D=native/cuda/distill.cu

plant missing-barrier tsan $C \
  $'  if (lane == 0) sm.warp[warp] = v;\n  __syncthreads();' \
  $'  if (lane == 0) sm.warp[warp] = v;' \
  'block_reduce: no barrier between the per-warp writes and warp 0 reading them'
plant tail-off-by-one asan $L \
  'for (int64_t j = sp.tail_begin + tid; j < v; j += nth) {' \
  'for (int64_t j = sp.tail_begin + tid; j <= v; j += nth) {' \
  'forward row statistics: the scalar tail loop reads one element past the row'
plant vector-overrun asan $L \
  'for (; i < sp.nvec; i += nth) {' \
  'for (; i <= sp.nvec; i += nth) {' \
  'forward row statistics: the 16-byte vector loop runs one vector past its bound'
plant shuffle-exited-lane plain $L \
  $'    const T* row = static_cast<const T*>(p.logits) + r * p.v;\n' \
  $'    const T* row = static_cast<const T*>(p.logits) + r * p.v;\n    if (tid >= p.v) return;  // lanes with no element leave early\n' \
  'forward: lanes with no element of a short row exit before the warp reduction'
plant unwritten-shared plain $C \
  'T w = lane < kWarps ? sm.warp[lane] : identity;' \
  'T w = sm.warp[lane];' \
  'block_reduce: warp 0 reads all 32 per-warp slots, though only the first kWarps were written'
plant wrong-warp-count plain $C \
  'constexpr int kWarps = kThreads / 32;' \
  'constexpr int kWarps = kThreads / 64;' \
  'block_reduce: half the warps counted'
plant missing-syncwarp tsan $D \
  $'    const T r = detail::warp_reduce(v, op);\n    // Shuffles order no memory: this is the barrier after which a lane may overwrite what other\n    // lanes of the row read before the reduction (the in-place gradient over the target logit).\n    __syncwarp();' \
  $'    const T r = detail::warp_reduce(v, op);' \
  'distillation, one warp per row: no __syncwarp between reading the target logit and overwriting it in place'

S=native/cuda/loss.cu
plant cov-rank-off-by-one plain $S \
  'radix_select<uint64_t>(p.n, k - 1, key_of, cs.r, &rank);' \
  'radix_select<uint64_t>(p.n, k, key_of, cs.r, &rank);' \
  'clipCov/klCov selection: the k-th smallest key taken as the bound, one token too many chosen'
plant cov-scan-barrier tsan $S \
  $'    if (lane == 0) cs.warp_count[warp] = (unsigned)__popc(ballot);\n    __syncthreads();' \
  $'    if (lane == 0) cs.warp_count[warp] = (unsigned)__popc(ballot);' \
  'clipCov/klCov tie scan: no barrier between the warp totals written and read'

# Put every flavour back to the real sources (incremental: only what the bugs touched).
# (not in CI, whose clone is thrown away)
[ -z "${CI:-}" ] && for fl in plain asan tsan; do [ -d "$(emu_dir $fl)" ] && emu_build $fl "$logs/rebuild-$fl.log"; done
echo "planted-bugs: $pass passed, $fail failed"
[ $fail -eq 0 ]
