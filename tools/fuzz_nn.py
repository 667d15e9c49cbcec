"""Coverage-guided fuzzing of the ckbn.nn entry points with atheris.

    pip install atheris
    python tools/fuzz_nn.py -atheris_runs=20000        # bounded run
    python tools/fuzz_nn.py corpus_dir/ -max_total_time=300

Each input chooses an op, a shape (including zero-size and rank 0..5), a dtype
(float and non-float), axes or a data format, parameter shapes, special values
(NaN, Inf, huge, tiny) and an ``out=`` array.  The only acceptable outcomes
are a result or a ``ValueError``/``TypeError``; anything else (another
exception, a crash, a hang) is a bug.  Results are also checked: finite input
gives finite output of the input's shape and dtype.
"""

import sys

import atheris
import numpy as np

with atheris.instrument_imports():
    import ckbn

DTYPES = [np.float16, np.float32, np.float64, np.int32, np.bool_, np.complex64]
FORMATS = ["NHWC", "NCHW", "NC", "NCDHW", "NDHWC", "HWCN", ""]
SPECIALS = [np.nan, np.inf, -np.inf, 1e30, 1e-30, 0.0, -0.0]


def _array(fdp, shape, dtype):
    n = int(np.prod(shape)) if shape else 1
    vals = np.array(fdp.ConsumeFloatListInRange(min(n, 64), -1e4, 1e4) or [0.0])
    x = np.resize(vals, n).reshape(shape)
    if fdp.ConsumeBool() and n:
        x.flat[fdp.ConsumeIntInRange(0, n - 1)] = SPECIALS[fdp.ConsumeIntInRange(0, len(SPECIALS) - 1)]
    with np.errstate(all="ignore"):
        return x.astype(dtype)


def test_one_input(data):
    fdp = atheris.FuzzedDataProvider(data)
    ndim = fdp.ConsumeIntInRange(0, 5)
    shape = tuple(fdp.ConsumeIntInRange(0, 6) for _ in range(ndim))
    dtype = DTYPES[fdp.ConsumeIntInRange(0, len(DTYPES) - 1)]
    x = _array(fdp, shape, dtype)
    if fdp.ConsumeBool() and x.ndim >= 2:
        x = x[:, ::2] if fdp.ConsumeBool() else np.asfortranarray(x)
    op = fdp.ConsumeIntInRange(0, 3)
    use_axis = fdp.ConsumeBool()
    axis = [fdp.ConsumeIntInRange(-6, 6) for _ in range(fdp.ConsumeIntInRange(1, 3))]
    fmt = FORMATS[fdp.ConsumeIntInRange(0, len(FORMATS) - 1)]
    c = fdp.ConsumeIntInRange(0, 8)
    scale = None if fdp.ConsumeBool() else _array(fdp, (c,), np.float32)
    offset = None if fdp.ConsumeBool() else _array(fdp, (c,), np.float64)
    eps = fdp.ConsumeFloatInRange(-1.0, 1.0) if fdp.ConsumeBool() else 1e-3
    training = fdp.ConsumeBool()
    out = np.empty_like(x) if fdp.ConsumeBool() and isinstance(x, np.ndarray) else None
    kwargs = {"axis": axis} if use_axis else {"data_format": fmt}
    try:
        if op == 0:
            y, m, v = ckbn.nn.fused_batch_norm(x, scale, offset, scale, offset, epsilon=eps,
                                               is_training=training, out=out, **kwargs)
            assert y.shape == x.shape and y.dtype == x.dtype
            if training and np.isfinite(x).all() and eps > 0 and abs(x).max() < 1e15:
                assert np.isfinite(m).all() and np.isfinite(v).all() and (v >= 0).all()
        elif op == 1:
            dx, ds, do = ckbn.nn.fused_batch_norm_grad(x, x, scale, offset, offset, epsilon=eps,
                                                       is_training=training, **kwargs)
            assert dx.shape == x.shape
        elif op == 2:
            m, v = ckbn.nn.moments(x, axis, keepdims=training)
            if np.isfinite(x).all() and abs(x).max() < 1e15:
                assert (v >= 0).all()
        else:
            ckbn.nn.batch_normalization(x, offset, scale, offset, scale, eps, out=out)
    except (ValueError, TypeError):
        pass


def main():
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
