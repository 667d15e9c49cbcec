"""Synchronized batch normalization at 8 processes: ``mpiexec -n 8`` on loopback.

Oversubscribed (8 ranks on the 2 cores of the development machine), one
OpenMP thread per rank; both forward exchanges (the all-gather with the
ordered merge, and the merge all-reduce).  Every rank is compared with
single-process batch normalization of the concatenated global batch (float64
NumPy, ``tests/distributed_checks.py``): equal, uneven and empty local
batches, the error cases, and bit-identical moving statistics on all 8 ranks.
"""

import pytest

pytest.importorskip("mpi4py")

from tests import distributed_checks as D  # noqa: E402
from tests.test_distributed_mpi import _run  # noqa: E402


@pytest.mark.parametrize("engine", ["mpi", "mpi-merge"])
def test_mpi8_matches_global_batch(engine, tmp_path):
    res = _run(8, "steps", tmp_path, timeout=600, engine=engine)
    assert res.returncode == 0, res.stdout + res.stderr
    arrays, errors = D.load(tmp_path, 8)
    D.check_steps(arrays, errors, 8)
