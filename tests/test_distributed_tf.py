"""keras_plugin synchronized=True under tf.distribute.MirroredStrategy (2 logical CPUs).

TensorFlow's logical devices must be configured before TensorFlow starts, so
the strategy runs in a fresh subprocess (``tests/distributed_worker.py``).
"""

import subprocess
import sys

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from tests import distributed_checks as D  # noqa: E402


@pytest.mark.slow
def test_mirrored_strategy_matches_global_batch(tmp_path):
    env = D.worker_env()
    env["KERAS_BACKEND"] = "tensorflow"
    res = subprocess.run([sys.executable, "-m", "tests.distributed_worker", "tf", "keras",
                          str(tmp_path)], cwd=D.ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr[-4000:]
    arrays, errors = D.load(tmp_path, 2)
    D.check_steps(arrays, errors, 2, keras=True)
