"""Keras-level input errors of synchronized batch normalization reach every process.

Two gloo processes on 127.0.0.1 (``tests/distributed_keras_errors.py``), the
torch backend: rank 1's training call gets a mask that does not fit its batch.
Every rank must raise the same error (type and message, naming rank 1), within
the timeout (no hang), with the moving statistics unchanged, and a later good
step must still agree between the processes.
"""

import json
import time

import numpy as np
import pytest

pytest.importorskip("torch.distributed")
pytest.importorskip("keras")

from tests import distributed_checks as D  # noqa: E402


@pytest.mark.slow
def test_bad_input_on_one_rank_raises_on_every_rank(tmp_path):
    t0 = time.monotonic()
    res = D.run_torch(None, tmp_path, size=2, timeout=400,
                      argv=["-m", "tests.distributed_keras_errors", str(tmp_path)],
                      extra_env={"KERAS_BACKEND": "torch"})
    elapsed = time.monotonic() - t0
    for rc, out, err in res:
        assert rc == 0, out + err
    recs = []
    for r in range(2):
        with open(tmp_path / f"rank{r}.json") as f:
            recs.append(json.load(f))
    # Keras wraps the message with each rank's own call arguments; the error
    # itself is the same line on both ranks.
    errs = [rec["forward"] for rec in recs]
    assert all(e.startswith("ValueError: ") for e in errs), errs
    lines = [next(ln for ln in e.splitlines() if "synchronized batch normalization" in ln)
             for e in errs]
    assert lines[0] == lines[1], lines
    assert "synchronized batch normalization failed on rank 1 of 2" in lines[0]
    assert "mask of shape (5,)" in lines[0]
    for rec in recs:
        assert rec["forward/moving"] == rec["good/moving"]      # no state changed
    # The last good step: both ranks hold the same moving statistics, and they moved.
    np.testing.assert_array_equal(recs[0]["last/moving"], recs[1]["last/moving"])
    assert recs[0]["last/moving"] != recs[0]["good/moving"]
    assert elapsed < 400
