"""keras_plugin synchronized=True under tf.distribute.MultiWorkerMirroredStrategy:
two worker processes on 127.0.0.1 (``TF_CONFIG``), one replica each, compared
with single-process batch normalization of the global batch (float64 NumPy,
``tests/distributed_checks.py``), even and uneven local batches, masked and not.
"""

import json
import subprocess
import sys

import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("keras")

from tests import distributed_checks as D  # noqa: E402


@pytest.mark.slow
def test_multi_worker_mirrored_strategy_matches_global_batch(tmp_path):
    ports = [D.free_port(), D.free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(2):
        env = D.worker_env()
        env["KERAS_BACKEND"] = "tensorflow"
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker",
                                                                    "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.distributed_worker", "tf-multi-worker", "keras",
             str(tmp_path)], cwd=D.ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True))
    results = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=420)
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for rc, out, err in results:
        assert rc == 0, out + err[-4000:]
    arrays, errors = D.load(tmp_path, 2)
    D.check_steps(arrays, errors, 2, keras=True)
