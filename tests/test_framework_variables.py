"""Variables, initializers, regularizers, constraints and SGD: values by their
formulas (Keras / TF 1.x definitions) and clear errors that change nothing."""

import threading

import numpy as np
import pytest

import ckbn
from ckbn import constraints as C
from ckbn import initializers as I
from ckbn import regularizers as R

W = np.array([[1.0, -2.0], [3.0, 4.0]], np.float32)
EPS = 1e-7


def test_variable_copies_live_value_and_assignments():
    v = ckbn.Variable(np.zeros(3, np.float32), name="s/v:0")
    assert v.name == "s/v:0" and v.shape == (3,) and v.dtype == np.float32
    a = v.numpy()
    a[0] = 5.0  # numpy() is a copy
    assert v.numpy()[0] == 0.0
    assert v.value is v.value  # the live array, no copy
    np.testing.assert_array_equal(v.assign([1, 2, 3]).numpy(), [1, 2, 3])
    np.testing.assert_array_equal(v.assign_add(1.0).numpy(), [2, 3, 4])
    np.testing.assert_array_equal(v.assign_sub(np.ones(3)).numpy(), [1, 2, 3])
    np.testing.assert_array_equal(np.asarray(v), [1, 2, 3])
    assert v.dtype == np.float32


def test_variable_bad_assignments_name_the_value_and_change_nothing():
    v = ckbn.Variable(np.arange(3, dtype=np.float32), name="v:0")
    with pytest.raises(ValueError, match=r"shape \(4,\) to v:0 of shape \(3,\)"):
        v.assign(np.zeros(4))
    with pytest.raises(TypeError, match="<U3"):
        v.assign_add("abc")
    np.testing.assert_array_equal(v.numpy(), [0, 1, 2])


def test_assign_add_is_atomic_across_threads():
    v = ckbn.Variable(np.zeros(4, np.float64), name="c:0")

    def work():
        for _ in range(2000):
            v.assign_add(1.0)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(v.numpy(), np.full(4, 16000.0))


def test_initializers_strings_objects_and_callables():
    np.testing.assert_array_equal(I.get("zeros")((2, 3), np.float32), np.zeros((2, 3)))
    np.testing.assert_array_equal(I.get("ones")((2,), np.float32), [1, 1])
    c = I.constant_initializer(3.5)((2,), np.float64)
    assert c.dtype == np.float64 and list(c) == [3.5, 3.5]
    a = I.random_normal_initializer(mean=1.0, stddev=0.5, seed=7)((4000,), np.float32)
    b = I.random_normal_initializer(mean=1.0, stddev=0.5, seed=7)((4000,), np.float32)
    np.testing.assert_array_equal(a, b)  # seeded: reproducible
    assert a.dtype == np.float32
    assert abs(a.mean() - 1.0) < 0.05 and abs(a.std() - 0.5) < 0.05
    g = I.glorot_uniform_initializer(seed=1)((30, 20), np.float32)
    limit = np.sqrt(6.0 / 50)
    assert g.shape == (30, 20) and np.all(np.abs(g) <= limit) and g.std() > limit / 3
    def fn(shape, dtype):
        return np.full(shape, 2.0, dtype)
    assert I.get(fn) is fn
    with pytest.raises(ValueError, match="'nope'"):
        I.get("nope")


def test_regularizer_values():
    # Keras definitions: l1 * sum|w| + l2 * sum w^2
    assert float(R.l1(0.1)(W)) == pytest.approx(1.0)
    assert float(R.l2(0.1)(W)) == pytest.approx(3.0)
    assert float(R.l1_l2(0.1, 0.2)(W)) == pytest.approx(1.0 + 6.0)
    assert float(R.get("l2")(W)) == pytest.approx(0.3)
    assert R.get(None) is None
    with pytest.raises(ValueError, match="'nope'"):
        R.get("nope")


def test_constraint_values():
    norms = np.sqrt((W ** 2).sum(axis=0, keepdims=True))
    np.testing.assert_allclose(C.non_neg()(W), [[1, 0], [3, 4]])
    np.testing.assert_allclose(C.max_norm(2.0)(W), W * np.minimum(norms, 2.0) / (EPS + norms),
                               rtol=1e-6)
    np.testing.assert_allclose(C.unit_norm()(W), W / (EPS + norms), rtol=1e-6)
    want = W * (0.5 * np.clip(norms, 0.0, 2.0) + 0.5 * norms) / (EPS + norms)
    np.testing.assert_allclose(C.min_max_norm(0.0, 2.0, rate=0.5)(W), want, rtol=1e-6)
    with pytest.raises(ValueError, match="'nope'"):
        C.get("nope")


def test_sgd_plain_and_momentum_with_constraint():
    v = ckbn.Variable(np.array([1.0, 1.0], np.float32), name="v:0")
    ckbn.optimizers.SGD(0.5).apply_gradients([(np.array([1.0, -4.0]), v)])
    np.testing.assert_allclose(v.numpy(), [0.5, 3.0])

    w = ckbn.Variable(np.array([0.0], np.float64), name="w:0")
    opt = ckbn.optimizers.SGD(0.1, momentum=0.9)
    for _ in range(2):
        opt.apply_gradients([(np.array([1.0]), w)])
    # m1 = -0.1, w = -0.1; m2 = 0.9 * -0.1 - 0.1 = -0.19, w = -0.29
    np.testing.assert_allclose(w.numpy(), [-0.29])

    nn = ckbn.Variable(np.array([0.1, 1.0]), name="n:0", constraint=C.non_neg())
    ckbn.optimizers.SGD(1.0).apply_gradients([(np.array([1.0, 0.5]), nn)])
    np.testing.assert_allclose(nn.numpy(), [0.0, 0.5])


def test_sgd_bad_arguments_change_nothing():
    with pytest.raises(ValueError, match="-1"):
        ckbn.optimizers.SGD(-1)
    a = ckbn.Variable(np.ones(2), name="a:0")
    b = ckbn.Variable(np.ones(3), name="b:0")
    with pytest.raises(ValueError, match=r"b:0 of shape \(3,\)"):
        ckbn.optimizers.SGD(1.0).apply_gradients([(np.ones(2), a), (np.ones(2), b)])
    np.testing.assert_array_equal(a.numpy(), [1, 1])  # checked before any update


def test_sgd_momentum_is_per_variable_and_not_inherited_by_a_new_one():
    import gc
    opt = ckbn.optimizers.SGD(0.1, momentum=0.9)
    for _ in range(20):
        v = ckbn.Variable(np.array([0.0]), name="v:0")
        opt.apply_gradients([(np.array([1.0]), v)])
        # a fresh variable (possibly at a reused id) starts with no momentum
        np.testing.assert_allclose(v.numpy(), [-0.1])
        del v
        gc.collect()
    assert len(opt._slots) == 0  # slots die with their variables


def test_assign_moving_average_formula_and_float32_rate():
    """v <- v - (v - value) * (1 - decay), with 1 - decay rounded to float32 first
    (TensorFlow turns the Python float into a float32 tensor)."""
    v = ckbn.Variable(np.array([1.0, -2.0, 4.0]), name="m:0")          # float64
    value = np.array([3.0, 0.5, -1.0])
    rate = float(np.float32(1.0 - 0.9))
    assert rate != 1.0 - 0.9
    want = np.array([1.0, -2.0, 4.0]) - (np.array([1.0, -2.0, 4.0]) - value) * rate
    assert v.assign_moving_average(value, 0.9) is v
    np.testing.assert_array_equal(v.numpy(), want)
    w = ckbn.Variable(np.ones((1, 3), np.float32), name="w:0")
    w.assign_moving_average([0.0, 1.0, 2.0], 0.25)                     # reshaped to (1, 3)
    np.testing.assert_array_equal(w.numpy(), np.float32([[0.25, 1.0, 1.75]]))
    assert w.dtype == np.float32


def test_assign_moving_average_bad_input_names_it_and_changes_nothing():
    v = ckbn.Variable(np.zeros(3, np.float32), name="m:0")
    with pytest.raises(ValueError, match=r"shape \(4,\) into m:0 of shape \(3,\)"):
        v.assign_moving_average(np.ones(4), 0.5)
    with pytest.raises(TypeError, match="<U1"):
        v.assign_moving_average(np.array(["a", "b", "c"]), 0.5)
    with pytest.raises(TypeError, match="'half'"):
        v.assign_moving_average(np.ones(3), "half")
    np.testing.assert_array_equal(v.numpy(), [0, 0, 0])


def test_assign_moving_average_is_atomic_across_threads():
    """All updates toward the same value commute, so n updates leave the value
    n sequential updates leave; a lost update (a read-modify-write race) would
    leave that of fewer."""
    decay, n_threads, per_thread = 0.99, 4, 50
    v = ckbn.Variable(np.zeros(1000), name="m:0")
    rate = float(np.float32(1.0 - decay))
    want = np.zeros(1000)
    for _ in range(n_threads * per_thread):
        want = want - (want - 1.0) * rate
    fewer = np.zeros(1000)
    for _ in range(n_threads * per_thread - 1):
        fewer = fewer - (fewer - 1.0) * rate
    assert not np.array_equal(want, fewer)

    def work():
        for _ in range(per_thread):
            v.assign_moving_average(np.ones(1000), decay)

    threads = [threading.Thread(target=work) for _ in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    np.testing.assert_array_equal(v.numpy(), want)
