# cython: language_level=3, wraparound=False, cdivision=True
# boundscheck/initializedcheck: from setup.py (off; on when CKBN_DEBUG_CYTHON=1)
"""Batch-normalization kernels compiled for the 'base' instruction set."""

include "_kernels.pxi"
