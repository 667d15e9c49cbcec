"""Synchronized batch normalization over torch.distributed (gloo, 2 processes, 127.0.0.1)."""

import time

import pytest

pytest.importorskip("torch.distributed")

from tests import distributed_checks as D  # noqa: E402


def test_torch_gloo_matches_global_batch(tmp_path):
    res = D.run_torch("steps", tmp_path, size=2, timeout=240)
    for rc, out, err in res:
        assert rc == 0, out + err
    arrays, errors = D.load(tmp_path, 2)
    D.check_steps(arrays, errors, 2)


def test_torch_dead_rank_fails_the_other(tmp_path):
    t0 = time.monotonic()
    res = D.run_torch("dead", tmp_path, size=2, timeout=120)
    elapsed = time.monotonic() - t0
    assert res[1][0] == 3
    assert res[0][0] == 0, res[0][1] + res[0][2]
    import json
    with open(tmp_path / "rank0.json") as f:
        err = json.load(f)["dead"]
    assert err.startswith("RuntimeError: ckbn.distributed: all-gather"), err
    assert "rank 0 of 2" in err
    assert elapsed < 120


def test_keras_plugin_torch_backend_matches_global_batch(tmp_path, monkeypatch):
    pytest.importorskip("keras")
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    res = D.run_torch("keras", tmp_path, size=2, timeout=300)
    for rc, out, err in res:
        assert rc == 0, out + err
    arrays, errors = D.load(tmp_path, 2)
    D.check_steps(arrays, errors, 2, keras=True)


@pytest.mark.slow
def test_example_sync_keras_torch_matches_one_process():
    pytest.importorskip("keras")
    pytest.importorskip("sklearn")
    import os
    script = os.path.join(D.ROOT, "examples", "sync_keras_torch.py")
    res = D.run_torch(None, None, size=2, timeout=400, argv=[script, "--epochs", "2"],
                      extra_env={"KERAS_BACKEND": "torch"})
    for rc, out, err in res:
        assert rc == 0, out + err[-3000:]
    lines = res[0][1].splitlines()
    acc_sync = float(next(ln for ln in lines if ln.startswith("synchronized")).split()[-1])
    acc_one = float(next(ln for ln in lines if ln.startswith("one process")).split()[-1])
    assert acc_sync == acc_one
    assert acc_sync > 0.85
