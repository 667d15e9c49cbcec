"""Property tests of BatchNormalization over shapes, axes, dtypes and
configurations, against a float64 NumPy model of the reference semantics."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import ckbn


@st.composite
def configs(draw):
    ndim = draw(st.integers(2, 5))
    shape = tuple(draw(st.integers(1, 5)) for _ in range(ndim))
    shape = (draw(st.integers(2, 6)),) + shape[1:]
    axes = draw(st.lists(st.integers(1, ndim - 1), min_size=1, max_size=ndim - 1, unique=True))
    vbs = draw(st.sampled_from([None] + [d for d in (1, 2, 3) if shape[0] % d == 0]))
    return dict(shape=shape, axes=sorted(axes), vbs=vbs,
                center=draw(st.booleans()), scale=draw(st.booleans()),
                momentum=draw(st.floats(0.0, 1.0)), epsilon=draw(st.sampled_from([1e-3, 1e-5, 0.1])),
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                fused=draw(st.sampled_from([None, False])),
                loc=draw(st.floats(-100, 100)), sd=draw(st.floats(0.1, 10)))


def _model(x, c, gamma, beta, mm, mv):
    """Float64 model: training output, moving statistics after the update, and
    gradients (dy = w) of one training call."""
    xd = x.astype(np.float64)
    B = x.shape[0]
    ndim = x.ndim
    if c["vbs"]:
        g = B // c["vbs"]
        xg = xd.reshape((c["vbs"], g) + x.shape[1:])          # strided ghost batches
        red = tuple([0] + [i + 1 for i in range(1, ndim) if i not in c["axes"]])
    else:
        xg = xd
        red = tuple(i for i in range(ndim) if i not in c["axes"])
    mean = xg.mean(axis=red, keepdims=True)
    var = ((xg - mean) ** 2).mean(axis=red, keepdims=True)
    kshape = tuple(n if i in c["axes"] else 1 for i, n in enumerate(x.shape))
    if c["vbs"]:
        kshape = kshape[:1] + (1,) + kshape[1:]
    y = (xg - mean) / np.sqrt(var + c["epsilon"]) * gamma.reshape(kshape) + beta.reshape(kshape)
    new_mean = mean.mean(axis=1, keepdims=True) if c["vbs"] else mean
    new_var = var.mean(axis=1, keepdims=True) if c["vbs"] else var
    # fused: 4-D with axis 1 or 3, or 5-D with axis 1 or 4; no ghost batches; float16/32
    fused = (c["fused"] is None and ndim in (4, 5) and c["axes"] in ([1], [ndim - 1])
             and not c["vbs"] and x.dtype == np.float32)
    if fused:
        n = xd.size // np.prod([x.shape[a] for a in c["axes"]])
        new_var = new_var * n / (n - 1) if n > 1 else new_var
    decay = float(np.float32(1 - c["momentum"]))   # the reference's float32 decay
    mm2 = mm - (mm - new_mean.reshape(mm.shape)) * decay
    mv2 = mv - (mv - new_var.reshape(mv.shape)) * decay
    return y.reshape(x.shape), mm2, mv2, fused


@given(c=configs())
def test_layer_matches_float64_model(c):
    rng = np.random.default_rng(abs(hash((c["shape"], tuple(c["axes"])))) % 2**32)
    x = (rng.standard_normal(c["shape"]) * c["sd"] + c["loc"]).astype(c["dtype"])
    with ckbn.Graph().as_default():
        bn = ckbn.BatchNormalization(
            axis=c["axes"], momentum=c["momentum"], epsilon=c["epsilon"], center=c["center"],
            scale=c["scale"], fused=c["fused"], virtual_batch_size=c["vbs"],
            gamma_initializer=ckbn.initializers.random_uniform_initializer(0.5, 2.0, seed=1),
            beta_initializer=ckbn.initializers.random_normal_initializer(seed=2),
            moving_variance_initializer=ckbn.initializers.constant_initializer(2.0))
        y = bn(x, training=True)
        pshape = bn.moving_mean.shape
        gamma = bn.gamma.numpy().astype(np.float64) if bn.gamma is not None else np.ones(pshape)
        beta = bn.beta.numpy().astype(np.float64) if bn.beta is not None else np.zeros(pshape)
        mm = bn.moving_mean.numpy().astype(np.float64)
        mv = bn.moving_variance.numpy().astype(np.float64)
        ry, rmm, rmv, fused = _model(x, c, gamma, beta, mm, mv)
        assert bn.fused == fused
        tol = 2e-4 if c["dtype"] == np.float32 else 1e-9
        big = 1 + (abs(c["loc"]) + c["sd"]) / np.sqrt(c["epsilon"]) * (1e-3 if c["dtype"] == np.float32 else 0)
        np.testing.assert_allclose(y, ry, rtol=tol, atol=tol * big)
        ckbn.run_updates(bn.updates)
        np.testing.assert_allclose(bn.moving_mean.numpy(), rmm, rtol=tol, atol=tol * (1 + abs(c["loc"])))
        np.testing.assert_allclose(bn.moving_variance.numpy(), rmv, rtol=tol * 10, atol=tol)
        # Inference afterwards uses the moving statistics.
        yi = bn(x, training=False)
        assert yi.shape == x.shape and yi.dtype == x.dtype and np.isfinite(yi).all()
