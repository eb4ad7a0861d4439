# Shared by scripts/emu-ci.sh and scripts/planted-bugs.sh (source it from the repository root):
# building the emulated CUDA addon (GK_CUDA=emu) in a flavour and running node on it.
#   plain  build-emu/        the CUDA sources on the CPU emulator (native/emu)
#   asan   build-emu-asan/   the same with AddressSanitizer + UBSan in the kernels and runtime
#   tsan   build-emu-tsan/   the same with ThreadSanitizer (each CUDA thread a TSan fiber)
# The sanitizer runtimes are preloaded into node (which is not instrumented itself).

emu_dir() { case $1 in plain) echo build-emu ;; asan) echo build-emu-asan ;; tsan) echo build-emu-tsan ;; esac; }

emu_addon() { echo "$PWD/$(emu_dir "$1")/Release/grpo_kernels.node"; }

# emu_build FLAVOUR LOG: builds (incrementally) the flavour's addon.
emu_build() {
  local san=""
  case $1 in asan) san=address ;; tsan) san=thread ;; esac
  GK_CUDA=emu GK_SANITIZE=$san GK_BUILD_DIR=$(emu_dir "$1") CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-2} \
    node scripts/build.js >"$2" 2>&1
}

# emu_node FLAVOUR ARGS...: node with the flavour's addon (GK_ADDON_PATH) and sanitizer runtime.
emu_node() {
  local fl=$1
  shift
  case $fl in
    plain) GK_ADDON_PATH=$(emu_addon plain) node "$@" ;;
    asan)
      LD_PRELOAD="$(gcc -print-file-name=libasan.so)" \
        ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1:detect_stack_use_after_return=0 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        GK_ADDON_PATH=$(emu_addon asan) node "$@" ;;
    tsan)
      # Node's own threads synchronise in code TSan cannot see: native/emu/tsan-node.supp drops
      # reports whose stacks are inside V8's platform (none of ours ever is).
      LD_PRELOAD="$(gcc -print-file-name=libtsan.so)" \
        TSAN_OPTIONS="suppressions=$PWD/native/emu/tsan-node.supp halt_on_error=0 exitcode=66 report_signal_unsafe=0" \
        GK_ADDON_PATH=$(emu_addon tsan) node "$@" ;;
  esac
}

# The findings of the emulator or a sanitizer in a log, one line each (an EMU ERROR with the
# message on its next line).
emu_findings() {
  awk '/EMU ERROR/ { line = $0; if ((getline n) > 0) line = line " " n; print line; next }
       /ERROR: AddressSanitizer|runtime error:|WARNING: ThreadSanitizer|SUMMARY: (Address|Undefined|Thread)/ { print }' "$1"
}

# "X/Y cases passed" of a selftest log -> "X Y"
emu_cases() { sed -nE 's#^([0-9]+)/([0-9]+) cases passed.*#\1 \2#p' "$1" | tail -1; }
