# Batch-normalization kernels on the canonical (P, G, R, C) layout.
#
# Included by _kernels_base.pyx, _kernels_avx2.pyx and _kernels_avx512.pyx:
# the same source compiled for several instruction sets, chosen at run time
# by ckbn/_dispatch.py.  The C helpers (OpenMP, float16 conversion, register
# tiles) are in ckbn_kernel_helpers.h; the public C ABI in
# ckbn/include/ckbn_kernels.h.  The files below read top-down, each using
# only what comes before it (a few drivers dispatch forward to the chunked
# channels-first path):
#
#   _k_common.pxi       types, constants, the thread rule, the scratch rule,
#                       the allocation-failure policy, the per-channel
#                       arithmetic (shifted moments, the Chan merge,
#                       normalization and backward coefficients)
#   _k_plan.pxi         how a shape is cut into units or chunks, and which of
#                       the six reduction paths it takes
#   _k_rows.pxi         the inner loops (one row or run of rows each)
#   _k_chunks.pxi       channels first, chunked: reduce and normalize a chunk
#                       while it is in L2 (one driver, _cf_pass)
#   _k_reduce.pxi       statistics and backward sums on the unit paths (one
#                       driver, _red_core) and on channels-first planes in
#                       memory order (_pl_core)
#   _k_elementwise.pxi  y = act(x * a + b) and dx (one driver, _ew_core)
#   _k_half.pxi         float16 data, slice by slice (one driver, _h_slices)
#   _k_ops.pxi          the fused ops, once for float16/32/64
#   _k_entry.pxi        the def entry points
#   _k_table.pxi        the C-level table (ckbn_kernels.h)
#   _k_small.pxi        compiled entries for ckbn.nn's common calls
#
# Precision.  Each unit accumulates, per lane, sums of d = x - K and d*d,
# with K the unit's first value of the lane's channel (so E[x^2] - E[x]^2 is
# never formed on unshifted data).  Register tiles walk a block of BLOCK rows
# with their sums in registers, then add them to per-lane block sums kept in
# the data type; every BLOCK rows those are added to float64 accumulators;
# units are merged in float64 with Chan's formula.  The backward sums work
# the same way.  The planes path sums each channels-first plane in vectors
# (at most 64 a lane before float64), shifted by the unit's first value of
# the channel.  Results are bitwise identical for any thread count.

include "_k_common.pxi"
include "_k_plan.pxi"
include "_k_rows.pxi"
include "_k_chunks.pxi"
include "_k_reduce.pxi"
include "_k_elementwise.pxi"
include "_k_half.pxi"
include "_k_ops.pxi"
include "_k_entry.pxi"
include "_k_table.pxi"
include "_k_small.pxi"

# The module's entry points (its stub, ckbn/_kernels_base.pyi, lists the same).
__all__ = [
    "PARALLEL_MIN_ELEMENTS", "kernel_table", "openmp_enabled", "tuning",
    "common_forward", "common_backward", "common_backward_path", "small_layer_train",
    "f16c_enabled", "work_plan", "half_page_offset",
    "reduction_path", "layout_dims", "bn_stats", "bn_affine", "bn_grad_dx",
    "bn_grad_sums", "bn_forward_train", "bn_forward_infer", "bn_backward", "f16_to_f32",
    "f32_to_f16", "bn_stats_f16", "bn_affine_f16", "bn_grad_sums_f16", "bn_grad_dx_f16",
    "bn_forward_train_f16", "bn_forward_infer_f16", "bn_backward_f16",
]
