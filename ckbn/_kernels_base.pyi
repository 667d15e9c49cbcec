# Type stub of ckbn._kernels_base.  ckbn._kernels_base, _avx2 and _avx512 are one
# source, pyx/ckbn/_kernels.pxi, compiled for three instruction sets: this is
# the one stub; _kernels_avx2.pyi and _kernels_avx512.pyi re-export it
# (tests/test_typing.py checks all three against the modules).
# Arrays are 1-D C-contiguous buffers of the shape in the .pxi comments;
# outputs are written in place.  Private: use ckbn.nn or ckbn.BatchNormalization.
from typing import Any, Iterable, Sequence

import numpy as np
from numpy.typing import NDArray

_Float = NDArray[np.float32] | NDArray[np.float64]
_F64 = NDArray[np.float64]
_F32 = NDArray[np.float32]
_Half = NDArray[np.uint16]  # float16 bits

__all__ = [
    "PARALLEL_MIN_ELEMENTS", "kernel_table", "openmp_enabled", "tuning",
    "common_forward", "common_backward", "common_backward_path", "small_layer_train",
    "f16c_enabled", "work_plan", "half_page_offset",
    "reduction_path", "layout_dims", "bn_stats", "bn_affine", "bn_grad_dx",
    "bn_grad_sums", "bn_forward_train", "bn_forward_infer", "bn_backward", "f16_to_f32",
    "f32_to_f16", "bn_stats_f16", "bn_affine_f16", "bn_grad_sums_f16", "bn_grad_dx_f16",
    "bn_forward_train_f16", "bn_forward_infer_f16", "bn_backward_f16",
]

PARALLEL_MIN_ELEMENTS: int
# PyCapsule "ckbn.kernel_table.v1" of the C table (ckbn/include/ckbn_kernels.h)
kernel_table: object

def openmp_enabled() -> bool: ...
def tuning() -> dict[str, Any]: ...
def common_forward(x: Any, scale: Any, offset: Any, mean: Any, variance: Any, epsilon: float,
                   data_format: str, is_training: bool, out: Any,
                   act: tuple[float, float, int] | None, n_threads: int) -> Any: ...
def common_backward(dy: Any, x: Any, scale: Any, batch_mean: Any, batch_var: Any,
                    epsilon: float, data_format: str, is_training: bool, offset: Any,
                    act: tuple[float, float, int] | None, n_threads: int) -> Any: ...
def common_backward_path(P: int, G: int, R: int, C: int) -> str: ...
def small_layer_train(x: Any, P: int, G: int, R: int, C: int, scale: Any, offset: Any,
                      epsilon: Any, moving_mean: Any, moving_var: Any, rate: Any,
                      var_factor: float) -> Any: ...
def f16c_enabled() -> bool: ...
def work_plan(P: int, G: int, R: int, C: int) -> dict[str, Any]: ...
def half_page_offset(p: int, x: int) -> int: ...
def reduction_path(P: int, G: int, R: int, C: int) -> str: ...
def layout_dims(shape: Sequence[int],
                channel_axes: Iterable[int]) -> tuple[int, int, int, int] | None: ...
def bn_stats(x: _Float, P: int, G: int, R: int, C: int, mean: _F64, var: _F64,
             n_threads: int) -> None: ...
def bn_affine(x: _Float, P: int, G: int, R: int, C: int, a: _Float, b: _Float, y: _Float,
              n_threads: int, act: bool = False, slope: float = 0.0,
              hi: float = ..., kind: int = 0) -> None: ...
def bn_grad_dx(dy: _Float, x: _Float, P: int, G: int, R: int, C: int, k1: _Float,
               k2: _Float, k3: _Float, dx: _Float, n_threads: int, za: _Float | None = None,
               zb: _Float | None = None, act: bool = False, slope: float = 0.0,
               hi: float = ..., kind: int = 0) -> None: ...
def bn_grad_sums(dy: _Float, x: _Float, P: int, G: int, R: int, C: int, mean: _F64,
                 sum_dy: _F64, sum_dyxc: _F64, n_threads: int, za: _Float | None = None,
                 zb: _Float | None = None, act: bool = False, slope: float = 0.0,
                 hi: float = ..., kind: int = 0) -> None: ...
def bn_forward_train(x: _Float, P: int, G: int, R: int, C: int, scale: _F64, offset: _F64,
                     eps: float, y: _Float, mean: _F64, var: _F64, n_threads: int,
                     act: bool = False, slope: float = 0.0, hi: float = ..., kind: int = 0) -> None: ...
def bn_forward_infer(x: _Float, P: int, G: int, R: int, C: int, scale: _F64, offset: _F64,
                     mean: _F64, var: _F64, eps: float, y: _Float, n_threads: int,
                     act: bool = False, slope: float = 0.0, hi: float = ..., kind: int = 0) -> None: ...
def bn_backward(dy: _Float, x: _Float, P: int, G: int, R: int, C: int, scale: _F64,
                mean: _F64, var: _F64, eps: float, training: bool, dx: _Float, dscale: _F64,
                doffset: _F64, n_threads: int, offset: _F64 | None = None, act: bool = False,
                slope: float = 0.0, hi: float = ..., kind: int = 0) -> None: ...
def f16_to_f32(src: _Half, dst: _F32, n_threads: int) -> None: ...
def f32_to_f16(src: _F32, dst: _Half, n_threads: int) -> None: ...
def bn_stats_f16(h: _Half, P: int, G: int, R: int, C: int, mean: _F64, var: _F64,
                 n_threads: int) -> None: ...
def bn_affine_f16(h: _Half, P: int, G: int, R: int, C: int, a: _F32, b: _F32, out: _Half,
                  n_threads: int, act: bool = False, slope: float = 0.0,
                  hi: float = ..., kind: int = 0) -> None: ...
def bn_grad_sums_f16(dy: _Half, h: _Half, P: int, G: int, R: int, C: int, mean: _F64,
                     sum_dy: _F64, sum_dyxc: _F64, n_threads: int, za: _F32 | None = None,
                     zb: _F32 | None = None, act: bool = False, slope: float = 0.0,
                     hi: float = ..., kind: int = 0) -> None: ...
def bn_grad_dx_f16(dy: _Half, h: _Half, P: int, G: int, R: int, C: int, k1: _F32, k2: _F32,
                   k3: _F32, dx: _Half, n_threads: int, za: _F32 | None = None,
                   zb: _F32 | None = None, act: bool = False, slope: float = 0.0,
                   hi: float = ..., kind: int = 0) -> None: ...
def bn_forward_train_f16(h: _Half, P: int, G: int, R: int, C: int, scale: _F64,
                         offset: _F64, eps: float, out: _Half, mean: _F64, var: _F64,
                         n_threads: int, act: bool = False, slope: float = 0.0,
                         hi: float = ..., kind: int = 0) -> None: ...
def bn_forward_infer_f16(h: _Half, P: int, G: int, R: int, C: int, scale: _F64,
                         offset: _F64, mean: _F64, var: _F64, eps: float, out: _Half,
                         n_threads: int, act: bool = False, slope: float = 0.0,
                         hi: float = ..., kind: int = 0) -> None: ...
def bn_backward_f16(dy: _Half, h: _Half, P: int, G: int, R: int, C: int, scale: _F64,
                    mean: _F64, var: _F64, eps: float, training: bool, dx: _Half,
                    dscale: _F64, doffset: _F64, n_threads: int, offset: _F64 | None = None,
                    act: bool = False, slope: float = 0.0, hi: float = ..., kind: int = 0) -> None: ...
