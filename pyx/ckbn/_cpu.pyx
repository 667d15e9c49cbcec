# cython: language_level=3
"""What the CPU this process runs on supports, asked from compiled code.

GCC and clang answer ``__builtin_cpu_supports`` from CPUID and, for AVX and
AVX-512, from the register state the operating system enables (XGETBV), so a
feature reported here can be used; F16C is its CPUID bit plus that AVX state.
Other compilers and other architectures report no feature, and ckbn then uses
its portable kernels.
"""

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    #define CKBN_CPU_QUERY 1
    static int ckbn_cpu_init(void) { __builtin_cpu_init(); return 1; }
    #define CKBN_HAS(f) (__builtin_cpu_supports(f) != 0)
    #else
    #define CKBN_CPU_QUERY 0
    static int ckbn_cpu_init(void) { return 0; }
    #define CKBN_HAS(f) 0
    #endif
    static int ckbn_has_avx2(void) { return CKBN_HAS("avx2"); }
    static int ckbn_has_fma(void) { return CKBN_HAS("fma"); }
    #if CKBN_CPU_QUERY
    #include <cpuid.h>
    #endif
    /* Not every compiler's __builtin_cpu_supports knows "f16c": read its
       CPUID bit, and require the AVX register state it works on. */
    static int ckbn_has_f16c(void) {
    #if CKBN_CPU_QUERY
        unsigned int a, b, c, d;
        if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
        return (c & bit_F16C) != 0 && CKBN_HAS("avx");
    #else
        return 0;
    #endif
    }
    static int ckbn_has_avx512f(void) { return CKBN_HAS("avx512f"); }
    static int ckbn_has_avx512bw(void) { return CKBN_HAS("avx512bw"); }
    static int ckbn_has_avx512dq(void) { return CKBN_HAS("avx512dq"); }
    static int ckbn_has_avx512vl(void) { return CKBN_HAS("avx512vl"); }
    """
    bint CKBN_CPU_QUERY
    int ckbn_cpu_init() noexcept nogil
    int ckbn_has_avx2() noexcept nogil
    int ckbn_has_fma() noexcept nogil
    int ckbn_has_f16c() noexcept nogil
    int ckbn_has_avx512f() noexcept nogil
    int ckbn_has_avx512bw() noexcept nogil
    int ckbn_has_avx512dq() noexcept nogil
    int ckbn_has_avx512vl() noexcept nogil


def cpu_features():
    """The x86 features the kernel variants need, as ``{name: bool}``.

    Names: ``AVX2``, ``FMA3``, ``F16C``, ``AVX512F``, ``AVX512BW``,
    ``AVX512DQ``, ``AVX512VL``.  All False where the compiler cannot ask
    (see ``query_available``).
    """
    ckbn_cpu_init()
    return {
        "AVX2": bool(ckbn_has_avx2()),
        "FMA3": bool(ckbn_has_fma()),
        "F16C": bool(ckbn_has_f16c()),
        "AVX512F": bool(ckbn_has_avx512f()),
        "AVX512BW": bool(ckbn_has_avx512bw()),
        "AVX512DQ": bool(ckbn_has_avx512dq()),
        "AVX512VL": bool(ckbn_has_avx512vl()),
    }


def query_available():
    """True when this build can ask the CPU (GCC or clang on x86)."""
    return bool(CKBN_CPU_QUERY)
