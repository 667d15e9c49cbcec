"""The build itself: OpenMP present, configuration reported."""

import io
import os

import pytest

import ckbn


@pytest.mark.skipif(os.environ.get("CKBN_SKIP_OPENMP_TEST") == "1",
                    reason="CKBN_SKIP_OPENMP_TEST=1: a deliberately serial build")
def test_openmp_enabled():
    """Fails when the build lost OpenMP (setup.py fell back to serial kernels)."""
    assert ckbn.openmp_enabled() is True


def test_show_config_prints_the_facts():
    buf = io.StringIO()
    ckbn.show_config(file=buf)
    text = buf.getvalue()
    assert ckbn.__version__ in text
    assert f"openmp: {ckbn.openmp_enabled()}" in text
    assert f"threads: {ckbn.get_num_threads()}" in text
    assert "kernels:" in text
