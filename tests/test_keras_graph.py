"""Runs ``tests/keras_graph_cases.py`` (swap, fuse and fold on any functional graph:
Keras operations, nested models, shared layers, several inputs and outputs) once
per Keras backend, each in a fresh process (Keras fixes its backend at import)."""

from __future__ import annotations

import pytest

from tests.test_keras_fold import run_cases

pytest.importorskip("keras")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "torch", "jax", "numpy"])
def test_functional_graphs_on_backend(backend, tmp_path):
    run_cases("keras_graph_cases.py", backend, tmp_path)
