"""ckbn.Layer bookkeeping: names, scopes, variables, updates, losses, nodes,
eager mode, copies, threads and memory.  Ports the applicable cases of
TensorFlow's base_layer tests by their facts."""

import copy
import gc
import threading
import tracemalloc

import numpy as np
import pytest

import ckbn
from ckbn import GraphKeys


pytestmark = pytest.mark.usefixtures("fresh_graph")   # tests/conftest.py


class MyLayer(ckbn.Layer):
    """A layer with a variable, a conditional update and an activity-free call."""

    def build(self, input_shape):
        self.my_var = self.add_variable("my_var", [2, 2], initializer="ones")

    def call(self, inputs):
        up = ckbn.Update(lambda v: v.assign_add(np.ones((2, 2))), self.my_var, name="up")
        self.add_update(up, inputs=inputs)
        return inputs * 2


class PrivateLayer(ckbn.Layer):
    def call(self, inputs):
        return inputs


def _x(shape=(3, 2), seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_layer_properties():
    layer = ckbn.Layer(name="my_layer")
    assert layer.variables == [] and layer.trainable_variables == []
    assert layer.non_trainable_variables == [] and layer.updates == [] and layer.losses == []
    assert not layer.built and layer.name == "my_layer"
    assert ckbn.Layer(name="my_layer", trainable=False).trainable is False


def test_unknown_keyword():
    with pytest.raises(TypeError, match="Keyword argument not understood"):
        ckbn.Layer(foo=1)


def test_add_variable_names_and_collections():
    layer = ckbn.Layer(name="my_layer")
    v = layer.add_variable("my_var", [2, 2], initializer="zeros")
    assert v.name == "my_layer/my_var:0"
    assert layer.variables == [v] and layer.trainable_variables == [v]
    assert ckbn.get_collection(GraphKeys.TRAINABLE_VARIABLES) == [v]
    w = layer.add_variable("non_trainable_var", [2, 2], initializer="zeros", trainable=False)
    assert layer.non_trainable_variables == [w]
    assert len(ckbn.get_collection(GraphKeys.TRAINABLE_VARIABLES)) == 1
    layer.add_variable("reg_var", [2, 2], initializer="ones",
                       regularizer=lambda x: float(np.sum(x)) * 0.5)
    assert layer.losses == [pytest.approx(2.0)]
    assert len(ckbn.get_collection(GraphKeys.REGULARIZATION_LOSSES)) == 1


def test_names_one_based_scopes_zero_based():
    a, b, c = ckbn.BatchNormalization(), ckbn.BatchNormalization(), ckbn.BatchNormalization(name="bn")
    assert (a.name, b.name, c.name) == ("batch_normalization_1", "batch_normalization_2", "bn")
    x = _x((4, 3))
    for layer in (a, b):
        layer(x, training=True)
    assert a.scope_name == "batch_normalization" and b.scope_name == "batch_normalization_1"
    assert a.gamma.name == "batch_normalization/gamma:0"
    assert b.moving_variance.name == "batch_normalization_1/moving_variance:0"


def test_scope_naming_and_enclosing_scope():
    layers = [PrivateLayer() for _ in range(2)]
    for lay in layers:
        lay(_x())
    assert [lay.scope_name for lay in layers] == ["private_layer", "private_layer_1"]
    named = [MyLayer(name="my_layer") for _ in range(3)]
    for lay in named:
        lay(_x())
    assert [lay.scope_name for lay in named] == ["my_layer", "my_layer_1", "my_layer_2"]
    with ckbn.variable_scope("var_scope"):
        inner = MyLayer(name="my_layer")
        inner(_x())
    assert inner.scope_name == "var_scope/my_layer"
    with ckbn.variable_scope("outer"):
        bn = ckbn.BatchNormalization()
        bn(_x((4, 3)), scope="custom")
    assert bn.gamma.name == "outer/custom/gamma:0"


def test_scope_name_before_use():
    with pytest.raises(ValueError, match="has not been used yet"):
        MyLayer(name="unused").scope_name


def test_variables_created_once_and_reuse():
    layer = MyLayer(name="my_layer")
    x = _x()
    layer.apply(x)
    layer.apply(x)
    assert [v.name for v in layer.variables] == ["my_layer/my_var:0"]
    with ckbn.variable_scope("new_scope"):
        reused = MyLayer(name="my_layer", _reuse=True)
    with ckbn.variable_scope("new_scope"):
        MyLayer(name="my_layer")(x)
    with ckbn.variable_scope("new_scope"):
        reused(x)
    assert reused.variables == []            # fetched, not tracked (as the reference)
    assert reused.my_var.name == "new_scope/my_layer/my_var:0"


def test_functional_reuse_shares_variables():
    x1, x2 = _x((5, 3), 1), _x((5, 3), 2)
    ckbn.batch_normalization(x1, name="bn", training=True)
    with pytest.raises(ValueError, match="bn/gamma already exists"):
        ckbn.batch_normalization(x1, name="bn", training=True)
    ckbn.batch_normalization(x2, name="bn", training=True, reuse=True)
    names = [v.name for v in ckbn.get_collection(GraphKeys.GLOBAL_VARIABLES)]
    assert names == ["bn/gamma:0", "bn/beta:0", "bn/moving_mean:0", "bn/moving_variance:0"]
    assert len(ckbn.get_collection(GraphKeys.UPDATE_OPS)) == 4


def test_functional_reuse_from_scope():
    x = _x((5, 3))
    with ckbn.variable_scope("scope"):
        ckbn.batch_normalization(x, training=True)
    assert len(ckbn.get_collection(GraphKeys.GLOBAL_VARIABLES)) == 4
    with ckbn.variable_scope("scope", reuse=True):
        ckbn.batch_normalization(x, training=True)
    assert len(ckbn.get_collection(GraphKeys.GLOBAL_VARIABLES)) == 4


def test_get_updates_for():
    layer = MyLayer()
    x = _x()
    layer(x)
    assert len(layer.updates) == 1
    assert layer.get_updates_for(None) == []
    assert len(layer.get_updates_for(x)) == 1
    x2 = _x(seed=3)
    layer(x2)
    assert len(layer.updates) == 2 and len(layer.get_updates_for(x2)) == 1
    assert len(ckbn.get_collection(GraphKeys.UPDATE_OPS)) == 2
    before = layer.my_var.numpy()
    ckbn.run_updates(layer.get_updates_for(x))
    np.testing.assert_array_equal(layer.my_var.numpy(), before + 1)
    ckbn.run_updates(layer.get_updates_for(x))     # an update applies once
    np.testing.assert_array_equal(layer.my_var.numpy(), before + 1)


class CallableUpdateLayer(ckbn.Layer):
    """Registers its update as a zero-arg callable, one or a list, as the
    reference's V1 layer allows."""

    def __init__(self, as_list=False, **kwargs):
        super().__init__(**kwargs)
        self.as_list = as_list

    def build(self, input_shape):
        self.count = self.add_variable("count", [], initializer="zeros")

    def call(self, inputs):
        def bump():
            self.count.assign_add(1.0)

        self.add_update([bump] if self.as_list else bump, inputs=inputs)
        return inputs + 0


@pytest.mark.parametrize("as_list", [False, True])
def test_add_update_takes_zero_arg_callables(as_list):
    layer = CallableUpdateLayer(as_list=as_list)
    x, x2 = _x(), _x(seed=4)
    layer(x)
    layer(x2)
    assert float(layer.count.numpy()) == 0.0                    # pending, not applied
    ups = layer.updates
    assert len(ups) == 2 and [u.name for u in ups] == ["bump", "bump"]
    assert layer.get_updates_for(x) == ups[:1] and layer.get_updates_for(x2) == ups[1:]
    assert ckbn.get_collection(GraphKeys.UPDATE_OPS) == ups
    ckbn.run_updates(layer.get_updates_for(x))
    assert float(layer.count.numpy()) == 1.0                    # ran once
    ckbn.run_updates(ckbn.get_collection(GraphKeys.UPDATE_OPS))
    assert float(layer.count.numpy()) == 2.0                    # the other one; no rerun
    ckbn.run_updates(layer.updates)
    assert float(layer.count.numpy()) == 2.0


def test_add_update_callables_in_eager_mode():
    """Eager mode records nothing: a callable is applied during the call, as an
    update object is, and dropped when the layer is not trainable."""
    layer = CallableUpdateLayer()
    frozen = CallableUpdateLayer(trainable=False)
    with ckbn.eager_mode():
        layer(_x())
        layer(_x())
        frozen(_x())
    assert float(layer.count.numpy()) == 2.0 and float(frozen.count.numpy()) == 0.0
    assert layer.updates == [] and ckbn.get_collection(GraphKeys.UPDATE_OPS) == []


def test_run_updates_takes_callables_and_checks_all_first():
    calls = []
    u = ckbn.Update(calls.append, "u")
    ckbn.run_updates([u, lambda: calls.append("f")])
    ckbn.run_updates([u, lambda: calls.append("f")])
    assert calls == ["u", "f", "f"]                             # an Update applies once
    with pytest.raises(TypeError, match="run_updates takes ckbn.Update objects .* got 3"):
        ckbn.run_updates([lambda: calls.append("g"), 3])
    assert calls == ["u", "f", "f"]


def test_graph_registry_operations():
    g = ckbn.Graph()
    assert g.get_all_collection_keys() == []
    g.extend_collection("k", [1, 2])
    g.add_to_collection("k", 3)
    assert g.get_collection("k") == [1, 2, 3] and g.get_all_collection_keys() == ["k"]
    assert [g.unique_layer_name("bn") for _ in range(2)] == ["bn_1", "bn_2"]
    assert [g.unique_scope_name("s", "bn") for _ in range(2)] == ["bn", "bn_1"]
    g.restart_scope_numbering("s")
    assert g.unique_scope_name("s", "bn") == "bn"

    def broken():
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        g.get_or_create_variable("a:0", broken)
    assert g.get_collection(GraphKeys.GLOBAL_VARIABLES) == []      # nothing registered
    v, created = g.get_or_create_variable("a:0", lambda: ckbn.Variable(1.0, "a:0"))
    w, again = g.get_or_create_variable("a:0", broken)
    assert created and not again and w is v
    f, _ = g.get_or_create_variable("f:0", lambda: ckbn.Variable(1.0, "f:0", trainable=False))
    assert g.get_collection(GraphKeys.GLOBAL_VARIABLES) == [v, f]
    assert g.get_collection(GraphKeys.TRAINABLE_VARIABLES) == [v]


def test_updates_hidden_when_not_trainable_and_toggle():
    bn = ckbn.BatchNormalization(trainable=False)
    x = _x((6, 3))
    y = bn(x, training=True)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-6)        # batch statistics still
    assert bn.updates == [] and ckbn.get_collection(GraphKeys.UPDATE_OPS) == []
    assert bn.trainable_weights == [] and len(bn.non_trainable_weights) == 4
    bn.trainable = True
    assert len(bn.updates) == 2
    assert bn.trainable_weights == []  # created non-trainable: stay so (as the reference)


def test_losses_and_activity_regularizer():
    bn = ckbn.BatchNormalization(gamma_regularizer=ckbn.regularizers.l2(0.5),
                                 beta_regularizer="l1", activity_regularizer=lambda y: 3.0)
    assert bn.losses == []
    x = _x((6, 3))
    bn(x, training=True)
    assert len(bn.losses) == 3
    assert len(bn.get_losses_for(None)) == 2 and len(bn.get_losses_for(x)) == 1
    assert bn.get_losses_for(None)[0] == pytest.approx(0.5 * 3)     # 0.5 * sum(1**2)
    bn.gamma.assign([2.0, 2.0, 2.0])
    assert bn.get_losses_for(None)[0] == pytest.approx(0.5 * 12)    # re-evaluated
    assert len(ckbn.get_collection(GraphKeys.REGULARIZATION_LOSSES)) == 3


def test_nodes_and_shapes():
    bn = ckbn.BatchNormalization()
    with pytest.raises(AttributeError, match="is not connected"):
        bn.input
    with pytest.raises(AttributeError, match="no inbound nodes"):
        bn.output
    with pytest.raises(RuntimeError, match="never been called"):
        bn.get_input_at(0)
    with pytest.raises(AttributeError, match="never been called"):
        bn.input_shape
    a, b = _x((4, 3), 1), _x((5, 3), 2)
    ya = bn(a, training=True)
    yb = bn(b)
    assert bn.input is a and bn.output is ya
    assert bn.get_input_at(1) is b and bn.get_output_at(1) is yb
    assert bn.get_input_shape_at(1) == (5, 3) and bn.get_output_shape_at(0) == (4, 3)
    with pytest.raises(ValueError, match="only 2 inbound nodes"):
        bn.get_input_at(2)
    with pytest.raises(AttributeError, match="different input shapes"):
        bn.input_shape
    bn2 = ckbn.BatchNormalization()
    bn2(a, training=True)
    bn2(a + 1)
    assert bn2.input_shape == (4, 3) and bn2.output_shape == (4, 3)


def test_eager_mode():
    bn = ckbn.BatchNormalization(momentum=0.5)
    x = _x((6, 3))
    with ckbn.eager_mode():
        assert ckbn.executing_eagerly()
        bn(x, training=True)
        np.testing.assert_allclose(bn.moving_mean.numpy(), 0.5 * x.mean(0), rtol=1e-6)
        for fn in (lambda: bn.updates, lambda: bn.get_updates_for(x), lambda: bn.add_loss(1.0),
                   lambda: bn.get_losses_for(x), lambda: bn.get_input_at(0),
                   lambda: bn.get_output_shape_at(0), lambda: bn.input):
            with pytest.raises(RuntimeError, match="Eager mode"):
                fn()
        with pytest.raises(ValueError, match="Activity regularization"):
            ckbn.BatchNormalization(activity_regularizer=lambda y: 0.0)
    assert not ckbn.executing_eagerly()
    assert ckbn.get_collection(GraphKeys.UPDATE_OPS) == []


def test_graph_mismatch():
    layer = MyLayer()
    layer(_x())
    with ckbn.Graph().as_default():
        with pytest.raises(ValueError, match="graph are not the same"):
            layer(_x())


def test_count_params_and_weights():
    bn = ckbn.BatchNormalization()
    with pytest.raises(ValueError, match="isn't built"):
        bn.count_params()
    bn.build((None, 3, 4))
    assert bn.count_params() == 16 and len(bn.weights) == 4
    bn2 = ckbn.BatchNormalization(scale=False, center=False)
    bn2.build((None, 3, 4))
    assert bn2.trainable_weights == [] and len(bn2.weights) == 2
    w = [np.full(4, i, np.float32) for i in range(4)]
    bn.set_weights(w)
    assert [float(v[0]) for v in bn.get_weights()] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="expecting 4 weights"):
        bn.set_weights(w[:3])


def test_deepcopy_of_called_layer_is_independent():
    bn = ckbn.BatchNormalization(gamma_regularizer="l2")
    x = _x((6, 3))
    bn(x, training=True)
    clone = copy.deepcopy(bn)
    assert clone.name == bn.name and clone.scope_name == bn.scope_name
    clone.gamma.assign([5.0, 5.0, 5.0])
    assert float(bn.gamma.numpy()[0]) == 1.0
    assert clone.losses[0] != bn.losses[0]
    ckbn.run_updates(clone.updates)
    assert float(bn.moving_mean.numpy()[0]) == 0.0
    np.testing.assert_allclose(clone.moving_mean.numpy(), 0.01 * x.mean(0), rtol=1e-5)
    np.testing.assert_allclose(clone(x), bn(x) * 0 + clone(x))


def test_threads_lose_no_eager_update_and_keep_bookkeeping(fresh_graph):
    bn = ckbn.BatchNormalization(momentum=0.0)
    x = np.ones((4, 3), np.float32)
    bn(x)                                        # build
    layer = MyLayer()
    layer(_x())
    errors = []

    def work():
        try:
            with fresh_graph.as_default():      # default graphs are per thread
                for _ in range(200):
                    layer(_x())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(layer.updates) == 801 and len(layer._inbound_nodes) == 801
    assert len(ckbn.get_collection(GraphKeys.UPDATE_OPS)) == 801
    before = layer.my_var.numpy()
    ckbn.run_updates(layer.updates)
    np.testing.assert_array_equal(layer.my_var.numpy(), before + 801)

    counter = MyLayer()
    counter(_x())
    ckbn.run_updates(counter.updates)

    def eager_work():
        with fresh_graph.as_default(), ckbn.eager_mode():
            for _ in range(250):
                counter(_x())

    threads = [threading.Thread(target=eager_work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(counter.my_var.numpy(), np.full((2, 2), 1 + 1 + 1000))


def test_threads_have_their_own_mode_and_graph():
    seen = {}

    def work():
        seen["eager"] = ckbn.executing_eagerly()
        seen["graph"] = ckbn.get_default_graph()

    with ckbn.eager_mode():
        t = threading.Thread(target=work)
        t.start()
        t.join()
    assert seen["eager"] is False


def test_sgd_applies_constraints():
    bn = ckbn.BatchNormalization(gamma_constraint=ckbn.constraints.non_neg(),
                                 beta_constraint=lambda b: np.clip(b, -0.1, 0.1))
    x = _x((8, 3))
    bn(x, training=True)
    opt = ckbn.optimizers.SGD(learning_rate=1.0)
    opt.apply_gradients(zip([np.full(3, 5.0), np.full(3, -5.0)], bn.trainable_weights))
    np.testing.assert_array_equal(bn.gamma.numpy(), np.zeros(3))
    np.testing.assert_array_equal(bn.beta.numpy(), np.full(3, 0.1, np.float32))
    mom = ckbn.optimizers.SGD(learning_rate=0.1, momentum=0.9)
    v = ckbn.Variable(np.zeros(2), name="v:0")
    for _ in range(2):
        mom.apply_gradients([(np.ones(2), v)])
    np.testing.assert_allclose(v.numpy(), -(0.1 + (0.9 * 0.1 + 0.1)))


@pytest.mark.slow
def test_graph_mode_training_loop_memory():
    """100 000 graph-mode training calls on fresh inputs with their updates run:
    bounded memory, and no input or output array kept alive."""
    import warnings

    bn = ckbn.BatchNormalization()
    rng = np.random.default_rng(0)
    base = rng.random((32, 8, 8, 16), dtype=np.float32)
    bn(base, training=True)
    gc.collect()
    tracemalloc.start()
    start = tracemalloc.get_traced_memory()[0]
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for i in range(100_000):
            x = base + np.float32(i % 7)
            y = bn(x, training=True)
            ckbn.run_updates(bn.get_updates_for(x))
    grown = tracemalloc.get_traced_memory()[0] - start
    tracemalloc.stop()
    assert grown < 50 * 2**20, f"grew {grown / 2**20:.1f} MiB"
    assert sum("eager_mode" in str(m.message) for m in w) == 1
    del x, y
    gc.collect()
    # Nodes hold their arrays weakly: node 0 saw `base` (still alive here), and the
    # layer keeps only the latest call's input (for backward).
    nodes = bn._inbound_nodes
    assert nodes[0].input_tensors is base
    assert all(n.input_tensors is None and n.output_tensors is None for n in nodes[1:-1])
    assert nodes[5].input_shapes == (32, 8, 8, 16)
