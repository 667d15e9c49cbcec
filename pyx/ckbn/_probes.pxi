# Memory-bandwidth probes for benchmarks/ (not used by the library).
#
# Included by _probes_base.pyx, _probes_avx2.pyx and _probes_avx512.pyx, which
# setup.py compiles with the same flags and OpenMP as the kernel variant of
# the same name, so a benchmark compares a kernel with a probe built alike.

from cython.parallel cimport prange
from libc.stdlib cimport malloc, free
from libc.string cimport memcpy



cdef float _read_chunk(const float* x, Py_ssize_t n) noexcept nogil:
    """Sum of x[:n] with 64 independent lanes held in a local array (which
    the compiler keeps in vector registers): as fast as the loads allow."""
    cdef float acc[64]
    cdef Py_ssize_t i = 0, j
    for j in range(64):
        acc[j] = 0
    while i + 64 <= n:
        for j in range(64):
            acc[j] += x[i + j]
        i = i + 64
    while i < n:
        acc[0] += x[i]
        i = i + 1
    for j in range(1, 64):
        acc[0] += acc[j]
    return acc[0]


def probe_read(const float[::1] x, int n_threads):
    """Sum of ``x`` read once with ``n_threads`` threads (a read-bandwidth probe)."""
    cdef Py_ssize_t n = x.shape[0], k, lo, hi
    cdef Py_ssize_t nb = (n + 65535) // 65536
    cdef double total = 0.0
    cdef float* part = <float*> malloc(sizeof(float) * (nb if nb > 0 else 1))
    if part == NULL:
        raise MemoryError()
    with nogil:
        for k in prange(nb, num_threads=n_threads, schedule="static"):
            lo = k * 65536
            hi = lo + 65536
            if hi > n:
                hi = n
            part[k] = _read_chunk(&x[0] + lo, hi - lo)
    for k in range(nb):
        total += part[k]
    free(part)
    return total


cdef void _copy_chunk(const float* s, float* d, Py_ssize_t n) noexcept nogil:
    """d[:n] = s[:n] as a vectorized load/store loop.  (+ 0.0f keeps the
    compiler from turning the loop back into a memcpy call.)"""
    cdef Py_ssize_t i
    for i in range(n):
        d[i] = s[i] + 0.0


def probe_copy(const float[::1] src, float[::1] dst, int n_threads, bint use_memcpy=True):
    """``dst[:] = src`` with ``n_threads`` threads (a copy-bandwidth probe).

    ``use_memcpy`` picks the C library's memcpy (which may use non-temporal
    stores on large copies) or a plain vectorized loop.  Benchmarks take the
    faster of the two: on the development machine memcpy of the same 1 MiB
    took 38 us in some runs and 178-350 us in others, depending on where the
    two arrays happened to be allocated.
    """
    cdef Py_ssize_t n = src.shape[0], k, lo, hi
    cdef Py_ssize_t nb = (n + 65535) // 65536
    if dst.shape[0] != n:
        raise ValueError("probe_copy: sizes differ")
    with nogil:
        for k in prange(nb, num_threads=n_threads, schedule="static"):
            lo = k * 65536
            hi = lo + 65536
            if hi > n:
                hi = n
            if use_memcpy:
                memcpy(&dst[lo], &src[lo], sizeof(float) * (hi - lo))
            else:
                _copy_chunk(&src[lo], &dst[lo], hi - lo)


cdef void _affine_chunk(const float* x, const float* a, const float* b, float* y,
                        Py_ssize_t n, Py_ssize_t W) noexcept nogil:
    """y[i] = x[i] * a[i % W] + b[i % W] for i < n, in rows of W lanes (the
    chunk starts at lane 0); W == 1: one coefficient pair for all."""
    cdef Py_ssize_t i = 0, j
    cdef float a0 = a[0], b0 = b[0]
    if W == 1:
        for i in range(n):
            y[i] = x[i] * a0 + b0
        return
    while i + W <= n:
        for j in range(W):
            y[i + j] = x[i + j] * a[j] + b[j]
        i = i + W
    for j in range(n - i):
        y[i + j] = x[i + j] * a[j] + b[j]


def probe_affine(const float[::1] x, const float[::1] a, const float[::1] b, float[::1] y,
                 int n_threads):
    """``y = x * a[j % W] + b[j % W]`` (``W = a.shape[0]``) with ``n_threads``
    threads: the traffic of the inference pass (read x, write y) with its
    arithmetic and its per-lane coefficient loads, in plain rows of W lanes
    (channels last, the coefficients repeated to W lanes); W = 1 is the copy
    plus one multiply-add per element (channels first, coefficients in
    registers).  An affine-bandwidth probe for benchmarks/."""
    cdef Py_ssize_t n = x.shape[0], W = a.shape[0], k, lo, hi, step, nb
    if y.shape[0] != n or b.shape[0] != W or W < 1:
        raise ValueError("probe_affine: sizes differ")
    step = (65536 // W) * W if W <= 65536 else W
    nb = (n + step - 1) // step
    with nogil:
        for k in prange(nb, num_threads=n_threads, schedule="static"):
            lo = k * step
            hi = lo + step
            if hi > n:
                hi = n
            _affine_chunk(&x[0] + lo, &a[0], &b[0], &y[0] + lo, hi - lo, W)
