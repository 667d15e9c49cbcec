"""Shared fixtures and the Hypothesis profiles of the test suite."""

import os

import pytest
from hypothesis import HealthCheck, settings

import ckbn

# Profiles: "ckbn-ci" (the default) is deterministic: derandomized, no example
# database, so every run of the suite draws the same examples; "ckbn-dev"
# searches longer with random draws.  Choose with HYPOTHESIS_PROFILE=ckbn-dev.
settings.register_profile("ckbn-ci", derandomize=True, database=None, max_examples=60,
                          deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ckbn-dev", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ckbn-ci"))


@pytest.fixture
def fresh_graph():
    """A new, empty process-wide default graph for the test (layer-name and
    scope counters restart, collections are empty); threads the test starts
    see it too.  Replaced by another new graph afterwards."""
    ckbn.reset_default_graph()
    yield ckbn.get_default_graph()
    ckbn.reset_default_graph()
