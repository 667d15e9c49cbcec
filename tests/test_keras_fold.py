"""Runs ``tests/keras_fold_cases.py`` (``fold_batch_normalization``) once per Keras backend.

Keras fixes its backend at import (``KERAS_BACKEND``), so each backend gets a
fresh process, as ``tests/test_keras_plugin.py`` does.  A backend whose
framework is not installed is skipped.
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
FRAMEWORK = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax", "numpy": "numpy"}


def run_cases(cases, backend, tmp_path, timeout=900):
    """Run the cases file ``cases`` under ``KERAS_BACKEND=backend``; assert it passed."""
    if importlib.util.find_spec(FRAMEWORK[backend]) is None:
        pytest.skip(f"{FRAMEWORK[backend]} is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "pytest", str(HERE / cases), "-q", "-p", "no:cacheprovider",
           "-W", "ignore::DeprecationWarning", "--rootdir", str(HERE.parent),
           "--basetemp", str(tmp_path / "cases")]
    proc = subprocess.run(cmd, env=env, cwd=str(HERE.parent), capture_output=True, text=True,
                          timeout=timeout)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"KERAS_BACKEND={backend} failed:\n{tail}"
    assert " passed" in proc.stdout, tail


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax", "numpy"])
def test_fold_batch_normalization_on_backend(backend, tmp_path):
    run_cases("keras_fold_cases.py", backend, tmp_path)
