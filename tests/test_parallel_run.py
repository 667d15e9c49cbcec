"""The suite's parallel run (tests/conftest.py): a plain ``pytest`` runs on
xdist workers, files with ``slow`` tests first; ``CKBN_TEST_WORKERS`` and the
nested-run mark turn it off; a bad worker count is a usage error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("xdist")

ROOT = Path(__file__).resolve().parent.parent

# Each probe test appends what it saw to the log named by PROBE_LOG.
PROBE = '''
import json, os

def test_{name}():
    with open(os.environ["PROBE_LOG"], "a") as f:
        f.write(json.dumps({{"test": "{name}",
                            "worker": os.environ.get("PYTEST_XDIST_WORKER"),
                            "omp_wait": os.environ.get("OMP_WAIT_POLICY")}}) + "\\n")
'''


def _run(tmp_path, **env_extra):
    probe = tmp_path / "probe"
    probe.mkdir(exist_ok=True)
    (probe / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: long\n")
    (probe / "test_a_plain.py").write_text(PROBE.format(name="plain"))
    (probe / "test_b_slow.py").write_text(
        "import pytest\npytestmark = pytest.mark.slow\n" + PROBE.format(name="slow"))
    log = tmp_path / "log.jsonl"
    if log.exists():
        log.unlink()
    env = {k: v for k, v in os.environ.items()
           if k not in ("CKBN_PYTEST_NESTED", "CKBN_TEST_WORKERS", "OMP_WAIT_POLICY",
                        "PYTEST_ADDOPTS", "PYTEST_XDIST_WORKER")}
    env.update(PROBE_LOG=str(log),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               **env_extra)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "tests.conftest", "-q",
                           "-p", "no:cacheprovider", "--rootdir", str(probe), str(probe)],
                          cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=300)
    seen = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, seen


def test_plain_pytest_runs_on_workers_slow_files_first(tmp_path):
    proc, seen = _run(tmp_path, CKBN_TEST_WORKERS="1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # One worker takes both files: the file with slow tests first.
    assert [s["test"] for s in seen] == ["slow", "plain"]
    assert {s["worker"] for s in seen} == {"gw0"}
    assert {s["omp_wait"] for s in seen} == {"PASSIVE"}


def test_default_is_two_workers(tmp_path):
    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: the default is one process")
    proc, seen = _run(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(s["test"] for s in seen) == ["plain", "slow"]
    assert all(s["worker"] in ("gw0", "gw1") for s in seen)


@pytest.mark.parametrize("env", [{"CKBN_TEST_WORKERS": "0"}, {"CKBN_PYTEST_NESTED": "1"}])
def test_zero_workers_or_a_nested_run_is_one_process(tmp_path, env):
    proc, seen = _run(tmp_path, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [s["test"] for s in seen] == ["plain", "slow"]      # collection order
    assert {s["worker"] for s in seen} == {None}
    assert {s["omp_wait"] for s in seen} == {None}


@pytest.mark.parametrize("bad", ["two", "-1"])
def test_bad_worker_count_is_a_usage_error(tmp_path, bad):
    proc, seen = _run(tmp_path, CKBN_TEST_WORKERS=bad)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert f"CKBN_TEST_WORKERS must be a whole number >= 0, got '{bad}'" in proc.stderr
    assert seen == []
