"""TensorFlow's tests of the ``tf.layers`` base layer that a BatchNormalization
layer inherits, on ckbn.

Ported by their facts from tf-keras 2.21, ``tf_keras/legacy_tf_layers/base_test.py``
(``BaseLayerTest``, ``DTypeTest``), onto ``ckbn.Layer`` subclasses and
``ckbn.BatchNormalization``; then the same class of checks on every public
method that takes inputs (nested structures, tuples, ``None``) and on the
properties after ``build()`` without a call.  The facts about the reference
that are not in TensorFlow's test file were read off the running reference
(``tf.compat.v1.layers.BatchNormalization``, graph mode) and are compared
with it directly in ``test_structures_match_the_reference``.

Not portable (TensorFlow machinery with no NumPy counterpart):

* reachability through the graph: ``get_updates_for([inputs])`` where the
  layer was called on ``inputs + 1`` finds the update in TensorFlow; NumPy
  arrays carry no graph, so only the arrays a call received are matched;
* ``testKerasStyleAddWeight``, ``testAddWeight``,
  ``testInvalidTrainableSynchronizationCombination``,
  ``testReusePartitionedVariablesAndRegularizers``: ``synchronization``,
  ``aggregation``, ``use_resource``, partitioners and ``tf.Variable`` kinds;
* ``testCall``/``testDeepCopy``'s ``outputs.op.name`` (op names of a graph);
  the rest of those tests is ported;
* ``testScopeNaming``'s ``backend.name_scope`` part (name scopes of ops);
* ``testNameScopeIsConsistentWithVariableScope``,
  ``testVariablesAreLiftedFromFunctionBuildingGraphs`` (op name scopes and
  ``FuncGraph``);
* ``test_count_params`` uses ``tf.layers.Dense``; ported on
  ``BatchNormalization``.
"""

import copy

import numpy as np
import pytest

import ckbn


@pytest.fixture(autouse=True)
def _fresh_graph(fresh_graph):
    yield fresh_graph


class _Identity(ckbn.Layer):
    def call(self, inputs):
        return inputs


class _Square(ckbn.Layer):
    def call(self, inputs):
        return np.square(inputs)


# -- BaseLayerTest ---------------------------------------------------------------------
def test_layer_properties():
    """testLayerProperties."""
    layer = ckbn.Layer(name="my_layer")
    assert layer.variables == []
    assert layer.trainable_variables == []
    assert layer.non_trainable_variables == []
    assert layer.updates == []
    assert layer.losses == []
    assert layer.built is False
    assert ckbn.Layer(name="my_layer", trainable=False).trainable is False


def test_int64_layer():
    """testInt64Layer: a weight of an int64 layer without dtype is int64."""
    layer = ckbn.Layer(name="my_layer", dtype="int64")
    var = layer.add_weight("my_var", [2, 2], initializer="zeros")
    assert var.dtype == np.int64
    np.testing.assert_array_equal(var.numpy(), np.zeros((2, 2), np.int64))


def test_call_and_deepcopy():
    """testCall, testDeepCopy (without the op names)."""
    layer = _Square(name="my_layer")
    layer._private_tensor = np.random.default_rng(0).random(())
    x = np.random.default_rng(1).random(5).astype(np.float32)
    out = layer(x)
    assert layer.built is True
    np.testing.assert_array_equal(out, np.square(x))
    layer_copy = copy.deepcopy(layer)
    assert layer_copy.name == layer.name
    assert layer_copy._scope.name == layer._scope.name
    assert layer_copy._private_tensor == layer._private_tensor


def test_scope_naming():
    """testScopeNaming (without the name-scope part)."""
    x = np.random.default_rng(0).random(5)

    class PrivateLayer(ckbn.Layer):
        def call(self, inputs):
            return inputs

    def scope_of(**kw):
        layer = PrivateLayer(**kw)
        layer(x)
        return layer._scope.name

    assert scope_of() == "private_layer"
    assert scope_of() == "private_layer_1"
    assert scope_of(name="my_layer") == "my_layer"
    assert scope_of(name="my_layer") == "my_layer_1"
    assert scope_of(name="my_layer") == "my_layer_2"
    with ckbn.variable_scope("var_scope"):
        assert scope_of() == "var_scope/private_layer"
        assert scope_of(name="my_layer") == "var_scope/my_layer"
        assert scope_of(name="my_layer") == "var_scope/my_layer_1"


def _spec_layer(**spec):
    class CustomLayer(ckbn.Layer):
        def __init__(self):
            super().__init__()
            self.input_spec = ckbn.InputSpec(**spec)

        def call(self, inputs):
            return inputs

    return CustomLayer()


@pytest.mark.parametrize("spec, bad, pattern, goods", [
    ({"ndim": 2}, np.array([1]), r"expected ndim=2", [np.array([[1], [2]])]),
    ({"min_ndim": 2}, np.array([1]), r"expected min_ndim=2",
     [np.array([[1], [2]]), np.array([[[1], [2]]])]),
    ({"max_ndim": 2}, np.array([[[1], [2]]]), r"expected max_ndim=2",
     [np.array([1]), np.array([[1], [2]])]),
    ({"dtype": "float32"}, np.array(1, np.int32), r"expected dtype=float32",
     [np.array(1.0, np.float32)]),
    ({"axes": {-1: 2}}, np.array([1, 2, 3]), r"expected axis",
     [np.array([1, 2]), np.array([[1, 2], [3, 4], [5, 6]])]),
    ({"shape": (None, 3)}, np.array([[1, 2]]), r"expected shape",
     [np.array([[1, 2, 3], [4, 5, 6]])]),
], ids=["ndim", "min_ndim", "max_ndim", "dtype", "axes", "shape"])
def test_input_spec_checks(spec, bad, pattern, goods):
    """testInputSpec{Ndim,MinNdim,MaxNdim,Dtype,Axes,Shape}Check."""
    with pytest.raises(ValueError, match=pattern):
        _spec_layer(**spec)(bad)
    for good in goods:
        np.testing.assert_array_equal(_spec_layer(**spec)(good), good)


def test_no_input_spec():
    """testNoInputSpec."""
    layer = _Identity()
    layer.input_spec = None
    for x in (np.array(1), np.zeros((), np.int32), np.zeros((2, 3), np.int32)):
        assert layer(x) is x


def test_count_params():
    """test_count_params, on BatchNormalization: 4 * C after build; ValueError before."""
    bn = ckbn.BatchNormalization()
    bn.build((None, 4))
    assert bn.count_params() == 4 * 4
    with pytest.raises(ValueError, match="isn't built"):
        ckbn.BatchNormalization().count_params()


def test_dict_input_output():
    """testDictInputOutput."""
    class DictLayer(ckbn.Layer):
        def call(self, inputs):
            return {"l" + key: inputs[key] for key in inputs}

    i1, i2 = np.array(3, np.int32), np.array(4.0, np.float32)
    result = DictLayer()({"abel": i1, "ogits": i2})
    assert isinstance(result, dict)
    assert set(result) == {"label", "logits"}
    assert result["label"] == 3 and result["logits"] == 4.0


def test_activity_regularizer():
    """testActivityRegularizer: one loss conditional on the input."""
    layer = ckbn.Layer(activity_regularizer=np.sum)
    x = np.arange(4, dtype=np.int32)
    layer(x)
    losses = layer.get_losses_for(x)
    assert len(losses) == 1 and losses[0] == 6


class _UpdateLayer(ckbn.Layer):
    """testGetUpdateFor's layer: one unconditional update at build, one
    conditional on the inputs of every call."""

    def build(self, input_shape):
        self.a = self.add_weight("a", (), np.float32, "zeros", trainable=False)
        self.b = self.add_weight("b", (), np.float32, "zeros", trainable=False)
        a = self.a
        self.add_update(lambda: a.assign_add(1.0))
        super().build(input_shape)

    def call(self, inputs):
        a = self.a
        self.add_update(lambda: a.assign_add(np.float32(inputs)), inputs=True)
        return inputs + 1


def test_get_updates_for():
    """testGetUpdateFor, with the inputs the layer received (see the module docstring)."""
    layer = _UpdateLayer()
    inputs = np.array(2.0, np.float32)
    outputs = layer(inputs)
    assert len(layer.updates) == 2
    assert len(layer.get_updates_for(None)) == 1
    assert len(layer.get_updates_for([inputs])) == 1
    assert len(layer.get_updates_for([outputs])) == 0
    inputs2 = np.array(5.0, np.float32)
    outputs2 = layer(inputs2)
    assert len(layer.updates) == 3
    assert len(layer.get_updates_for(None)) == 1
    assert len(layer.get_updates_for([inputs2])) == 1
    assert len(layer.get_updates_for([outputs2])) == 0
    # The updates found are the right ones: running inputs2's adds 5 to a.
    ckbn.run_updates(layer.get_updates_for([inputs2]))
    assert layer.a.numpy() == 5.0
    ckbn.run_updates(layer.get_updates_for(None))
    assert layer.a.numpy() == 6.0


class _LossLayer(ckbn.Layer):
    """testGetLossesFor's layer."""

    def build(self, input_shape):
        self.a = self.add_weight("a", (), np.float32, "ones", trainable=False)
        self.b = self.add_weight("b", (), np.float32, "zeros", trainable=False)
        self.add_loss(np.float32(3.0))
        super().build(input_shape)

    def call(self, inputs):
        self.add_loss(np.sum(inputs), inputs=True)
        return inputs + 1


def test_get_losses_for():
    """testGetLossesFor: each call's loss is conditional on its own inputs."""
    layer = _LossLayer()
    x1 = np.array([1.0, 2.0], np.float32)
    out1 = layer(x1)
    assert len(layer.losses) == 2
    assert layer.get_losses_for(None) == [3.0]
    assert layer.get_losses_for([x1]) == [3.0]        # sum(x1)
    assert layer.get_losses_for([out1]) == []
    x2 = np.array([10.0, 20.0], np.float32)
    out2 = layer(x2)
    assert len(layer.losses) == 3
    assert layer.get_losses_for(None) == [3.0]
    assert layer.get_losses_for([x1]) == [3.0]        # only x1's, not x2's 30
    assert layer.get_losses_for([x2]) == [30.0]
    assert layer.get_losses_for(x1) == [3.0]
    assert layer.get_losses_for([out2]) == []


# -- DTypeTest ---------------------------------------------------------------------------
def test_dtype_inferred_from_input():
    """test_dtype_inferred_from_input."""
    layer = _Identity()
    assert layer.dtype is None
    layer(np.array(1.0, dtype="float64"))
    assert layer.dtype == "float64"
    layer = _Identity()
    layer(np.array(1, dtype="int32"))
    assert layer.dtype == "int32"
    layer = _Identity()
    layer(np.array(1.0, "float64"))
    layer(np.array(1.0, "float16"))
    assert layer.dtype == "float64"
    layer = _Identity()
    layer([np.array(1.0, "float32"), np.array(1.0, "float64")])
    assert layer.dtype == "float32"


def test_passing_dtype_to_constructor():
    """test_passing_dtype_to_constructor."""
    for dtype, want in (("float64", "float64"), ("int32", "int32"), (np.float64, "float64")):
        layer = _Identity(dtype=dtype)
        layer(np.array(1.0, "float32"))
        assert layer.dtype == want


def test_inputs_not_casted():
    """test_inputs_not_casted (the base layer does not cast)."""
    layer = _Identity(dtype="float32")
    assert layer(np.array(1.0, "float64")).dtype == np.float64


# -- the same class of gap on BatchNormalization ------------------------------------------
def _two_calls(**kw):
    bn = ckbn.BatchNormalization(**kw)
    rng = np.random.default_rng(0)
    x1 = rng.random((4, 3)).astype(np.float32)
    x2 = rng.random((4, 3)).astype(np.float32)
    bn(x1, training=True)
    bn(x2, training=True)
    return bn, x1, x2


@pytest.mark.parametrize("wrap", [
    lambda x: x, lambda x: [x], lambda x: (x,), lambda x: [[x]], lambda x: {"a": x},
    lambda x: ((x,), [])], ids=["bare", "list", "tuple", "nested", "dict", "with-empty"])
def test_get_updates_for_flattens_inputs(wrap):
    """Lists, tuples, dicts and nesting find the updates of the call on x1 (the
    issue: ``[x]`` and ``(x,)`` returned [] and the updates never ran)."""
    bn, x1, x2 = _two_calls(momentum=0.5)
    ups = bn.get_updates_for(wrap(x1))
    assert ups == bn.updates[:2]
    ckbn.run_updates(ups)
    want = 0.5 * x1.astype(np.float64).mean(0)          # 0.5 * 0 + 0.5 * mean(x1)
    np.testing.assert_allclose(bn.moving_mean.numpy(), want, rtol=1e-6)


def test_get_updates_for_several_inputs_in_call_order():
    bn, x1, x2 = _two_calls()
    assert bn.get_updates_for([x2, x1]) == bn.updates
    assert bn.get_updates_for([x1, x1]) == bn.updates[:2]
    assert bn.get_updates_for((x2,)) == bn.updates[2:]
    assert bn.get_updates_for([]) == []
    assert bn.get_updates_for(x1.copy()) == []


@pytest.mark.parametrize("method", ["get_updates_for", "get_losses_for"])
def test_none_inside_inputs_is_a_type_error(method):
    """The reference raises TypeError for ``[None]``; None alone means the
    unconditional ones."""
    bn, x1, _ = _two_calls(activity_regularizer=np.sum)
    with pytest.raises(TypeError, match=r"contains None"):
        getattr(bn, method)([x1, None])
    with pytest.raises(TypeError, match=r"contains None"):
        getattr(bn, method)((None,))


def test_get_losses_for_returns_only_that_inputs_losses():
    """After calls on x1 and x2, get_losses_for(x1) is x1's activity loss only."""
    def act(y):
        return np.float64(np.sum(np.abs(y)))

    bn = ckbn.BatchNormalization(activity_regularizer=act,
                                 gamma_regularizer=lambda g: 0.5 * np.sum(g * g))
    rng = np.random.default_rng(1)
    x1 = rng.random((4, 3)).astype(np.float32)
    x2 = (3 * rng.random((5, 3))).astype(np.float32)
    y1 = bn(x1, training=False)
    y2 = bn(x2, training=False)
    l1, l2 = act(y1), act(y2)
    assert l1 != pytest.approx(l2)
    assert bn.get_losses_for(x1) == [pytest.approx(l1)]
    assert bn.get_losses_for([x1]) == [pytest.approx(l1)]
    assert bn.get_losses_for((x2,)) == [pytest.approx(l2)]
    assert bn.get_losses_for([x1, x2]) == [pytest.approx(l1), pytest.approx(l2)]
    assert bn.get_losses_for(None) == [pytest.approx(1.5)]     # 0.5 * sum(1**2), 3 channels
    assert len(bn.losses) == 3


def test_add_update_and_add_loss_with_nested_inputs():
    layer = ckbn.Layer(name="holder")
    a = np.zeros(2)
    b = np.ones(2)
    u = ckbn.Update(lambda: None, name="u")
    layer.add_update(u, inputs={"k": [a, (b,)]})
    assert layer.get_updates_for(a) == [u] and layer.get_updates_for(b) == [u]
    assert layer.get_updates_for([a, b]) == [u]
    assert layer.get_updates_for(None) == []
    layer.add_loss(np.float64(2.0), inputs=(a, b))
    assert layer.get_losses_for(b) == [2.0] and layer.get_losses_for(None) == []


@pytest.mark.parametrize("method", ["add_update", "add_loss"])
def test_add_with_bad_inputs(method):
    layer = ckbn.Layer(name="holder")
    value = ckbn.Update(lambda: None) if method == "add_update" else np.float64(1.0)
    for bad, err, pattern in (([None], TypeError, "contains None"),
                              ([], ValueError, "empty structure"),
                              (True, ValueError, "no call of this layer is in progress"),
                              (False, TypeError, "False")):
        with pytest.raises(err, match=pattern):
            getattr(layer, method)(value, inputs=bad)
    assert layer.updates == [] and layer.losses == []


def test_bare_build_is_float32():
    """After ``build(shape)`` with no dtype, the layer is float32 and a float32
    input gives a float32 output (it gave float64), as the reference and api.md."""
    bn = ckbn.BatchNormalization()
    assert bn.dtype is None
    bn.build((4, 3))
    assert bn.dtype == "float32"
    assert [v.dtype for v in bn.variables] == [np.float32] * 4
    x = np.random.default_rng(2).random((4, 3))
    y32 = bn(x.astype(np.float32), training=True)
    y64 = bn(x, training=True)              # float64 input: cast to the layer's float32
    assert y32.dtype == np.float32 and y64.dtype == np.float32
    want = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3)
    np.testing.assert_allclose(y32, want, rtol=1e-4, atol=1e-5)


def test_properties_after_bare_build():
    """Every property after ``build()`` without a call, as the reference."""
    bn = ckbn.BatchNormalization(name="bb")
    bn.build((2, 3))
    assert bn.built and bn.fused is False and bn.count_params() == 12
    assert [v.name for v in bn.variables] == [
        "bb/gamma:0", "bb/beta:0", "bb/moving_mean:0", "bb/moving_variance:0"]
    assert bn.scope_name == "bb"
    assert bn.updates == [] and bn.losses == [] and bn.get_updates_for(None) == []
    for attr, pattern in (("input", "not connected"), ("output", "no inbound nodes"),
                          ("input_shape", "never been called"),
                          ("output_shape", "never been called")):
        with pytest.raises(AttributeError, match=pattern):
            getattr(bn, attr)
    # A later bare build of a float64 layer keeps float64.
    bn64 = ckbn.BatchNormalization(dtype="float64")
    bn64.build((2, 3))
    assert bn64.dtype == "float64" and bn64.gamma.dtype == np.float64


@pytest.mark.oracle
def test_structures_match_the_reference():
    """The counts above, side by side with the running reference."""
    tf = pytest.importorskip("tests.tf_reference").tf
    tf1 = tf.compat.v1
    shapes = (4, 3)
    with tf.Graph().as_default():
        ref = tf1.layers.BatchNormalization(activity_regularizer=tf.reduce_sum)
        ref.build(shapes)
        ref_dtype = ref.dtype
        p1 = tf1.placeholder(tf.float32, shapes)
        p2 = tf1.placeholder(tf.float32, shapes)
        ref(p1, training=True)
        ref(p2, training=True)
        want = {name: (len(ref.get_updates_for(s1)), len(ref.get_losses_for(s1)))
                for name, s1 in (("bare", p1), ("list", [p1]), ("tuple", (p1,)),
                                 ("nested", [[p1]]), ("dict", {"a": p1}), ("both", [p1, p2]),
                                 ("empty", []))}
        with pytest.raises(TypeError):
            ref.get_updates_for([None])
    bn = ckbn.BatchNormalization(activity_regularizer=np.sum)
    bn.build(shapes)
    assert bn.dtype == ref_dtype
    rng = np.random.default_rng(3)
    x1, x2 = (rng.random(shapes).astype(np.float32) for _ in range(2))
    bn(x1, training=True)
    bn(x2, training=True)
    got = {name: (len(bn.get_updates_for(s1)), len(bn.get_losses_for(s1)))
           for name, s1 in (("bare", x1), ("list", [x1]), ("tuple", (x1,)),
                            ("nested", [[x1]]), ("dict", {"a": x1}), ("both", [x1, x2]),
                            ("empty", []))}
    assert got == want
