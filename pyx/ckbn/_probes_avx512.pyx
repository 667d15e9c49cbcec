"""Memory-bandwidth probes compiled for the 'avx512' instruction set (benchmarks only)."""

include "_probes.pxi"
