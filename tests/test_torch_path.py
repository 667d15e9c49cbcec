"""Runs ``tests/torch_path_cases.py`` (the PyTorch backend's per-call shortcuts) in a
process with ``KERAS_BACKEND=torch`` (Keras fixes its backend at import)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")

HERE = Path(__file__).resolve().parent


def test_torch_path_cases(tmp_path):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    env = dict(os.environ, KERAS_BACKEND="torch",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "pytest", str(HERE / "torch_path_cases.py"), "-q",
           "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
           "--rootdir", str(HERE.parent), "--basetemp", str(tmp_path / "cases")]
    proc = subprocess.run(cmd, env=env, cwd=str(HERE.parent), capture_output=True, text=True,
                          timeout=600)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"KERAS_BACKEND=torch failed:\n{tail}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
