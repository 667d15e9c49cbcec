"""Memory-bandwidth probes compiled for the 'base' instruction set (benchmarks only)."""

include "_probes.pxi"
