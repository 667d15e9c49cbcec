"""ckbn.distributed in one process: argument checks, the world of one, the merge."""

import numpy as np
import pytest

import ckbn
from ckbn import distributed


class _World1:
    """A communicator of one process (what an MPI world of size 1 is)."""

    rank, size = 0, 1

    def allgather(self, vec):
        return np.asarray(vec)[None]

    def allreduce(self, vec):
        return np.asarray(vec)


def test_merge_matches_two_pass_on_concatenation():
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((n, 5)) * 3 + 1e4 for n in (7, 0, 1, 12, 3)]
    counts = [len(p) for p in parts]
    means = np.array([p.mean(0) if len(p) else np.zeros(5) for p in parts])
    m2s = np.array([((p - p.mean(0)) ** 2).sum(0) if len(p) else np.zeros(5) for p in parts])
    n, mean, var = distributed.merge(counts, means, m2s)
    full = np.concatenate(parts)
    assert n == len(full)
    np.testing.assert_allclose(mean, full.mean(0), rtol=1e-15)
    np.testing.assert_allclose(var, full.var(0), rtol=1e-11)


def test_merge_all_empty():
    n, mean, var = distributed.merge([0, 0], np.zeros((2, 3)), np.zeros((2, 3)))
    assert n == 0 and mean.shape == (3,) and var.shape == (3,)


def test_synchronized_needs_a_communicator():
    distributed.set_communicator(None)
    bn = ckbn.BatchNormalization(synchronized=True)
    x = np.ones((4, 3), np.float32)
    with ckbn.eager_mode():
        y = bn(x, training=False)          # inference never communicates
        np.testing.assert_allclose(y, x / np.sqrt(1 + 1e-3), rtol=1e-6)
        with pytest.raises(ValueError, match="synchronized=True needs a communicator"):
            bn(x, training=True)
    assert np.all(bn.moving_mean.value == 0)


def test_world_of_one_is_plain_bn():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 2, 2, 3)).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    plain = ckbn.BatchNormalization(momentum=0.5)
    distributed.set_communicator(_World1())
    try:
        sync = ckbn.BatchNormalization(momentum=0.5, synchronized=True)
        with ckbn.eager_mode():
            ya, yb = plain(x, training=True), sync(x, training=True)
            (da, ga), (db, gb) = plain.backward(dy), sync.backward(dy)
    finally:
        distributed.set_communicator(None)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(da, db)
    np.testing.assert_array_equal(plain.moving_variance.value, sync.moving_variance.value)


def test_argument_errors():
    with pytest.raises(TypeError, match="synchronized must be a bool"):
        ckbn.BatchNormalization(synchronized="yes")
    with pytest.raises(ValueError, match="virtual_batch_size"):
        ckbn.BatchNormalization(synchronized=True, virtual_batch_size=2)
    with pytest.raises(TypeError, match="lacks allgather, allreduce"):
        ckbn.BatchNormalization(synchronized=True, communicator=object.__new__(type(
            "C", (), {"rank": 0, "size": 2})))
    with pytest.raises(TypeError, match="lacks"):
        distributed.set_communicator(42)
    assert distributed.get_communicator() is None


def test_empty_batch_only_when_synchronized():
    with ckbn.eager_mode(), pytest.raises(ValueError, match="empty input"):
        ckbn.BatchNormalization()(np.zeros((0, 3), np.float32), training=True)


def test_from_torch_needs_init():
    pytest.importorskip("torch.distributed")
    import torch.distributed as dist
    if dist.is_initialized():
        pytest.skip("a process group is already initialized")
    with pytest.raises(ValueError, match="init_process_group"):
        distributed.from_torch()


def test_from_mpi4py_world():
    mpi4py = pytest.importorskip("mpi4py")
    mpi4py.rc.initialize = True
    comm = distributed.from_mpi4py()
    assert (comm.rank, comm.size) == (0, 1)
    np.testing.assert_array_equal(comm.allgather(np.arange(3.0)), [[0, 1, 2]])
    np.testing.assert_array_equal(comm.allreduce(np.arange(3.0)), [0, 1, 2])
    with pytest.raises(TypeError, match="mpi4py.MPI.Comm"):
        distributed.from_mpi4py("world")


def test_from_mpi4py_reduction_names():
    pytest.importorskip("mpi4py")
    with pytest.raises(ValueError, match="reduction must be 'gather' or 'merge', got 'sum'"):
        distributed.from_mpi4py(reduction="sum")
    assert distributed.from_mpi4py(reduction="merge").reduction == "merge"


def test_merge_packed_matches_merge():
    rng = np.random.default_rng(3)
    c = 4
    counts = [5.0, 0.0, 3.0]
    means = rng.standard_normal((3, c)) + 100
    m2s = rng.random((3, c)) * 4
    means[1] = m2s[1] = 0
    packed = []
    for n, m, q in zip(counts, means, m2s):
        v = np.zeros(7 + 2 * c)
        v[6], v[7:7 + c], v[7 + c:] = n, m, q
        v[1:6] = [1, 2, 3, 2, c]
        packed.append(distributed._pack_reduce(v, c))
    acc = packed[0].copy()
    for p in packed[1:]:           # left to right, as in rank order
        b = p.copy()
        distributed._merge_packed(acc, b, c)
        acc = b
    n, mean, var = distributed.merge(counts, means, m2s)
    assert acc[11] == n == 8
    np.testing.assert_array_equal(acc[12:12 + c], mean)
    np.testing.assert_array_equal(acc[12 + c:] / n, var)
    np.testing.assert_array_equal(acc[1:11:2], acc[2:11:2])


def test_deepcopy_of_a_synchronized_layer():
    import copy
    comm = distributed._as_communicator(_World1())
    bn = ckbn.BatchNormalization(synchronized=True, communicator=comm)
    with ckbn.eager_mode():
        bn(np.arange(12, dtype=np.float32).reshape(4, 3), training=True)
    twin = copy.deepcopy(bn)
    assert twin._communicator is comm
    assert twin._sync is not bn._sync and twin._sync.seq == 0
    np.testing.assert_array_equal(twin.moving_mean.value, bn.moving_mean.value)
