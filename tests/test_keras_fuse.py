"""Runs ``tests/keras_fuse_cases.py`` (``swap_batch_normalization(..., fuse_activations=True)``)
once per Keras backend, each in a fresh process (Keras fixes its backend at import)."""

from __future__ import annotations

import pytest

from tests.test_keras_fold import run_cases

pytest.importorskip("keras")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax", "numpy"])
def test_fuse_activations_on_backend(backend, tmp_path):
    run_cases("keras_fuse_cases.py", backend, tmp_path)
