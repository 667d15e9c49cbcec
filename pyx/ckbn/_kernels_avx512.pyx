# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Batch-normalization kernels compiled for the 'avx512' instruction set."""

include "_kernels.pxi"
