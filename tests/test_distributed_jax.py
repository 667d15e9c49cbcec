"""keras_plugin synchronized=True on JAX: shard_map over 4 host CPU devices.

The device count must be set before JAX starts, so the run is a fresh
subprocess (``tests/distributed_worker.py``).  shard_map gives every device an
equal shard, so the equal split is checked here (uneven and empty local
batches are covered by the MPI, torch and TensorFlow tests).
"""

import subprocess
import sys

import pytest

pytest.importorskip("jax")
pytest.importorskip("keras")

from tests import distributed_checks as D  # noqa: E402


@pytest.mark.slow
def test_shard_map_matches_global_batch(tmp_path):
    env = D.worker_env()
    env.update(KERAS_BACKEND="jax", XLA_FLAGS="--xla_force_host_platform_device_count=4",
               JAX_PLATFORMS="cpu")
    res = subprocess.run([sys.executable, "-m", "tests.distributed_worker", "jax", "keras",
                          str(tmp_path)], cwd=D.ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    arrays, errors = D.load(tmp_path, 4)
    D.check_steps(arrays, errors, 4, keras=True, split_names=["equal"])
