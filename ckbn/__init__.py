"""ckbn: batch normalization for NumPy arrays, on OpenMP Cython kernels.

The public surface (see the README):

* ``ckbn.nn`` -- low-level ops mirroring ``tf.nn``: ``moments``,
  ``batch_normalization``, ``fused_batch_norm``, ``fused_batch_norm_grad``;
* thread control: ``set_num_threads``, ``get_num_threads``, ``num_threads``,
  ``openmp_enabled``, ``show_config``.
"""

__version__ = "0.1.0.dev0"

from ckbn import nn
from ckbn._config import get_num_threads, num_threads, set_num_threads
from ckbn._openmp import openmp_enabled
from ckbn._show import show_config

# --- framework (Layer bookkeeping) -------------------------------------------
# --- end framework -----------------------------------------------------------
