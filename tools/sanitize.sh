#!/usr/bin/env bash
# Build the kernels with AddressSanitizer + UndefinedBehaviorSanitizer in a
# scratch copy of the repository and run the kernel tests under them.
#
#   bash tools/sanitize.sh                      # the portable (base) kernels
#   CKBN_KERNELS=avx2 bash tools/sanitize.sh    # a SIMD variant (this CPU must run it)
#
# Needs gcc with libasan/libubsan.  OpenMP stays on, so the parallel paths are
# checked too.  Exit status: that of pytest.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git -C "$here" ls-files -z | (cd "$here" && xargs -0 cp --parents -t "$work")
cd "$work"
flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g -O1"
variant="${CKBN_KERNELS:-base}"
simd=0
[ "$variant" != base ] && simd=1
CKBN_EXTRA_CFLAGS="$flags" CKBN_SIMD_VARIANTS=$simd "$py" setup.py -q build_ext --inplace >/dev/null
asan="$(gcc -print-file-name=libasan.so)"
ubsan="$(gcc -print-file-name=libubsan.so)"
# Python itself leaks by design at exit: report errors, not leaks.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export CKBN_KERNELS="$variant"
# test_a_failed_scratch_allocation_raises_memory_error limits the address
# space (RLIMIT_AS) to just above what the process holds so that malloc fails;
# under ASan the limit hits the sanitizer's own allocator first, which aborts
# the process ("internal allocator is out of memory") before any kernel runs,
# so that test belongs to the plain run only.
LD_PRELOAD="$asan $ubsan" "$py" -m pytest -q -p no:cacheprovider \
    tests/test_nn.py tests/test_nn_errors.py tests/test_threads.py tests/test_half.py \
    tests/test_nn_activation.py tests/test_kernel_paths.py tests/test_layer_fast.py \
    tests/test_ew_row_groups.py tests/test_small_nchw.py \
    --deselect tests/test_kernel_paths.py::test_a_failed_scratch_allocation_raises_memory_error \
    "$@"
