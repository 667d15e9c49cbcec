"""Synchronized batch normalization over MPI: mpiexec -n 2 and -n 4 on loopback.

Each run starts real MPI processes (the ``mpich`` wheel's ``mpiexec``,
oversubscribed, one OpenMP thread per rank) running
``tests/distributed_worker.py``; the checks compare every rank with
single-process batch normalization of the concatenated global batch.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

pytest.importorskip("mpi4py")

from tests import distributed_checks as D  # noqa: E402


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    exe = here if os.path.exists(here) else shutil.which("mpiexec")
    if exe is None:
        pytest.skip("no mpiexec (pip install mpich)")
    return exe


def _run(n, plan, outdir, timeout=180, engine="mpi"):
    cmd = [_mpiexec(), "-n", str(n), "-host", "localhost", sys.executable, "-m",
           "tests.distributed_worker", engine, plan, str(outdir)]
    return subprocess.run(cmd, cwd=D.ROOT, env=D.worker_env(), capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("engine", ["mpi", "mpi-merge"])
@pytest.mark.parametrize("n", [2, 4])
def test_mpi_matches_global_batch(n, engine, tmp_path):
    # "mpi-merge": from_mpi4py(reduction="merge"), the all-reduce with the Chan merge.
    res = _run(n, "steps", tmp_path, engine=engine)
    assert res.returncode == 0, res.stdout + res.stderr
    arrays, errors = D.load(tmp_path, n)
    D.check_steps(arrays, errors, n)


def test_mpi_dead_rank_ends_the_job(tmp_path):
    t0 = time.monotonic()
    res = _run(2, "dead", tmp_path, timeout=120)
    elapsed = time.monotonic() - t0
    # mpiexec ends every process when one exits mid-step: no hang, a non-zero status,
    # and the survivor never completed the step it was waiting in.
    # mpiexec reports rank 1's status (3), or, when it reaps the survivor it
    # killed first, that one's SIGKILL (9): which of the two is a race.
    assert res.returncode in (3, 9), (res.returncode, res.stdout + res.stderr)
    assert elapsed < 120
    assert not os.path.exists(tmp_path / "rank0.json")


def test_example_sync_mpi_matches_one_process():
    cmd = [_mpiexec(), "-n", "2", "-host", "localhost", sys.executable,
           os.path.join(D.ROOT, "examples", "sync_mpi.py"), "--epochs", "2"]
    res = subprocess.run(cmd, cwd=D.ROOT, env=D.worker_env(), capture_output=True, text=True,
                         timeout=180)
    assert res.returncode == 0, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    acc_sync = float(next(ln for ln in lines if ln.startswith("synchronized")).split()[-1])
    acc_one = float(next(ln for ln in lines if ln.startswith("one process")).split()[-1])
    diff = float(next(ln for ln in lines if ln.startswith("largest weight")).split()[-1])
    assert acc_sync == acc_one
    assert acc_sync > 0.85          # ten classes: chance is 0.1
    assert diff < 1e-3
