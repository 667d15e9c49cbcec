"""``keras_plugin._policy``: the dispatch rule (crossover) and the thread rule.

The rules themselves are checked here in-process; the layer following the
dispatch rule, with the same results either side of the crossover (against
float64 NumPy), runs once per Keras backend in its own process
(``tests/keras_policy_cases.py``).
"""

from __future__ import annotations

import pytest

pytest.importorskip("keras")

import ckbn  # noqa: E402
from keras_plugin import _policy  # noqa: E402
from tests.test_keras_fold import run_cases  # noqa: E402
from tests.twin import TWIN  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_overrides():
    saved = dict(_policy._overrides)
    yield
    _policy._overrides.clear()
    _policy._overrides.update(saved)


@pytest.mark.parametrize("backend", _policy.BACKENDS)
@pytest.mark.parametrize("mode", _policy.MODES)
def test_use_kernels_follows_the_measured_crossover(backend, mode):
    t = _policy.CROSSOVER[(backend, mode)]
    assert _policy.min_elements(backend, mode) == t
    if t is None:
        for n in (0, 1, 10**9, None):
            assert _policy.use_kernels(backend, mode, n, "float32") is False
        return
    assert _policy.use_kernels(backend, mode, t, "float32") is True
    assert _policy.use_kernels(backend, mode, t + 10**6, "float64") is True
    if t > 0:
        assert _policy.use_kernels(backend, mode, t - 1, "float32") is False
        assert _policy.use_kernels(backend, mode, 0, "float16") is False
    # a size unknown at trace time takes the large-size choice
    assert _policy.use_kernels(backend, mode, None, "float32") is True


def test_crossover_table_covers_every_backend_and_mode():
    assert set(_policy.CROSSOVER) == {(b, m) for b in _policy.BACKENDS for m in _policy.MODES}
    for value in _policy.CROSSOVER.values():
        assert value is None or (isinstance(value, int) and value >= 0)


def test_set_min_elements_overrides_and_restores():
    prev = _policy.set_min_elements("torch", None, 5000)
    assert prev == {m: _policy.CROSSOVER[("torch", m)] for m in _policy.MODES}
    assert _policy.use_kernels("torch", "train", 4999) is False
    assert _policy.use_kernels("torch", "infer", 5000) is True
    _policy.set_min_elements("torch", "train", None)
    assert _policy.use_kernels("torch", "train", 10**9) is False
    assert _policy.use_kernels("torch", "infer", 10**9) is True
    assert _policy.set_min_elements("torch", None, "measured") == {"train": None,
                                                                   "infer": 5000}
    for m in _policy.MODES:
        assert _policy.min_elements("torch", m) == _policy.CROSSOVER[("torch", m)]


@pytest.mark.parametrize("call,exc,text", [
    (lambda: _policy.use_kernels("mxnet", "train", 10), ValueError, "'mxnet'"),
    (lambda: _policy.use_kernels("torch", "fit", 10), ValueError, "'fit'"),
    (lambda: _policy.use_kernels("torch", "train", -3), ValueError, "-3"),
    (lambda: _policy.use_kernels("torch", "train", 2.5), TypeError, "2.5"),
    (lambda: _policy.use_kernels("torch", "train", True), TypeError, "True"),
    (lambda: _policy.use_kernels("torch", "train", 10, "int32"), ValueError, "'int32'"),
    (lambda: _policy.op_threads("tensorflow", -1), ValueError, "-1"),
    (lambda: _policy.op_threads("caffe", 10), ValueError, "'caffe'"),
    (lambda: _policy.set_min_elements("torch", "train", "many"), TypeError, "'many'"),
    (lambda: _policy.set_min_elements("torch", "both", 5), ValueError, "'both'"),
])
def test_bad_arguments_name_the_value_and_change_nothing(call, exc, text):
    before = {k: _policy.min_elements(*k) for k in _policy.CROSSOVER}
    with pytest.raises(exc, match=text.replace(".", r"\.")):
        call()
    assert {k: _policy.min_elements(*k) for k in _policy.CROSSOVER} == before


def test_numpy_integer_sizes_are_accepted():
    np = pytest.importorskip("numpy")
    assert _policy.use_kernels("torch", "train", np.int64(10**8)) is \
        _policy.use_kernels("torch", "train", 10**8)


def test_n_elements():
    assert _policy.n_elements((16, 32, 32, 3)) == 16 * 32 * 32 * 3
    assert _policy.n_elements((None, 4)) is None
    assert _policy.n_elements(()) == 1


def _threads(n):
    """The threads of a call that may run ``n``: 1 on the NumPy twin
    (CKBN_KERNELS=numpy), which has no OpenMP (ckbn.get_num_threads() is 1
    there)."""
    return 1 if TWIN else n


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_op_threads_one_thread_for_small_calls_in_pooled_frameworks(backend):
    small = _policy.PARALLEL_MIN_ELEMENTS - 1
    large = _policy.PARALLEL_MIN_ELEMENTS
    with ckbn.num_threads(2):
        assert _policy.op_threads(backend, small) == 1
        assert _policy.op_threads(backend, large) == _threads(2)
        assert _policy.op_threads(backend, None) == _threads(2)


@pytest.mark.parametrize("backend", _policy.BACKENDS)
def test_op_threads_never_exceeds_the_users_setting(backend):
    for n in (1, 3):
        with ckbn.num_threads(n):
            for size in (10, _policy.PARALLEL_MIN_ELEMENTS, 10**8):
                got = _policy.op_threads(backend, size)
                assert 1 <= got <= n
            assert _policy.op_threads(backend, 10**8) == _threads(n)


def test_op_threads_torch_and_numpy_keep_ckbns_default():
    with ckbn.num_threads(2):
        assert _policy.op_threads("torch", 10) == _threads(2)
        assert _policy.op_threads("numpy", 10) == _threads(2)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax", "numpy"])
def test_layer_follows_the_crossover_on_backend(backend, tmp_path):
    run_cases("keras_policy_cases.py", backend, tmp_path)


def test_mode_none_is_the_smallest_threshold_in_force():
    _policy.set_min_elements("torch", "train", 700)
    _policy.set_min_elements("torch", "infer", 300)
    assert _policy.min_elements("torch", None) == 300
    _policy.set_min_elements("torch", "infer", None)
    assert _policy.min_elements("torch", None) == 700
    _policy.set_min_elements("torch", None, None)
    assert _policy.min_elements("torch", None) is None


def test_requested_tracks_explicit_thresholds_only():
    _policy.set_min_elements("jax", None, "measured")
    assert _policy.requested("jax") is False      # the measured table is no request
    _policy.set_min_elements("jax", "infer", 0)
    assert _policy.requested("jax") is True
    assert _policy.requested("torch") is False
    _policy.set_min_elements("jax", None, None)   # "never" asks for no kernels
    assert _policy.requested("jax") is False
    with pytest.raises(ValueError, match="'mxnet'"):
        _policy.requested("mxnet")


def test_public_jax_threshold_is_the_policy_entry():
    """keras_plugin.set/get_jax_min_elements read and write _policy, nothing else."""
    import keras_plugin

    _policy.set_min_elements("jax", None, "measured")
    measured = min(v for m in _policy.MODES
                   if (v := _policy.CROSSOVER[("jax", m)]) is not None)
    assert keras_plugin.get_jax_min_elements() == measured
    keras_plugin.set_jax_min_elements(4096)
    assert {m: _policy.min_elements("jax", m) for m in _policy.MODES} == \
        {"train": 4096, "infer": 4096}
    assert keras_plugin.get_jax_min_elements() == 4096
    assert _policy.requested("jax") is True
    assert _policy.use_kernels("jax", "train", 4095) is False
    assert _policy.use_kernels("jax", "infer", 4096) is True
    keras_plugin.set_jax_min_elements(None)
    assert keras_plugin.get_jax_min_elements() is None
    assert _policy.use_kernels("jax", "infer", 10**9) is False
    for bad, exc in ((-1, ValueError), ("big", TypeError), (True, TypeError)):
        with pytest.raises(exc, match=repr(bad).replace("'", "'?")):
            keras_plugin.set_jax_min_elements(bad)
        assert keras_plugin.get_jax_min_elements() is None   # unchanged
