"""ckbn: batch normalization for NumPy arrays, on OpenMP Cython kernels.

The public surface (see the README):

* ``ckbn.nn`` -- low-level ops mirroring ``tf.nn``: ``moments``,
  ``batch_normalization``, ``fused_batch_norm``, ``fused_batch_norm_grad``;
* ``BatchNormalization`` / ``batch_normalization``: ``tf.layers``'s layer
  (TF 1.x semantics) on NumPy arrays, with ``backward`` for training;
* the TF 1.x bookkeeping it stands on: ``Layer``, ``Variable``, ``Graph``,
  ``GraphKeys``, ``variable_scope``, ``eager_mode``/``graph_mode``,
  ``run_updates``, and ``initializers``, ``regularizers``, ``constraints``,
  ``optimizers``;
* ``ckbn.distributed`` -- communicators for ``BatchNormalization(synchronized=True)``
  (statistics of the global batch across processes: MPI, ``torch.distributed``);
* thread control: ``set_num_threads``, ``get_num_threads``, ``num_threads``,
  ``openmp_enabled``, ``show_config``;
* native extensions: ``kernel_table`` (the compiled kernels as a C table in a
  PyCapsule) and ``get_include`` (the folder of its header, ``ckbn_kernels.h``).
"""

__version__ = "0.1.0.dev0"

from ckbn import nn
from ckbn._config import get_num_threads, num_threads, set_num_threads
from ckbn._dispatch import get_include, kernel_table
from ckbn._openmp import openmp_enabled
from ckbn._show import show_config

from ckbn import constraints, distributed, initializers, optimizers, regularizers
from ckbn._framework import (
    Graph,
    GraphKeys,
    InputSpec,
    Layer,
    Update,
    Variable,
    VariableScope,
    eager_mode,
    executing_eagerly,
    get_collection,
    get_default_graph,
    graph_mode,
    reset_default_graph,
    run_updates,
    variable_scope,
)
from ckbn._normalization import (
    BatchNorm,
    BatchNormalization,
    batch_norm,
    batch_normalization,
)

__all__ = [
    "nn", "distributed", "initializers", "regularizers", "constraints", "optimizers",
    "BatchNormalization", "BatchNorm", "batch_normalization", "batch_norm",
    "Layer", "InputSpec", "Variable", "Update", "run_updates",
    "Graph", "GraphKeys", "VariableScope", "get_default_graph", "reset_default_graph",
    "get_collection", "variable_scope", "eager_mode", "graph_mode", "executing_eagerly",
    "set_num_threads", "get_num_threads", "num_threads", "openmp_enabled", "show_config",
    "get_include", "kernel_table",
    "__version__",
]


def _load_kernels():
    """Load the kernel module, and with it its OpenMP runtime, at import:
    threadpoolctl looks only at the libraries loaded when it is called, so
    ``threadpool_info()`` and ``threadpool_limits()`` see ckbn's runtime right
    after ``import ckbn``.  A failure is raised again, with its message, by
    the first call that needs the kernels."""
    from ckbn._dispatch import kernels

    try:
        kernels()
    except (ImportError, ValueError, RuntimeError):
        pass


_load_kernels()
