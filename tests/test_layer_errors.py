"""Every documented error path of ``ckbn.Layer``, with the reference's exact texts
(each test states the text it expects), in graph and eager mode; a failed call
leaves the layer unchanged."""

import re

import numpy as np
import pytest

import ckbn


pytestmark = pytest.mark.usefixtures("fresh_graph")   # tests/conftest.py


class Double(ckbn.Layer):
    def call(self, inputs):
        return inputs * 2


class Spec(ckbn.Layer):
    def build(self, input_shape):
        self.w = self.add_variable("w", (input_shape[-1],), initializer="ones")
        self.input_spec = ckbn.InputSpec(ndim=2, axes={1: input_shape[-1]})
        self.built = True

    def call(self, inputs):
        return inputs * self.w.value


class ReturnsNone(ckbn.Layer):
    def call(self, inputs):
        return None


def _exact(text):
    return "^" + re.escape(text) + "$"


def test_unknown_keyword_is_the_reference_type_error():
    with pytest.raises(TypeError) as err:
        Double(foo=1)
    assert err.value.args == ("Keyword argument not understood:", "foo")


def test_errors_before_any_call():
    layer = Double(name="d")
    with pytest.raises(ValueError, match=_exact(
            'No name available for layer scope because the layer "d" has not been used yet. '
            "The scope name  is determined the first time the layer instance is called. "
            "You must therefore call the layer before querying `scope_name`.")):
        layer.scope_name
    with pytest.raises(AttributeError, match=_exact("Layer d is not connected, no input to return.")):
        layer.input
    with pytest.raises(AttributeError, match=_exact("Layer d has no inbound nodes.")):
        layer.output
    for attr in ("input", "output"):
        with pytest.raises(AttributeError, match=_exact(
                "The layer has never been called and thus has no defined %s shape." % attr)):
            getattr(layer, attr + "_shape")
    for method, what in [("get_input_at", "input"), ("get_output_at", "output"),
                         ("get_input_shape_at", "input shape"),
                         ("get_output_shape_at", "output shape")]:
        with pytest.raises(RuntimeError, match=_exact(
                "The layer has never been called and thus has no defined %s." % what)):
            getattr(layer, method)(0)
    with pytest.raises(ValueError, match=_exact(
            "You tried to call `count_params` on d, but the layer isn't built. "
            "You can build it manually via: `d.build(batch_input_shape)`.")):
        layer.count_params()


@pytest.mark.parametrize("method,what", [
    ("get_input_at", "input"), ("get_output_at", "output"),
    ("get_input_shape_at", "input shape"), ("get_output_shape_at", "output shape")])
def test_node_index_out_of_range(method, what):
    layer = Double(name="d")
    layer(np.ones((2, 3)))
    layer(np.ones((4, 3)))
    with pytest.raises(ValueError, match=_exact(
            "Asked to get %s at node 2, but the layer has only 2 inbound nodes." % what)):
        getattr(layer, method)(2)


def test_ill_defined_shapes_with_the_reference_quotes():
    layer = Double(name="d")
    a, b = np.ones((2, 5, 3)), np.ones((2, 4, 3))
    layer(a)
    layer(b)
    with pytest.raises(AttributeError, match=_exact(
            'The layer "d has multiple inbound nodes, with different input shapes. Hence the '
            'notion of "input shape" is ill-defined for the layer. '
            "Use `get_input_shape_at(node_index)` instead.")):
        layer.input_shape
    with pytest.raises(AttributeError, match=_exact(
            'The layer "d" has multiple inbound nodes, with different output shapes. Hence the '
            'notion of "output shape" is ill-defined for the layer. '
            "Use `get_output_shape_at(node_index)` instead.")):
        layer.output_shape
    # input/output do not raise with several nodes: node 0's arrays.
    assert layer.input is a
    assert layer.get_input_at(1) is b
    assert layer.get_input_shape_at(1) == (2, 4, 3)
    assert layer.get_output_shape_at(0) == (2, 5, 3)


def test_same_shapes_give_a_defined_input_shape():
    layer = Double(name="d")
    layer(np.ones((2, 3)))
    layer(np.ones((2, 3)))
    assert layer.input_shape == (2, 3)
    assert layer.output_shape == (2, 3)


@pytest.mark.parametrize("mode", ["graph", "eager"])
def test_call_returning_none(mode):
    ctx = ckbn.eager_mode() if mode == "eager" else ckbn.graph_mode()
    with ctx:
        with pytest.raises(ValueError, match=_exact(
                "A layer's `call` method should return a Tensor or a list of Tensors, not None.")):
            ReturnsNone()(np.ones((2, 3)))


@pytest.mark.parametrize("mode", ["graph", "eager"])
def test_input_spec_errors_name_layer_axis_and_shape_and_change_nothing(mode):
    ctx = ckbn.eager_mode() if mode == "eager" else ckbn.graph_mode()
    with ctx:
        layer = Spec(name="s")
        layer(np.ones((2, 3)))
        before_nodes = len(layer._inbound_nodes) if hasattr(layer, "_inbound_nodes") else None
        before_w = layer.w.numpy()
        with pytest.raises(ValueError, match=re.escape(
                "Input 0 of layer s is incompatible with the layer: expected axis 1 of input "
                "shape to have value 3 but received input with shape [2, 4]")):
            layer(np.ones((2, 4)))
        with pytest.raises(ValueError, match=re.escape(
                "Input 0 of layer s is incompatible with the layer: expected ndim=2, found "
                "ndim=3. Full shape received: [2, 3, 1]")):
            layer(np.ones((2, 3, 1)))
        np.testing.assert_array_equal(layer.w.numpy(), before_w)
        assert len(layer.weights) == 1
        if before_nodes is not None:
            assert len(layer._inbound_nodes) == before_nodes
    if mode == "graph":
        assert layer.get_input_shape_at(0) == (2, 3)
        with pytest.raises(ValueError, match="only 1 inbound nodes"):
            layer.get_input_at(1)


def test_eager_mode_restrictions():
    layer = Double(name="d")
    with ckbn.eager_mode():
        assert ckbn.executing_eagerly()
        layer(np.ones((2, 3)))
        for attr, text in [("updates", "Layer.updates not supported in Eager mode.")]:
            with pytest.raises(RuntimeError, match=_exact(text)):
                getattr(layer, attr)
        with pytest.raises(RuntimeError, match=_exact(
                "`get_updates_for()` not supported in Eager mode.")):
            layer.get_updates_for(None)
        with pytest.raises(RuntimeError, match=_exact("Layer.add_loss not supported in Eager mode.")):
            layer.add_loss(1.0)
        with pytest.raises(RuntimeError, match=_exact(
                "Layer.get_losses_for not supported in Eager mode.")):
            layer.get_losses_for(None)
        for method in ("get_input_at", "get_output_shape_at"):
            with pytest.raises(RuntimeError, match=_exact(
                    "Layer.%s not supported in Eager mode." % method)):
                getattr(layer, method)(0)
        # No collection is touched in eager mode.
        assert ckbn.get_collection(ckbn.GraphKeys.UPDATE_OPS) == []
    assert not ckbn.executing_eagerly()


def test_eager_add_loss_error_leaves_losses_unchanged():
    layer = Double(name="d")
    layer.add_loss(np.float32(2.0))
    with ckbn.eager_mode():
        with pytest.raises(RuntimeError):
            layer.add_loss(np.float32(5.0))
    assert [float(v) for v in layer.losses] == [2.0]


class _WithSpec(ckbn.Layer):
    def __init__(self, spec, **kwargs):
        super().__init__(**kwargs)
        self.input_spec = spec

    def call(self, inputs):
        return inputs


# The reference (tf.compat.v1.layers.Layer + InputSpec) rejects these.
@pytest.mark.parametrize("spec,x,text", [
    (dict(min_ndim=2), np.ones(3, np.float32), "expected min_ndim=2, found ndim=1"),
    (dict(max_ndim=2), np.ones((1, 1, 1), np.float32), "expected max_ndim=2, found ndim=3"),
    (dict(dtype="float32"), np.ones((2, 2), np.float64), "expected dtype=float32"),
    (dict(shape=(None, 3)), np.ones((2, 4), np.float32), "expected shape=(None, 3)"),
])
def test_input_spec_other_fields_are_checked(spec, x, text):
    layer = _WithSpec(ckbn.InputSpec(**spec), name="s")
    with pytest.raises(ValueError, match=re.escape(text)):
        layer(x)


def test_graph_bound_at_first_call_not_construction():
    g = ckbn.Graph()
    layer = Double(name="d")
    with g.as_default():
        layer(np.ones(2))
    assert layer.graph is g
    with pytest.raises(ValueError, match="^Input graph and Layer graph are not the same"):
        layer(np.ones(2))  # default graph differs now
    assert len(layer._inbound_nodes) == 1


def test_add_update_rejects_non_updates_and_changes_nothing():
    layer = Double(name="u")
    layer(np.ones(2))
    good = ckbn.Update(lambda: None, name="good")
    with pytest.raises(TypeError, match="add_update takes ckbn.Update objects .* got 5"):
        layer.add_update([good, 5])
    with pytest.raises(TypeError, match="got 'not callable'"):
        layer.add_update("not callable")
    assert layer.updates == []


def test_failed_update_stays_pending():
    calls = []

    def flaky(v):
        calls.append(v)
        if len(calls) == 1:
            raise RuntimeError("boom")

    u = ckbn.Update(flaky, 7)
    with pytest.raises(RuntimeError, match="boom"):
        u.run()
    assert not u.done
    u.run()
    assert u.done and calls == [7, 7]
    u.run()
    assert calls == [7, 7]
