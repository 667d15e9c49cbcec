"""keras_plugin synchronized=True on JAX with uneven and empty local batches.

shard_map gives every device an equal shard, so an uneven global batch is
padded: every shard holds its own rows, then zero rows masked out (mask False,
upstream gradient 0).  The statistics are those of the real rows of the global
batch, and every shard's outputs, gradients and moving statistics equal
single-process batch normalization of the unpadded global batch (float64 NumPy,
``tests/distributed_checks.py``).  4 host CPU devices; splits [1, 2, 3, 5]
and [3, 0, 2, 4] (a shard of padding only), the channels-last cases (a mask
needs the channels on the last axis; other layouts raise NotImplementedError).
"""

import subprocess
import sys

import pytest

pytest.importorskip("jax")
pytest.importorskip("keras")

from tests import distributed_checks as D  # noqa: E402
from tests import distributed_worker as W  # noqa: E402


@pytest.mark.slow
def test_shard_map_padded_uneven_batches_match_global_batch(tmp_path):
    env = D.worker_env()
    env.update(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-m", "tests.distributed_worker", "jax",
                          "keras-padded",
                          str(tmp_path)], cwd=D.ROOT, env=env, capture_output=True, text=True,
                         timeout=420)
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    arrays, errors = D.load(tmp_path, 4)
    runs = {(split, case) for split, _, case in W.jax_runs(4, padded=True)}
    assert {s for s, _ in runs} == {"uneven", "empty"} and len(runs) == 6
    D.check_steps(arrays, errors, 4, keras=True, runs=runs)
