"""Runs the PyTorch backend's case files in processes with ``KERAS_BACKEND=torch``
(Keras fixes its backend at import):

* ``tests/torch_path_cases.py`` (the per-call shortcuts) twice: with the compiled
  operators of ``keras_plugin._torch_native`` where they build, and with
  ``CKBN_NATIVE=0`` (the Python autograd Functions);
* ``tests/torch_native_cases.py`` (the compiled operators against the Python
  Functions and float64 NumPy);
* a layer without the operators (``CKBN_NATIVE=0``): one warning, same values.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.twin import TWIN, compiled_only

pytest.importorskip("keras")

HERE = Path(__file__).resolve().parent


def _env(**extra):
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed")
    return dict(os.environ, KERAS_BACKEND="torch",
                PYTHONPATH=os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")]),
                **extra)


def _cases(name, tmp_path, **extra):
    cmd = [sys.executable, "-m", "pytest", str(HERE / name), "-q",
           "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
           "--rootdir", str(HERE.parent), "--basetemp", str(tmp_path / "cases")]
    proc = subprocess.run(cmd, env=_env(**extra), cwd=str(HERE.parent), capture_output=True,
                          text=True, timeout=600)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"KERAS_BACKEND=torch {extra} failed:\n{tail}"
    assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
    return proc.stdout


def test_torch_path_cases(tmp_path):
    _cases("torch_path_cases.py", tmp_path)


def test_torch_path_cases_without_native_ops(tmp_path):
    _cases("torch_path_cases.py", tmp_path, CKBN_NATIVE="0")


@compiled_only("has no C-level table, which the PyTorch native ops call")
def test_torch_native_cases(tmp_path):
    _cases("torch_native_cases.py", tmp_path)


# The reason the one warning names is sys.argv[1] (see the test below).
FALLBACK = r"""
import sys
import warnings
import numpy as np
import torch
import keras_plugin
from keras_plugin import BatchNormalization, _torch_native
keras_plugin._policy.set_min_elements("torch", None, 0)
x = torch.from_numpy(np.random.default_rng(0).normal(size=(8, 3, 2, 5)).astype("float32"))
layer = BatchNormalization(epsilon=1e-3)
layer.build(x.shape)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    ys = [layer(x.clone().requires_grad_(True), training=True) for _ in range(2)]
ours = [w for w in caught if "PyTorch native op" in str(w.message)]
assert len(ours) == 1 and sys.argv[1] in str(ours[0].message), [str(w.message) for w in caught]
assert _torch_native.load() is None
assert "_EagerTrain" in ys[0].grad_fn.name()
a = x.numpy().astype(np.float64)
want = (a - a.mean(axis=(0, 1, 2))) / np.sqrt(a.var(axis=(0, 1, 2)) + 1e-3)
np.testing.assert_allclose(ys[1].detach().numpy(), want, rtol=1e-5, atol=1e-5)
print("fallback ok")
"""


def test_without_native_ops_one_warning_same_values():
    # On the NumPy twin the warning names the twin's missing C-level table,
    # which keras_plugin._torch_native asks for before it looks at CKBN_NATIVE.
    reason = "have no C-level table" if TWIN else "CKBN_NATIVE=0"
    proc = subprocess.run([sys.executable, "-c", FALLBACK, reason], env=_env(CKBN_NATIVE="0"),
                          cwd=str(HERE.parent), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "fallback ok" in proc.stdout, proc.stderr[-4000:]
