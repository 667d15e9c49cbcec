"""TensorFlow 1.x style bookkeeping for NumPy layers.

A *graph* here is a registry, not a dataflow engine: it holds the variables,
the collections (``GraphKeys``), the layer-name and scope counters.  Layers
compute eagerly on NumPy arrays in both modes; the modes differ in what
happens to state:

* **graph mode** (the default): a training call records *pending* update
  objects (``layer.updates``, the ``UPDATE_OPS`` collection) that change the
  moving statistics only when run (``update.run()`` or ``run_updates``), and
  records an inbound node for every call;
* **eager mode** (``with ckbn.eager_mode():``): updates are applied during
  the call; ``updates``, ``get_updates_for``, ``add_loss``,
  ``get_losses_for`` and the ``get_*_at`` methods raise ``RuntimeError``.

Modes, default graphs and variable scopes are thread-local; a new thread
starts in graph mode on the process-wide default graph.

Update objects
--------------
``Update(fn, *args, name=...)`` applies ``fn(*args)`` once when run, then
drops ``args`` (the call's statistics), so a long training loop does not keep
every batch's statistics alive; running it again does nothing.  Layers create
them in ``call`` and register them with ``self.add_update(u, inputs=x)``;
``add_update`` also takes zero-arg callables, as the reference's layer does.
Variables change only through their own atomic operations (``assign``,
``assign_add``, ``assign_sub``, ``assign_moving_average``) and graphs only
through their methods.
"""

from __future__ import annotations

import contextlib
import copy
import re
import threading
import warnings
import weakref

import numpy as np

from ckbn import initializers as _inits

__all__ = [
    "GraphKeys", "Graph", "get_default_graph", "reset_default_graph", "get_collection",
    "variable_scope", "VariableScope", "eager_mode", "graph_mode", "executing_eagerly",
    "Variable", "Update", "run_updates", "InputSpec", "Node", "Layer",
]


class GraphKeys:
    """Names of the standard collections."""

    GLOBAL_VARIABLES = "variables"
    TRAINABLE_VARIABLES = "trainable_variables"
    UPDATE_OPS = "update_ops"
    REGULARIZATION_LOSSES = "regularization_losses"


class Graph:
    """A registry of variables, collections and name counters.

    Every method is atomic with respect to the others across Python threads.
    """

    def __init__(self):
        self._lock = threading.RLock()
        self._collections = {}
        self._variables = {}          # full name -> Variable
        self._layer_names = {}        # base name -> count (one-based layer names)
        self._scope_counts = {}       # parent scope -> {child base name: count}

    def get_collection(self, key, scope=None):
        with self._lock:
            items = list(self._collections.get(key, ()))
        if scope:
            items = [v for v in items if getattr(v, "name", "").startswith(scope)]
        return items

    def get_collection_ref(self, key):
        with self._lock:
            return self._collections.setdefault(key, [])

    def get_all_collection_keys(self):
        """Names of the collections that exist in this graph."""
        with self._lock:
            return list(self._collections)

    def add_to_collection(self, key, value, unique=False):
        with self._lock:
            coll = self._collections.setdefault(key, [])
            if unique and any(v is value for v in coll):
                return
            coll.append(value)

    def extend_collection(self, key, values):
        """Append every item of ``values`` to collection ``key``, in order."""
        with self._lock:
            self._collections.setdefault(key, []).extend(values)

    def get_or_create_variable(self, name, create):
        """The variable registered as ``name``, or a new one.

        Returns ``(variable, created)``.  When ``name`` is free, ``create()``
        makes the variable, which is registered under ``name`` and added to
        ``GLOBAL_VARIABLES`` (and ``TRAINABLE_VARIABLES`` when trainable), all
        under the graph's lock.  If ``create`` raises, nothing is registered.
        """
        with self._lock:
            var = self._variables.get(name)
            if var is not None:
                return var, False
            var = create()
            self._variables[name] = var
            self.add_to_collection(GraphKeys.GLOBAL_VARIABLES, var)
            if var.trainable:
                self.add_to_collection(GraphKeys.TRAINABLE_VARIABLES, var)
        return var, True

    def unique_layer_name(self, base):
        """``base_1``, ``base_2``, ...: one-based layer names, as the reference."""
        with self._lock:
            n = self._layer_names.get(base, 0) + 1
            self._layer_names[base] = n
        return f"{base}_{n}"

    def unique_scope_name(self, parent, base):
        """Zero-based unique child scope name in ``parent`` (``base``, ``base_1``, ...),
        without the parent prefix."""
        with self._lock:
            counts = self._scope_counts.setdefault(parent, {})
            n = counts.get(base, 0)
            counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def restart_scope_numbering(self, scope):
        """Forget the default-named children of ``scope`` (re-opening a scope by
        name restarts their numbering)."""
        with self._lock:
            self._scope_counts.pop(scope, None)

    @contextlib.contextmanager
    def as_default(self):
        """Make this graph the default one in the calling thread."""
        stack = _state().graphs
        stack.append(self)
        try:
            yield self
        finally:
            stack.pop()


class _ThreadState(threading.local):
    def __init__(self):
        self.graphs = []
        self.eager = []
        self.scopes = []
        self.calls = []      # (layer, inputs) of the calls in progress


_tls = _ThreadState()
_global = {"graph": Graph()}


def _state():
    return _tls


def get_default_graph():
    """The calling thread's default graph (the process-wide one unless overridden)."""
    stack = _tls.graphs
    return stack[-1] if stack else _global["graph"]


def reset_default_graph():
    """Replace the process-wide default graph with a new, empty one."""
    if _tls.graphs:
        raise AssertionError("reset_default_graph() called inside a graph.as_default() block")
    _global["graph"] = Graph()


def get_collection(key, scope=None):
    """Items of collection ``key`` of the default graph (a copy)."""
    return get_default_graph().get_collection(key, scope)


def executing_eagerly():
    stack = _tls.eager
    return bool(stack[-1]) if stack else False


@contextlib.contextmanager
def eager_mode():
    """Run the block in eager mode: updates are applied during each call."""
    _tls.eager.append(True)
    try:
        yield
    finally:
        _tls.eager.pop()


@contextlib.contextmanager
def graph_mode():
    """Run the block in graph mode (the default): updates are pending until run."""
    _tls.eager.append(False)
    try:
        yield
    finally:
        _tls.eager.pop()


class VariableScope:
    """A named variable scope; ``name`` prefixes the variables made inside."""

    __slots__ = ("name", "reuse")

    def __init__(self, name, reuse=None):
        self.name = name
        self.reuse = reuse

    @property
    def original_name_scope(self):
        return self.name + "/" if self.name else ""

    def __repr__(self):
        return f"VariableScope(name={self.name!r}, reuse={self.reuse!r})"


def _current_scope():
    stack = _tls.scopes
    return stack[-1] if stack else VariableScope("", None)


@contextlib.contextmanager
def variable_scope(name_or_scope=None, default_name=None, reuse=None):
    """Open a variable scope.

    Parameters
    ----------
    name_or_scope : str or VariableScope or None
        A name (prefixed by the enclosing scope) or a captured scope (used as
        it is).
    default_name : str, optional
        With ``name_or_scope=None``: a base name made unique among the scopes
        opened so far in the same parent, zero-based (``name``, ``name_1``,
        ...).
    reuse : bool or None
        True: get existing variables instead of creating them.  None inherits
        the enclosing scope's setting.
    """
    graph = get_default_graph()
    parent = _current_scope()
    if isinstance(name_or_scope, VariableScope):
        full = name_or_scope.name
        inherited = name_or_scope.reuse
    elif name_or_scope is not None:
        if not isinstance(name_or_scope, str):
            raise TypeError(f"variable_scope name must be a string, got {name_or_scope!r}")
        full = parent.original_name_scope + name_or_scope
        inherited = parent.reuse
    else:
        if default_name is None:
            raise ValueError("variable_scope needs a name_or_scope or a default_name")
        full = parent.original_name_scope + graph.unique_scope_name(parent.name, default_name)
        inherited = parent.reuse
    if name_or_scope is not None:
        # Re-opening a scope restarts the numbering of its default-named children.
        graph.restart_scope_numbering(full)
    scope = VariableScope(full, True if reuse else inherited)
    _tls.scopes.append(scope)
    try:
        yield scope
    finally:
        _tls.scopes.pop()


class Variable:
    """A named, mutable array owned by a graph.

    ``numpy()`` returns a copy; ``value`` is the live array (read it, do not
    write it: use ``assign``, ``assign_add``, ``assign_sub``, which are atomic
    with respect to each other across Python threads).
    """

    __slots__ = ("name", "trainable", "constraint", "regularizer", "_value", "_lock",
                 "__weakref__")

    def __init__(self, value, name="Variable:0", trainable=True, constraint=None,
                 regularizer=None, dtype=None):
        self._value = np.array(value, dtype=dtype)
        self.name = name
        self.trainable = bool(trainable)
        self.constraint = constraint
        self.regularizer = regularizer
        self._lock = threading.Lock()

    @property
    def shape(self):
        return self._value.shape

    @property
    def dtype(self):
        return self._value.dtype

    @property
    def value(self):
        return self._value

    def numpy(self):
        return self._value.copy()

    def read_value(self):
        return self._value.copy()

    def _coerce(self, v):
        if type(v) is np.ndarray and v.shape == self._value.shape and v.dtype.kind == "f":
            return v.astype(self._value.dtype, copy=False)  # the common case, kept cheap
        arr = np.asarray(v)
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"cannot assign a value of dtype {arr.dtype} to {self.name}")
        try:
            return np.broadcast_to(arr.astype(self._value.dtype, copy=False), self._value.shape)
        except ValueError:
            raise ValueError(
                f"cannot assign a value of shape {arr.shape} to {self.name} of shape "
                f"{self._value.shape}") from None

    def assign(self, v):
        v = self._coerce(v)
        with self._lock:
            self._value = np.array(v, dtype=self._value.dtype)
        return self

    def assign_add(self, v):
        v = self._coerce(v)
        with self._lock:
            self._value = self._value + v
        return self

    def assign_sub(self, v):
        v = self._coerce(v)
        with self._lock:
            self._value = self._value - v
        return self

    def assign_moving_average(self, value, decay):
        """``v <- v - (v - value) * (1 - decay)``, atomically, in the variable's dtype.

        ``decay`` is the weight of the old value (a layer's ``momentum``).  As
        in TensorFlow's ``assign_moving_average``, ``1 - decay`` is rounded to
        float32 first and then cast to the variable's dtype.  ``value`` must
        have the variable's number of elements (it is reshaped, not broadcast).
        """
        dt = self._value.dtype
        key = (dt, decay)
        rate = _RATES.get(key)
        if rate is None:
            if isinstance(decay, (bool, np.bool_)) or not isinstance(
                    decay, (int, float, np.integer, np.floating)):
                raise TypeError(f"decay must be a float, got {decay!r}")
            rate = _RATES[key] = dt.type(np.float32(1.0 - decay))
        shape = self._value.shape
        if type(value) is np.ndarray and value.shape == shape and value.dtype.kind == "f":
            if value.dtype != dt:
                value = value.astype(dt)
        else:
            arr = np.asarray(value)
            if arr.dtype.kind not in "fiub":
                raise TypeError(f"cannot average a value of dtype {arr.dtype} into {self.name}")
            if arr.size != self._value.size:
                raise ValueError(
                    f"cannot average a value of shape {arr.shape} into {self.name} of shape "
                    f"{shape}")
            value = arr.astype(dt).reshape(shape)
        with self._lock:
            v = self._value
            self._value = v - (v - value) * rate
        return self

    def __array__(self, dtype=None, copy=None):
        return self._value.copy() if dtype is None else self._value.astype(dtype)

    def __deepcopy__(self, memo):
        new = Variable(self._value.copy(), self.name, self.trainable, self.constraint,
                       self.regularizer)
        memo[id(self)] = new
        return new

    def __repr__(self):
        return f"<ckbn.Variable '{self.name}' shape={self.shape} dtype={self.dtype.name}>"


_RATES = {}   # (dtype, decay) -> 1 - decay, rounded to float32, in that dtype


def _get_variable(name, shape, dtype, initializer, trainable, constraint, regularizer,
                  reuse):
    """Create ``scope/name:0`` in the default graph, or fetch it when reusing.

    Returns (variable, created).
    """
    graph = get_default_graph()
    scope = _current_scope()
    full = scope.original_name_scope + name + ":0"

    def create():
        if reuse is True:
            raise ValueError(
                f"Variable {full[:-2]} does not exist, or was not created with "
                "get_variable(). Did you mean to set reuse=None in VarScope?")
        init = _inits.get(initializer, "glorot_uniform")
        value = np.asarray(init(tuple(shape), np.dtype(dtype)), dtype=dtype)
        if value.shape != tuple(shape):
            raise ValueError(
                f"initializer of {full} returned shape {value.shape}, expected {tuple(shape)}")
        return Variable(value, full, trainable, constraint, regularizer)

    var, created = graph.get_or_create_variable(full, create)
    if not created:
        if not reuse:
            raise ValueError(
                f"Variable {full[:-2]} already exists, disallowed. Did you mean to set "
                "reuse=True in VarScope?")
        if tuple(var.shape) != tuple(shape):
            raise ValueError(
                f"Trying to share variable {full[:-2]}, but specified shape {tuple(shape)} "
                f"and found shape {tuple(var.shape)}.")
    return var, created


_update_lock = threading.Lock()


class Update:
    """A pending state change: ``fn(*args)`` applied once when run.

    After it has run, the arguments (typically a call's batch statistics) are
    released and running it again does nothing.
    """

    __slots__ = ("name", "_fn", "_args", "_inputs", "_done", "_published", "__weakref__")

    def __init__(self, fn, *args, name="update"):
        self.name = name
        self._fn = fn
        self._args = args
        self._inputs = None
        self._done = False
        self._published = False   # already in the UPDATE_OPS collection

    @property
    def done(self):
        return self._done

    def run(self):
        """Apply the update (once).  If it raises, it stays pending."""
        with _update_lock:
            if self._done:
                return
            self._done = True
            args = self._args
        try:
            self._fn(*args)
        except BaseException:
            with _update_lock:
                self._done = False
            raise
        self._args = None

    def __deepcopy__(self, memo):
        new = Update(self._fn, *copy.deepcopy(self._args, memo) if self._args else (),
                     name=self.name)
        new._done = self._done
        new._inputs = self._inputs
        memo[id(self)] = new
        return new

    def __repr__(self):
        return f"<ckbn.Update '{self.name}'{' (done)' if self._done else ''}>"


def _as_updates(updates, what):
    """``updates`` (one or a list) as a list of Update objects: a zero-arg
    callable ``f`` becomes ``Update(f, name=f.__name__)``.  Anything else is a
    TypeError, raised before any update runs."""
    if not isinstance(updates, (list, tuple)):
        updates = [updates]
    out = []
    for u in updates:
        if not isinstance(u, Update):
            if not callable(u):
                raise TypeError(
                    f"{what} takes ckbn.Update objects (see ckbn.Update) or zero-arg "
                    f"callables, got {u!r}")
            u = Update(u, name=getattr(u, "__name__", "update"))
        out.append(u)
    return out


def run_updates(updates):
    """Run every update in ``updates`` in order (e.g. ``layer.updates`` or the
    ``UPDATE_OPS`` collection).

    Items are ``Update`` objects (each applies once, however often it is run)
    or zero-arg callables (called once per ``run_updates``).  Every item is
    checked before the first one runs.
    """
    for u in _as_updates(list(updates), "run_updates"):
        u.run()


class InputSpec:
    """Constraints on a layer's input: rank and the size of given axes."""

    def __init__(self, ndim=None, axes=None, dtype=None, shape=None, min_ndim=None,
                 max_ndim=None):
        self.ndim, self.axes, self.dtype = ndim, dict(axes or {}), dtype
        self.shape, self.min_ndim, self.max_ndim = shape, min_ndim, max_ndim

    def __repr__(self):
        return f"InputSpec(ndim={self.ndim}, axes={self.axes})"


def _dead():
    return None


def _ref(a):
    try:
        return weakref.ref(a)
    except TypeError:
        return lambda a=a: a


def flatten(structure):
    """The leaves of a nested structure, as ``tf.nest.flatten`` orders them.

    Lists and tuples (named tuples too) are walked in order, dicts by sorted
    key (insertion order when the keys do not sort); anything else is a leaf,
    ``None`` included.
    """
    if type(structure) is np.ndarray:        # the common case, first
        return [structure]
    if isinstance(structure, dict):
        try:
            keys = sorted(structure)
        except TypeError:
            keys = list(structure)
        return [leaf for k in keys for leaf in flatten(structure[k])]
    if isinstance(structure, (list, tuple)):
        return [leaf for item in structure for leaf in flatten(item)]
    return [structure]


def _input_leaves(layer, inputs, what):
    """The leaves ``inputs`` names for ``add_update``/``add_loss``/``get_*_for``.

    ``inputs=True`` stands for the inputs of the call in progress (the
    reference ties such updates and losses to the call's inputs).  A ``None``
    leaf or an empty structure is a ``TypeError``/``ValueError``: nothing can
    be conditional on it.
    """
    if isinstance(inputs, (bool, np.bool_)):
        if not inputs:
            raise TypeError(f"{layer.name}.{what}: inputs must be None, True, an array or a "
                            f"nested list/tuple/dict of arrays, got {inputs!r}")
        calls = [c for c in _tls.calls if c[0] is layer]
        if not calls:
            raise ValueError(f"{layer.name}.{what}: inputs=True means the inputs of the call in "
                             "progress, and no call of this layer is in progress")
        inputs = calls[-1][1]
    leaves = flatten(inputs)
    if not leaves:
        raise ValueError(f"{layer.name}.{what}: inputs {inputs!r} is an empty structure; pass "
                         "None for unconditional ones")
    for leaf in leaves:
        if leaf is None:
            raise TypeError(f"{layer.name}.{what}: inputs {inputs!r} contains None; expected "
                            "arrays (None alone means the unconditional ones)")
    return leaves


class Node:
    """One call of a layer in graph mode.

    The input and output arrays are held weakly (they are ``None`` once the
    caller dropped them); their shapes and the call arguments are kept.
    """

    __slots__ = ("_input", "_output", "input_shapes", "output_shapes", "arguments")

    def __init__(self, inputs, outputs, arguments, previous=None):
        self._input = _ref(inputs)
        self._output = _ref(outputs)
        ishape, oshape = tuple(np.shape(inputs)), tuple(np.shape(outputs))
        if previous is not None:       # share equal shape tuples between nodes (memory)
            ishape = previous.input_shapes if ishape == previous.input_shapes else ishape
            oshape = previous.output_shapes if oshape == previous.output_shapes else oshape
        self.input_shapes = ishape
        self.output_shapes = oshape
        if previous is not None and arguments == previous.arguments:
            arguments = previous.arguments
        self.arguments = arguments

    @property
    def input_tensors(self):
        return self._input()

    @property
    def output_tensors(self):
        return self._output()


def _snake_case(name):
    s = re.sub("(.)([A-Z][a-z0-9]+)", r"\1_\2", name)
    s = re.sub("([a-z])([A-Z])", r"\1_\2", s).lower()
    return "private" + s if s.startswith("_") else s


_NODE_WARN = 10000
_NO_ARGS = {}   # shared by nodes of calls without keyword arguments (never mutated)
_COMPACT_EVERY = 1024
_ALLOWED_KWARGS = {"dtype", "activity_regularizer", "_scope", "_reuse", "input_shape",
                   "batch_size"}


class Layer:
    """Base layer: the ``tf.layers.Layer`` surface with NumPy arrays as tensors.

    Subclasses implement ``build(input_shape)`` (creating variables with
    :meth:`add_variable`) and ``call(inputs, **kwargs)`` (returning an array).
    """

    def __init__(self, trainable=True, name=None, dtype=None, activity_regularizer=None,
                 **kwargs):
        for k in kwargs:
            if k not in _ALLOWED_KWARGS:
                raise TypeError("Keyword argument not understood:", k)
        if activity_regularizer and executing_eagerly():
            raise ValueError(
                "Activity regularization is not supported when executing eagerly. Got "
                f"activity_regularizer={activity_regularizer}")
        self.trainable = bool(trainable)
        self.built = False
        self.stateful = False
        self.input_spec = None
        self._activity_regularizer = activity_regularizer
        self._trainable_weights = []
        self._non_trainable_weights = []
        self._updates = []
        self._updates_by_input = {}   # id(inputs) -> [weakref to inputs, updates...]
        self._n_published = 0         # how many of _updates are in UPDATE_OPS
        self._prune_at = 64
        self._losses = []
        self._inbound_nodes = []
        self._reuse = kwargs.get("_reuse")
        self._graph = None
        self._dtype = None if dtype is None else np.dtype(dtype).name
        self._lock = threading.RLock()
        self._node_warned = False
        base = _snake_case(type(self).__name__)
        if name is None:
            self._name = get_default_graph().unique_layer_name(base)
            self._base_name = base
        else:
            if not isinstance(name, str):
                raise TypeError(f"name must be a string, got {name!r}")
            self._name = name
            self._base_name = name
        scope = kwargs.get("_scope")
        self._scope = None
        if scope is not None:
            with variable_scope(scope) as captured:
                self._scope = captured
        if "input_shape" in kwargs:
            self._batch_input_shape = (kwargs.get("batch_size"),) + tuple(kwargs["input_shape"])

    # -- properties ---------------------------------------------------------
    @property
    def name(self):
        return self._name

    @property
    def dtype(self):
        return self._dtype

    @property
    def activity_regularizer(self):
        return self._activity_regularizer

    @property
    def graph(self):
        if executing_eagerly():
            raise RuntimeError("Layer.graph not supported in Eager mode.")
        return self._graph

    @property
    def scope_name(self):
        if not self._scope:
            raise ValueError(
                f'No name available for layer scope because the layer "{self._name}" has not '
                "been used yet. The scope name  is determined the first time the layer "
                "instance is called. You must therefore call the layer before querying "
                "`scope_name`.")
        return self._scope.name

    @property
    def trainable_weights(self):
        return list(self._trainable_weights) if self.trainable else []

    @property
    def non_trainable_weights(self):
        if self.trainable:
            return list(self._non_trainable_weights)
        return self._trainable_weights + self._non_trainable_weights

    @property
    def weights(self):
        return self.trainable_weights + self.non_trainable_weights

    trainable_variables = trainable_weights
    non_trainable_variables = non_trainable_weights
    variables = weights

    # -- variables ----------------------------------------------------------
    def _set_scope(self, scope=None):
        if self._scope is None:
            if self._reuse:
                with variable_scope(scope if scope is not None else self._base_name) as s:
                    self._scope = s
            else:
                with variable_scope(scope, default_name=self._base_name) as s:
                    self._scope = s

    def add_variable(self, name, shape, dtype=None, initializer=None, regularizer=None,
                     trainable=True, constraint=None, partitioner=None):
        """Create (or, when reusing, fetch) the variable ``<scope>/<name>:0``.

        A fetched variable is not tracked by this layer and gets no
        regularization loss, as in the reference.
        """
        if partitioner is not None:
            raise ValueError("partitioned variables are not supported")
        if dtype is None:
            dtype = self._dtype or "float32"
        if self._dtype is None:
            # As the reference: a layer whose dtype is still to be inferred
            # takes the dtype of its first variable (a bare ``build()``).
            self._dtype = np.dtype(dtype).name
        self._set_scope(None)
        with self._lock:
            graph = get_default_graph()
            if self._graph is None and not executing_eagerly():
                self._graph = graph
            reuse = True if (self.built or self._reuse) else None
            with variable_scope(self._scope, reuse=reuse) as sc:
                var, created = _get_variable(
                    name, tuple(int(d) for d in shape), dtype, initializer,
                    bool(trainable and self.trainable), constraint, regularizer, sc.reuse)
            if not created:
                return var
            if regularizer is not None:
                self._losses.append(_Loss(regularizer, None, var))
                graph.add_to_collection(GraphKeys.REGULARIZATION_LOSSES, self._losses[-1])
            if trainable and self.trainable:
                self._trainable_weights.append(var)
            else:
                # Created non-trainable (also when the layer is not trainable):
                # stays non-trainable if the layer's flag is toggled later.
                self._non_trainable_weights.append(var)
        return var

    add_weight = add_variable

    def build(self, input_shape):
        self.built = True

    def call(self, inputs, **kwargs):
        return inputs

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def count_params(self):
        if not self.built:
            raise ValueError(
                f"You tried to call `count_params` on {self.name}, but the layer isn't "
                f"built. You can build it manually via: `{self.name}.build(batch_input_shape)`.")
        return int(sum(int(np.prod(w.shape)) for w in self.weights))

    def get_weights(self):
        return [w.numpy() for w in self.weights]

    def set_weights(self, weights):
        mine = self.weights
        if len(weights) != len(mine):
            raise ValueError(
                f"You called `set_weights(weights)` on layer {self.name} with a weight list "
                f"of length {len(weights)}, but the layer was expecting {len(mine)} weights.")
        for w, v in zip(mine, weights):
            if tuple(np.shape(v)) != tuple(w.shape):
                raise ValueError(
                    f"Layer weight shape {tuple(w.shape)} not compatible with provided "
                    f"weight shape {tuple(np.shape(v))}")
        for w, v in zip(mine, weights):
            w.assign(v)

    def get_config(self):
        cfg = {"name": self.name, "trainable": self.trainable}
        if self._dtype is not None:
            cfg["dtype"] = self._dtype
        return cfg

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    # -- calls --------------------------------------------------------------
    def _validate_inputs(self, inputs):
        """Subclasses check their input here, before any state changes."""
        return inputs

    def _assert_input_compatibility(self, x):
        spec = self.input_spec
        if spec is None:
            return
        shape = x.shape if type(x) is np.ndarray else np.shape(x)
        try:
            ok = ((spec.ndim is None or len(shape) == spec.ndim) and spec.min_ndim is None
                  and spec.max_ndim is None and spec.dtype is None and spec.shape is None
                  and all(v is None or shape[a] == v for a, v in spec.axes.items()))
        except IndexError:
            ok = False
        if ok:
            return    # the common case: only rank and axis sizes to check, and they match
        head = f"Input 0 of layer {self.name} is incompatible with the layer: "
        if spec.ndim is not None and len(shape) != spec.ndim:
            raise ValueError(
                f"{head}expected ndim={spec.ndim}, found ndim={len(shape)}. Full shape "
                f"received: {list(shape)}")
        if spec.min_ndim is not None and len(shape) < spec.min_ndim:
            raise ValueError(
                f"{head}expected min_ndim={spec.min_ndim}, found ndim={len(shape)}. Full shape "
                f"received: {list(shape)}")
        if spec.max_ndim is not None and len(shape) > spec.max_ndim:
            raise ValueError(
                f"{head}expected max_ndim={spec.max_ndim}, found ndim={len(shape)}. Full shape "
                f"received: {list(shape)}")
        if spec.dtype is not None:
            got = np.asarray(x).dtype
            if got != np.dtype(spec.dtype):
                raise ValueError(
                    f"{head}expected dtype={np.dtype(spec.dtype).name}, found dtype={got.name}")
        if spec.shape is not None:
            want = tuple(spec.shape)
            if len(want) != len(shape) or any(
                    w is not None and w != g for w, g in zip(want, shape)):
                raise ValueError(
                    f"{head}expected shape={want}, found shape={tuple(shape)}")
        for axis, value in spec.axes.items():
            if value is not None and shape[axis] != value:
                raise ValueError(
                    f"Input 0 of layer {self.name} is incompatible with the layer: expected "
                    f"axis {axis} of input shape to have value {value} but received input "
                    f"with shape {list(shape)}")

    def __call__(self, inputs, *args, **kwargs):
        scope = kwargs.pop("scope", None)
        inputs = self._validate_inputs(inputs)
        eager = executing_eagerly()
        if not eager:
            graph = get_default_graph()
            if self._graph is not None and self._graph is not graph:
                raise ValueError(
                    f"Input graph and Layer graph are not the same: {graph} is not from the "
                    f"same graph as {self._graph}")
            if self._graph is None and self.built:   # built in eager mode, first graph call
                self._graph = graph
        if not self.built:
            with self._lock:
                if not self.built:
                    if eager and self._activity_regularizer:
                        raise ValueError(
                            "Activity regularization is not supported when executing eagerly.")
                    self._set_scope(scope)
                    if not eager and self._graph is None:
                        self._graph = graph
                    if self._dtype is None:
                        # The first input's dtype, as the reference (a nested
                        # structure: its first leaf).
                        self._dtype = np.asarray(flatten(inputs)[0]).dtype.name
                    self.build(tuple(np.shape(inputs)))
                    self.built = True
        self._assert_input_compatibility(inputs)
        calls = _tls.calls
        calls.append((self, inputs))
        try:
            outputs = self.call(inputs, *args, **kwargs)
        finally:
            calls.pop()
        if outputs is None:
            raise ValueError(
                "A layer's `call` method should return a Tensor or a list of Tensors, not None.")
        if not eager:
            if self._activity_regularizer:
                value = np.float64(self._activity_regularizer(outputs))
                self.add_loss(value, inputs=inputs)
            with self._lock:
                nodes = self._inbound_nodes
                nodes.append(Node(inputs, outputs, dict(kwargs) if kwargs else _NO_ARGS,
                                  nodes[-1] if nodes else None))
                if len(nodes) % _COMPACT_EVERY == 0:
                    self._compact_nodes()
                if len(self._inbound_nodes) == _NODE_WARN and not self._node_warned:
                    self._node_warned = True
                    warnings.warn(
                        f"layer {self.name} has been called {_NODE_WARN} times in graph mode, "
                        "which records a node and pending updates per call (TensorFlow 1.x's "
                        "'graph built in a loop'). For training loops use `with "
                        "ckbn.eager_mode():`, which applies updates at once and records "
                        "nothing.", RuntimeWarning, stacklevel=2)
            if self.trainable or self.stateful:
                with self._lock:
                    fresh = [u for u in self._updates[self._n_published:] if not u._published]
                    self._n_published = len(self._updates)
                    for u in fresh:
                        u._published = True
                if fresh:
                    self._graph.extend_collection(GraphKeys.UPDATE_OPS, fresh)
        return outputs

    apply = __call__

    # -- updates and losses -------------------------------------------------
    def add_update(self, updates, inputs=None):
        """Register updates: ``Update`` objects or zero-arg callables, one or a list.

        Graph mode: they become pending (``updates``, ``get_updates_for``,
        the ``UPDATE_OPS`` collection) and run with ``run_updates``; a
        callable ``f`` is kept as ``Update(f, name=f.__name__)``, so it runs
        once however often the updates are run.  Eager mode records nothing:
        both kinds are applied at once when the layer is trainable (or
        stateful), and dropped otherwise.

        ``inputs``: None (unconditional updates), an array, a nested
        list/tuple/dict of arrays (the updates are conditional on each of
        them), or True (the inputs of this layer's call in progress).
        """
        updates = _as_updates(updates, "add_update")
        if executing_eagerly():
            if self.trainable or self.stateful:
                for u in updates:
                    u.run()
            return
        leaves = None if inputs is None else _input_leaves(self, inputs, "add_update")
        with self._lock:
            for u in updates:
                u._inputs = None if leaves is None else True
                self._updates.append(u)
            for leaf in leaves or ():
                entry = self._updates_by_input.get(id(leaf))
                if entry is None or entry[0]() is not leaf:
                    entry = self._updates_by_input[id(leaf)] = [_ref(leaf)]
                    if len(self._updates_by_input) > self._prune_at:
                        self._prune_update_index()
                entry.extend(u for u in updates if u not in entry)

    @property
    def updates(self):
        if executing_eagerly():
            raise RuntimeError("Layer.updates not supported in Eager mode.")
        if not self.trainable and not self.stateful:
            return []
        return list(self._updates)

    def get_updates_for(self, inputs):
        """The updates conditional on ``inputs`` (an array or a nested
        list/tuple/dict of arrays: those of any of its leaves, in the order
        they were added), or the unconditional ones for ``None``."""
        if executing_eagerly():
            raise RuntimeError("`get_updates_for()` not supported in Eager mode.")
        if inputs is None:
            if not self.trainable and not self.stateful:
                return []
            return [u for u in self._updates if u._inputs is None]
        leaves = flatten(inputs)
        for leaf in leaves:
            if leaf is None:
                raise TypeError(f"{self.name}.get_updates_for: inputs {inputs!r} contains None; "
                                "expected arrays (None alone means the unconditional updates)")
        if not self.trainable and not self.stateful:
            return []
        found = []
        for leaf in leaves:
            entry = self._updates_by_input.get(id(leaf))
            if entry is not None and entry[0]() is leaf:
                found.extend(entry[1:])
        if len(leaves) == 1:
            return found
        ids = {id(u) for u in found}
        return [u for u in self._updates if id(u) in ids]

    def _prune_update_index(self):
        """Forget index entries whose input array is gone."""
        dead = [k for k, e in self._updates_by_input.items() if e[0]() is None]
        for k in dead:
            del self._updates_by_input[k]
        self._prune_at = max(64, 2 * len(self._updates_by_input))

    def add_loss(self, losses, inputs=None):
        if executing_eagerly():
            raise RuntimeError("Layer.add_loss not supported in Eager mode.")
        if not isinstance(losses, (list, tuple)):
            losses = [losses]
        refs = None if inputs is None else tuple(
            _ref(leaf) for leaf in _input_leaves(self, inputs, "add_loss"))
        with self._lock:
            for v in losses:
                entry = _Loss(v, refs)
                self._losses.append(entry)
                get_default_graph().add_to_collection(GraphKeys.REGULARIZATION_LOSSES, entry)

    @property
    def losses(self):
        return [entry.value() for entry in self._losses]

    def get_losses_for(self, inputs):
        if executing_eagerly():
            raise RuntimeError("Layer.get_losses_for not supported in Eager mode.")
        if inputs is None:
            return [e.value() for e in self._losses if e.inputs is None]
        leaves = flatten(inputs)
        for leaf in leaves:
            if leaf is None:
                raise TypeError(f"{self.name}.get_losses_for: inputs {inputs!r} contains None; "
                                "expected arrays (None alone means the unconditional losses)")
        ids = {id(leaf) for leaf in leaves}
        return [e.value() for e in self._losses
                if e.inputs is not None and any(id(r()) in ids and r() is not None
                                                for r in e.inputs)]

    # -- nodes --------------------------------------------------------------
    def _compact_nodes(self):
        """Replace nodes whose arrays are gone by one shared node per (shapes,
        arguments): a long graph-mode loop then costs a list slot per call."""
        nodes = self._inbound_nodes
        shared = self.__dict__.setdefault("_dead_nodes", {})
        for i in range(self.__dict__.get("_compacted", 0), len(nodes) - 1):
            n = nodes[i]
            if n._input is _dead or n._input() is not None or n._output() is not None:
                continue
            try:
                key = (n.input_shapes, n.output_shapes, tuple(sorted(n.arguments.items())))
                hash(key)
            except TypeError:
                continue
            dead = shared.get(key)
            if dead is None:
                dead = shared[key] = Node.__new__(Node)
                dead._input = dead._output = _dead
                dead.input_shapes, dead.output_shapes = n.input_shapes, n.output_shapes
                dead.arguments = n.arguments
            nodes[i] = dead
        self._compacted = len(nodes) - 1

    def _node_attr(self, i, attr, what):
        if executing_eagerly():
            raise RuntimeError(f"Layer.get_{what.replace(' ', '_')}_at not supported in Eager mode.")
        if not self._inbound_nodes:
            raise RuntimeError(f"The layer has never been called and thus has no defined {what}.")
        if not 0 <= i < len(self._inbound_nodes):
            raise ValueError(
                f"Asked to get {what} at node {i}, but the layer has only "
                f"{len(self._inbound_nodes)} inbound nodes.")
        return getattr(self._inbound_nodes[i], attr)

    def get_input_at(self, node_index):
        return self._node_attr(node_index, "input_tensors", "input")

    def get_output_at(self, node_index):
        return self._node_attr(node_index, "output_tensors", "output")

    def get_input_shape_at(self, node_index):
        return self._node_attr(node_index, "input_shapes", "input shape")

    def get_output_shape_at(self, node_index):
        return self._node_attr(node_index, "output_shapes", "output shape")

    @property
    def input(self):
        if executing_eagerly():
            raise RuntimeError("Layer.input not supported in Eager mode.")
        if not self._inbound_nodes:
            raise AttributeError(f"Layer {self.name} is not connected, no input to return.")
        return self._inbound_nodes[0].input_tensors

    @property
    def output(self):
        if executing_eagerly():
            raise RuntimeError("Layer.output not supported in Eager mode.")
        if not self._inbound_nodes:
            raise AttributeError(f"Layer {self.name} has no inbound nodes.")
        return self._inbound_nodes[0].output_tensors

    @property
    def input_shape(self):
        if executing_eagerly():
            raise RuntimeError("Layer.input_shape not supported in Eager mode.")
        if not self._inbound_nodes:
            raise AttributeError(
                "The layer has never been called and thus has no defined input shape.")
        shapes = {n.input_shapes for n in self._inbound_nodes}
        if len(shapes) > 1:
            raise AttributeError(
                f'The layer "{self.name} has multiple inbound nodes, with different input '
                'shapes. Hence the notion of "input shape" is ill-defined for the layer. Use '
                "`get_input_shape_at(node_index)` instead.")
        return self._inbound_nodes[0].input_shapes

    @property
    def output_shape(self):
        if executing_eagerly():
            raise RuntimeError("Layer.output_shape not supported in Eager mode.")
        if not self._inbound_nodes:
            raise AttributeError(
                "The layer has never been called and thus has no defined output shape.")
        shapes = {n.output_shapes for n in self._inbound_nodes}
        if len(shapes) > 1:
            raise AttributeError(
                f'The layer "{self.name}" has multiple inbound nodes, with different output '
                'shapes. Hence the notion of "output shape" is ill-defined for the layer. Use '
                "`get_output_shape_at(node_index)` instead.")
        return self._inbound_nodes[0].output_shapes

    # -- copies -------------------------------------------------------------
    def __deepcopy__(self, memo):
        cls = type(self)
        new = cls.__new__(cls)
        memo[id(self)] = new
        for k, v in self.__dict__.items():
            if k in ("_graph",):
                setattr(new, k, v)
            elif k == "_scope":
                setattr(new, k, copy.copy(v))
            elif k == "_lock":
                setattr(new, k, threading.RLock())
            else:
                setattr(new, k, copy.deepcopy(v, memo))
        return new

    def __getstate__(self):
        raise TypeError(f"{type(self).__name__} objects cannot be pickled; use get_weights()")


class _Loss:
    """A loss entry: a value, or ``fn(var.value)`` re-evaluated on access.

    ``inputs``: None (unconditional) or a tuple of references to the arrays
    the loss is conditional on."""

    __slots__ = ("_v", "inputs", "var", "__weakref__")

    def __init__(self, v, inputs, var=None):
        self._v = v
        self.inputs = inputs
        self.var = var

    def value(self):
        if self.var is not None:
            return np.float64(self._v(self.var.value))
        return np.float64(self._v)

    def __deepcopy__(self, memo):
        new = _Loss(self._v, self.inputs, copy.deepcopy(self.var, memo))
        memo[id(self)] = new
        return new

    def __float__(self):
        return float(self.value())

    def __repr__(self):
        return f"<ckbn loss {float(self.value()):.6g}>"
