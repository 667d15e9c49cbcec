"""Runs ``tests/keras_backend_cases.py`` once per installed Keras backend.

Keras fixes its backend at import (``KERAS_BACKEND``), so each backend gets a
fresh process: ``python -m pytest tests/keras_backend_cases.py`` with the
variable set.  A backend whose framework is not installed is skipped; CI
installs TensorFlow, PyTorch (``torch==2.13.0``, CPU) and JAX, so all four run
there.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("keras")

HERE = Path(__file__).resolve().parent
CASES = HERE / "keras_backend_cases.py"
FRAMEWORK = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax", "numpy": "numpy"}


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax", "numpy"])
def test_keras_plugin_on_backend(backend, tmp_path):
    if importlib.util.find_spec(FRAMEWORK[backend]) is None:
        pytest.skip(f"{FRAMEWORK[backend]} is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider",
           "-W", "ignore::DeprecationWarning", "--rootdir", str(HERE.parent),
           "--basetemp", str(tmp_path / "cases")]
    proc = subprocess.run(cmd, env=env, cwd=str(HERE.parent), capture_output=True, text=True,
                          timeout=900)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"KERAS_BACKEND={backend} failed:\n{tail}"
    assert " passed" in proc.stdout, tail


def test_jax_dispatch_cases(tmp_path):
    """``tests/jax_dispatch_cases.py`` (the layer's cached dispatch decision on JAX) in a
    ``KERAS_BACKEND=jax`` process."""
    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "pytest", str(HERE / "jax_dispatch_cases.py"), "-q",
           "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
           "--rootdir", str(HERE.parent), "--basetemp", str(tmp_path / "cases")]
    proc = subprocess.run(cmd, env=env, cwd=str(HERE.parent), capture_output=True, text=True,
                          timeout=900)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"KERAS_BACKEND=jax failed:\n{tail}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
