"""Memory-bandwidth probes compiled for the 'avx2' instruction set (benchmarks only)."""

include "_probes.pxi"
