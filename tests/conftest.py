"""Shared fixtures, the Hypothesis profiles and the parallel run of the test suite."""

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


# Parallel run.  With pytest-xdist installed (requirements-test.txt), a plain
# ``pytest`` runs the suite on 2 worker processes, a whole file per worker
# (``--dist loadfile``: a file's tests run in order, in one process, as they
# do without xdist), and the files that hold ``slow`` tests are handed out
# first, so no long file starts last.  ``CKBN_TEST_WORKERS=n`` sets the number
# of workers (0: one process, as without xdist); an explicit ``-n``/``--dist``
# on the command line wins, and ``--pdb`` or ``-p no:xdist`` runs in one
# process.  The pytest runs that tests start themselves (one per Keras backend)
# always run in one process: the first pytest marks the environment
# (``CKBN_PYTEST_NESTED``) that they inherit.
_WORKERS_ENV = "CKBN_TEST_WORKERS"
_NESTED_ENV = "CKBN_PYTEST_NESTED"
_DEFAULT_WORKERS = 2


def _workers_wanted():
    if os.environ.get(_NESTED_ENV) == "1":
        return 0
    text = os.environ.get(_WORKERS_ENV)
    if text is None:
        return _DEFAULT_WORKERS if (os.cpu_count() or 1) >= 2 else 0
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise pytest.UsageError(f"{_WORKERS_ENV} must be a whole number >= 0, got {text!r}")
    return n


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    if hasattr(config, "workerinput") or not hasattr(config.option, "numprocesses"):
        return              # an xdist worker, or xdist is not installed / disabled
    chosen = (config.option.numprocesses is not None or config.option.dist != "no"
              or config.option.tx or config.getoption("usepdb", False))
    if not chosen:
        n = _workers_wanted()
        if n > 0:
            config.option.numprocesses = n
            config.option.dist = "loadfile"
            config.option.tx = ["popen"] * n     # as xdist's own -n does (whichever runs first)
            # Worker processes and the tests' own subprocesses share the cores:
            # OpenMP threads that wait sleep instead of spinning (results do not
            # depend on it; the README gives the same advice for busy machines).
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ[_NESTED_ENV] = "1"


def pytest_collection_modifyitems(config, items):
    """Under xdist, the files with ``slow`` tests first (a stable reordering:
    inside a file, and among the other files, the order is unchanged)."""
    if not hasattr(config, "workerinput"):
        return
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture
def fresh_graph():
    """A new, empty process-wide default graph for the test (layer-name and
    scope counters restart, collections are empty); threads the test starts
    see it too.  Replaced by another new graph afterwards."""
    ckbn.reset_default_graph()
    yield ckbn.get_default_graph()
    ckbn.reset_default_graph()
