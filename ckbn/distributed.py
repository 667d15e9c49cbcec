"""Synchronized batch statistics across processes, on existing communicators.

``ckbn.BatchNormalization(synchronized=True)`` normalizes every process's local
batch with the statistics of the *global* batch (all local batches together).
It needs a communicator with two collectives over small float64 vectors:

* ``allgather(vec)`` -- every process receives every process's vector, as an
  array of shape ``(size, len(vec))`` in rank order;
* ``allreduce(vec)`` -- every process receives the element-wise sum.

This module wraps the engines that provide them; it has no transport of its
own:

* :func:`from_mpi4py` -- an ``mpi4py`` communicator (``MPI.COMM_WORLD`` or any
  sub-communicator);
* :func:`from_torch` -- a ``torch.distributed`` process group (gloo on CPU);
* any object with ``rank``, ``size``, ``allgather`` and ``allreduce`` as above.

:func:`set_communicator` makes one the process-wide default for synchronized
layers that were given none.

Protocol of one synchronized training step (all in float64):

* forward: each process computes its local ``(count, mean, M2)`` per channel
  with the kernels; one all-gather of ``H + 2 C`` values (``H`` header values:
  status, step kind, layer, call number, dtype, channel count, local count);
  every process merges the rows in rank order with Chan's formula, the merge
  the kernels use between chunks, so the global statistics -- and the moving
  averages fed from them -- are bit-identical on every process.  The first
  training call of a layer exchanges the header alone first, to agree on the
  channel count (the vector length) before any data of that length moves;
* backward: one all-reduce of ``2 C`` sums (``sum(dy)``, ``sum(dy * (x - mean))``)
  plus a header; dx uses the global sums and the global count, dgamma and
  dbeta stay the local sums (the data-parallel gradient all-reduce adds them).

A process whose input is rejected still joins the collective, with an error
status instead of data; then every process raises the same exception (type
and message, naming the rank that failed), and no state changes anywhere.
A process that dies makes the others fail as its engine decides: ``mpiexec``
ends the whole job, ``torch.distributed`` raises in the surviving processes
(after at most the process group's ``timeout``); ckbn re-raises that as a
``RuntimeError`` that says which collective failed.
"""

from __future__ import annotations
from typing import Any

from numpy.typing import ArrayLike

import zlib

import numpy as np

from ckbn._coefs import backward as grad_coefficients

__all__ = [
    "Communicator",
    "from_mpi4py",
    "from_torch",
    "set_communicator",
    "get_communicator",
    "SyncPoint",
    "sync_moments",
    "sync_sums",
    "guard",
    "grad_coefficients",
    "local_moments",
    "merge",
]

_f64 = np.float64

# Header fields of every exchanged vector.
_STATUS, _KIND, _LAYER, _SEQ, _DTYPE, _NCH, _COUNT = range(7)
_H = 7
_FORWARD, _BACKWARD = 1.0, 2.0
_ERRORS = {1: TypeError, 2: ValueError, 3: RuntimeError}
_CODES = {TypeError: 1, ValueError: 2}
_DTYPES = {np.dtype(np.float16): 1.0, np.dtype(np.float32): 2.0, np.dtype(np.float64): 3.0}
_DTYPE_NAMES = {v: k.name for k, v in _DTYPES.items()}
_TEXT = 384   # bytes of one error message exchanged (error path only)


# -- communicators -------------------------------------------------------------
class Communicator:
    """Base of the adapters: ``rank``, ``size``, ``allgather``, ``allreduce``.

    Subclasses implement :meth:`_allgather` and :meth:`_allreduce` on a
    contiguous float64 vector; the public methods check the vector and turn
    an engine failure into a ``RuntimeError`` naming the collective.
    """

    engine = "custom"

    def __init__(self, rank: int, size: int) -> None:
        self.rank = int(rank)
        self.size = int(size)

    def allgather(self, vec: ArrayLike) -> np.ndarray[Any, np.dtype[np.float64]]:
        """Every process's ``vec`` as an array of shape ``(size, len(vec))``."""
        vec = np.ascontiguousarray(vec, dtype=_f64).reshape(-1)
        out = self._collective("all-gather", self._allgather, vec)
        return np.asarray(out, dtype=_f64).reshape(self.size, vec.size)

    def allreduce(self, vec: ArrayLike) -> np.ndarray[Any, np.dtype[np.float64]]:
        """The element-wise sum of every process's ``vec``."""
        vec = np.ascontiguousarray(vec, dtype=_f64).reshape(-1)
        out = self._collective("sum all-reduce", self._allreduce, vec)
        return np.asarray(out, dtype=_f64).reshape(vec.size)

    def _collective(self, what, fn, vec):
        """``fn(vec)``, with an engine's failure re-raised as a RuntimeError
        that names the collective, the engine and this rank."""
        try:
            return fn(vec)
        except Exception as e:
            raise RuntimeError(
                f"ckbn.distributed: {what} of {vec.size} float64 values over {self.engine} "
                f"failed on rank {self.rank} of {self.size} (a peer process may have exited): "
                f"{type(e).__name__}: {e}") from e

    def _allgather(self, vec):  # pragma: no cover - abstract
        raise NotImplementedError

    def _allreduce(self, vec):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self):
        return f"<ckbn.distributed communicator: {self.engine}, rank {self.rank} of {self.size}>"

    def __deepcopy__(self, memo):
        return self    # a handle on the engine's communicator: copies share it


class _MPI(Communicator):
    engine = "MPI (mpi4py)"

    def __init__(self, comm, reduction="gather"):
        super().__init__(comm.Get_rank(), comm.Get_size())
        self.comm = comm
        from mpi4py import MPI
        self._MPI = MPI
        self._sum = MPI.SUM
        self.reduction = reduction
        self._merge_ops = {}

    def merge_allreduce(self, vec, n_ch):
        """All-reduce of a packed forward vector (:func:`_pack_reduce`) with the
        Chan merge as a non-commutative operation (applied in rank order), then a
        broadcast of rank 0's result so that every process has the same bits."""
        MPI = self._MPI
        hit = self._merge_ops.get(vec.size)
        if hit is None:
            dt = MPI.DOUBLE.Create_contiguous(vec.size).Commit()

            def fn(inmem, outmem, datatype, n_ch=n_ch, size=vec.size):
                a = np.frombuffer(inmem, dtype=_f64)
                b = np.frombuffer(outmem, dtype=_f64)
                for k in range(a.size // size):      # whole packed vectors only
                    _merge_packed(a[k * size:(k + 1) * size], b[k * size:(k + 1) * size],
                                  n_ch)

            hit = self._merge_ops[vec.size] = (dt, MPI.Op.Create(fn, commute=False))
        dt, op = hit
        out = np.empty_like(vec)
        try:
            self.comm.Allreduce([vec, 1, dt], [out, 1, dt], op=op)
            self.comm.Bcast(out, root=0)
        except Exception as e:
            raise RuntimeError(
                f"ckbn.distributed: merge all-reduce of {vec.size} float64 values over "
                f"{self.engine} failed on rank {self.rank} of {self.size} (a peer process may "
                f"have exited): {type(e).__name__}: {e}") from e
        return out

    def _allgather(self, vec):
        out = np.empty((self.size, vec.size), dtype=_f64)
        self.comm.Allgather(vec, out)
        return out

    def _allreduce(self, vec):
        out = np.empty_like(vec)
        self.comm.Allreduce(vec, out, op=self._sum)
        return out


class _Torch(Communicator):
    engine = "torch.distributed"

    def __init__(self, group):
        import torch
        import torch.distributed as dist
        self._torch, self._dist, self.group = torch, dist, group
        super().__init__(dist.get_rank(group), dist.get_world_size(group))
        self.engine = f"torch.distributed ({dist.get_backend(group)})"

    def _allgather(self, vec):
        t = self._torch.from_numpy(vec.copy())
        out = [self._torch.empty_like(t) for _ in range(self.size)]
        self._dist.all_gather(out, t, group=self.group)
        return np.stack([o.numpy() for o in out])

    def _allreduce(self, vec):
        t = self._torch.from_numpy(vec.copy())
        self._dist.all_reduce(t, op=self._dist.ReduceOp.SUM, group=self.group)
        return t.numpy()


class _Duck(Communicator):
    """A user object that has ``rank``, ``size``, ``allgather``, ``allreduce``."""

    def __init__(self, obj):
        super().__init__(obj.rank, obj.size)
        self.obj = obj
        self.engine = type(obj).__name__

    def _allgather(self, vec):
        return self.obj.allgather(vec)

    def _allreduce(self, vec):
        return self.obj.allreduce(vec)


def from_mpi4py(comm: Any = None, reduction: str = "gather") -> Communicator:
    """A communicator over an ``mpi4py`` communicator (default ``MPI.COMM_WORLD``).

    ``reduction`` chooses the forward exchange of synchronized layers:

    * ``"gather"`` (default) -- one all-gather of every process's
      (count, mean, M2); every process merges the P rows in rank order;
    * ``"merge"`` -- one all-reduce whose operation is that merge (an MPI
      user-defined, non-commutative operation, so applied in rank order),
      then a broadcast of rank 0's result: the vector exchanged does not grow
      with the number of processes and each process merges O(log P) rows
      (for large worlds: see ``benchmarks/SYNC.md``).  Same exactness; the
      merge's bracketing differs from ``"gather"``, so the last bits may too.
    """
    if reduction not in ("gather", "merge"):
        raise ValueError(f"from_mpi4py: reduction must be 'gather' or 'merge', got "
                         f"{reduction!r}")
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise ImportError(
            "ckbn.distributed.from_mpi4py needs mpi4py and an MPI library "
            "(`pip install mpi4py mpich`)") from e
    if comm is None:
        comm = MPI.COMM_WORLD
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"from_mpi4py takes an mpi4py.MPI.Comm, got {comm!r}")
    if comm == MPI.COMM_NULL:
        raise ValueError("from_mpi4py: the communicator is MPI.COMM_NULL")
    return _MPI(comm, reduction)


def from_torch(group: Any = None) -> Communicator:
    """A communicator over a ``torch.distributed`` process group (default: the world).

    ``torch.distributed.init_process_group`` must have run; with CPU tensors
    the backend is gloo.  Its ``timeout`` bounds how long a collective waits
    for a peer that died.
    """
    try:
        import torch.distributed as dist
    except ImportError as e:
        raise ImportError("ckbn.distributed.from_torch needs PyTorch") from e
    if not dist.is_available() or not dist.is_initialized():
        raise ValueError(
            "from_torch: torch.distributed is not initialized; call "
            "torch.distributed.init_process_group(...) first")
    return _Torch(group)


def _as_communicator(obj, what="communicator"):
    if obj is None or isinstance(obj, Communicator):
        return obj
    missing = [a for a in ("rank", "size", "allgather", "allreduce") if not hasattr(obj, a)]
    if missing:
        raise TypeError(
            f"{what} must come from ckbn.distributed.from_mpi4py/from_torch or have rank, size, "
            f"allgather and allreduce; {obj!r} lacks {', '.join(missing)}")
    return _Duck(obj)


_default = None


def set_communicator(comm: Any) -> None:
    """Set the process-wide communicator of synchronized layers (None clears it)."""
    global _default
    _default = _as_communicator(comm)


def get_communicator() -> Communicator | None:
    """The process-wide communicator set by :func:`set_communicator`, or None."""
    return _default


# -- exchange state, error guard, headers ----------------------------------------------
class _SyncState:
    """The exchange state of one synchronized layer: the agreed channel count
    and the step number (the same on every process)."""

    __slots__ = ("n_channels", "seq", "joined")

    def __init__(self):
        self.n_channels = None   # agreed by every process at the first training call
        self.seq = 0             # synchronized training steps exchanged so far
        self.joined = True       # whether the current step reached its collective

    def __deepcopy__(self, memo):
        return _SyncState()      # a copied layer starts its own exchanges


def _layer_id(layer):
    return float(zlib.crc32(layer.name.encode()) & 0xFFFFF)


def guard(point: SyncPoint, comm: Any, phase: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Run ``fn(*args, **kwargs)`` -- a step that calls :func:`sync_moments`
    (``phase="forward"``) or :func:`sync_sums` (``phase="backward"``) on
    ``point`` -- so that an exception raised before that collective still joins
    it: every process then raises the same error (type and message, naming the
    rank), and none waits forever for the one that failed."""
    if phase not in ("forward", "backward"):
        raise ValueError(f"guard: phase must be 'forward' or 'backward', got {phase!r}")
    st = point._sync
    st.joined = False
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        if st.joined:
            raise
        st.joined = True
        if phase == "forward":
            _exchange_forward(point, comm, None, None, None, None, exc)
        else:
            _exchange_backward(point, comm, None, None, None, exc)
        raise   # not reached: the exchange raises


def _header(layer, kind, status, dtype, n_channels, count, seq):
    h = np.zeros(_H)
    h[_STATUS], h[_KIND], h[_LAYER], h[_SEQ] = status, kind, _layer_id(layer), seq
    h[_DTYPE] = _DTYPES.get(np.dtype(dtype), 0.0) if dtype is not None else 0.0
    h[_NCH], h[_COUNT] = n_channels, count
    return h


def _status(exc):
    if exc is None:
        return 0.0
    return float(_CODES.get(type(exc), 3))


def _describe(layer, kind, exc):
    what = "forward" if kind == _FORWARD else "backward"
    text = f"{what} of layer {layer.name!r} (step {layer._sync.seq})"
    if exc is not None:
        text += f": {type(exc).__name__}: {exc}"
    return text


def _shared_failure(comm, layer, kind, exc, problem):
    """Exchange every process's description and raise the same error everywhere.

    ``problem`` is None when some process reported a local error (raise that
    one, from the lowest such rank), else a message on which every process
    agrees already.
    """
    text = _describe(layer, kind, exc).encode("utf-8", "replace")[:_TEXT]
    buf = np.zeros(_TEXT + 2)
    buf[0] = _status(exc)
    buf[1] = len(text)
    buf[2:2 + len(text)] = np.frombuffer(text, dtype=np.uint8)
    rows = comm.allgather(buf)
    texts = [bytes(r[2:2 + int(r[1])].astype(np.uint8)).decode("utf-8", "replace")
             for r in rows]
    if problem is None:
        bad = [i for i, r in enumerate(rows) if r[0] != 0]
        r = bad[0]
        cls = _ERRORS.get(int(rows[r][0]), RuntimeError)
        msg = (f"synchronized batch normalization failed on rank {r} of {comm.size} "
               f"(every process raises this): {texts[r]}")
    else:
        cls = ValueError
        calls = "; ".join(f"rank {i}: {t}" for i, t in enumerate(texts))
        msg = f"synchronized batch normalization: {problem} ({calls})"
    layer._sync.seq += 1
    raise cls(msg) from exc


def _check_headers(rows, kind):
    """A message if the processes' headers disagree, else None."""
    def col(i):
        return rows[:, i]

    if np.any(col(_KIND) != col(_KIND)[0]) or np.any(col(_LAYER) != col(_LAYER)[0]) or \
            np.any(col(_SEQ) != col(_SEQ)[0]):
        return "the processes are not at the same step (calls out of order)"
    if np.any(col(_DTYPE) != col(_DTYPE)[0]):
        names = [_DTYPE_NAMES.get(v, "?") for v in col(_DTYPE)]
        return f"the layer's dtype differs between processes: {names} in rank order"
    if np.any(col(_NCH) != col(_NCH)[0]):
        return (f"the channel count differs between processes: "
                f"{[int(v) for v in col(_NCH)]} in rank order")
    return None


def _exchange_forward(layer, comm, dtype, mean, m2, count, exc):
    """One forward exchange of ``layer`` (a :class:`SyncPoint`); returns
    (global mean, global biased var, global count)."""
    st = layer._sync
    st.joined = True
    seq = st.seq
    status = _status(exc)
    n_ch = st.n_channels
    if n_ch is None:
        # First training call: agree on the channel count (the vector length) first.
        local = -1 if mean is None else mean.size
        rows = comm.allgather(_header(layer, _FORWARD, status, dtype, local, 0 if count is None
                                      else count, seq))
        if np.any(rows[:, _STATUS] != 0):
            _shared_failure(comm, layer, _FORWARD, exc, None)
        problem = _check_headers(rows, _FORWARD)
        if problem is not None:
            _shared_failure(comm, layer, _FORWARD, exc, problem)
        st.n_channels = n_ch = int(rows[0, _NCH])
    vec = np.zeros(_H + 2 * n_ch)
    if exc is None and mean.size != n_ch:
        exc = ValueError(f"{layer.name}: the input has {mean.size} channels, the synchronized "
                         f"layer agreed on {n_ch}")
        status = _status(exc)
    vec[:_H] = _header(layer, _FORWARD, status, dtype, n_ch if exc is None else -1,
                       0 if exc is not None else count, seq)
    if exc is None and count > 0:
        vec[_H:_H + n_ch] = mean
        vec[_H + n_ch:] = m2                   # M2 = sum((x - mean)^2)
    if getattr(comm, "reduction", "gather") == "merge":
        tot = comm.merge_allreduce(_pack_reduce(vec, n_ch), n_ch)
        if tot[0] != 0:
            _shared_failure(comm, layer, _FORWARD, exc, None)
        lo, hi = tot[1:11:2], tot[2:11:2]
        if np.any(lo != hi):
            names = ["step kind", "layer", "step", "dtype", "channel count"]
            bad = [nm for nm, a, b in zip(names, lo, hi) if a != b]
            _shared_failure(comm, layer, _FORWARD, exc,
                            f"the processes differ in {', '.join(bad)} (calls out of order?)")
        st.seq += 1
        n = tot[11]
        g_mean = tot[12:12 + n_ch]
        g_var = tot[12 + n_ch:] / n if n else tot[12 + n_ch:]
    else:
        rows = comm.allgather(vec)
        if np.any(rows[:, _STATUS] != 0):
            _shared_failure(comm, layer, _FORWARD, exc, None)
        problem = _check_headers(rows, _FORWARD)
        if problem is not None:
            _shared_failure(comm, layer, _FORWARD, exc, problem)
        st.seq += 1
        n, g_mean, g_var = merge(rows[:, _COUNT], rows[:, _H:_H + n_ch], rows[:, _H + n_ch:])
    if n <= 1:
        raise ValueError(
            f"{layer.name}: the global batch has {int(n)} value(s) per channel over "
            f"{comm.size} processes; synchronized batch normalization needs at least 2 "
            f"(every process raises this, no state changed)")
    return g_mean, g_var, n


def _pack_reduce(vec, n_ch):
    """A forward vector laid out for the merge all-reduce: the status, (min, max)
    pairs of the fields every process must share, count, mean, M2."""
    out = np.empty(12 + 2 * n_ch)
    out[0] = vec[_STATUS]
    for k, field in enumerate((_KIND, _LAYER, _SEQ, _DTYPE, _NCH)):
        out[1 + 2 * k] = out[2 + 2 * k] = vec[field]
    out[11] = vec[_COUNT]
    out[12:] = vec[_H:]
    return out


def _merge_packed(a, b, n_ch):
    """``b <- a (merge) b`` for packed vectors, ``a`` from the lower ranks."""
    b[0] = max(a[0], b[0])
    b[1:11:2] = np.minimum(a[1:11:2], b[1:11:2])
    b[2:11:2] = np.maximum(a[2:11:2], b[2:11:2])
    na, nb = a[11], b[11]
    if na == 0:
        return
    if nb == 0:
        b[11:] = a[11:]
        return
    n = na + nb
    ma, mb = a[12:12 + n_ch], b[12:12 + n_ch]
    delta = mb - ma
    mean = ma + delta * (nb / n)
    m2 = a[12 + n_ch:] + b[12 + n_ch:] + delta * delta * (na * nb / n)
    b[11] = n
    b[12:12 + n_ch] = mean
    b[12 + n_ch:] = m2


def merge(counts: ArrayLike, means: np.ndarray[Any, Any], m2s: np.ndarray[Any, Any]) -> tuple[float, np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
    """Merge per-process ``(count, mean, M2)`` rows in rank order (Chan et al.).

    Returns ``(n, mean, var)``: the global count, mean and biased variance.
    The merge is the one the kernels use between chunks; done in the same
    order on the same rows it gives the same bits on every process.
    """
    n = 0.0
    mean = m2 = None
    for nb, mb, m2b in zip(counts, means, m2s):
        nb = float(nb)
        if nb == 0:
            continue
        if n == 0:
            n, mean, m2 = nb, mb.copy(), m2b.copy()
            continue
        tot = n + nb
        delta = mb - mean
        mean = mean + delta * (nb / tot)
        m2 = m2 + m2b + delta * delta * (n * nb / tot)
        n = tot
    if mean is None:
        k = means.shape[1]
        return 0.0, np.zeros(k), np.zeros(k)
    return n, mean, m2 / n


def _exchange_backward(layer, comm, seq, sum_dy, sum_dyxc, exc):
    st = layer._sync
    st.joined = True
    n_ch = st.n_channels or 0
    status = _status(exc)
    if exc is None and sum_dy.size != n_ch:
        exc = ValueError(f"{layer.name}: backward of {sum_dy.size} channels, the synchronized "
                         f"layer agreed on {n_ch}")
        status = _status(exc)
    # Header for a sum all-reduce: failures are counted; the step identity is
    # checked by summing v and v*v (equal on every process iff the variance is 0).
    lid = _layer_id(layer) % 4096
    seq = -1.0 if seq is None else float(seq % 4096)
    vec = np.zeros(5 + 2 * n_ch)
    vec[0] = 1.0 if exc is not None else 0.0
    vec[1], vec[2], vec[3], vec[4] = lid, lid * lid, seq, seq * seq
    if exc is None:
        vec[5:5 + n_ch] = sum_dy
        vec[5 + n_ch:] = sum_dyxc
    tot = comm.allreduce(vec)
    if tot[0] != 0:
        _shared_failure(comm, layer, _BACKWARD, exc, None)
    p = comm.size
    if tot[1] * tot[1] != p * tot[2] or tot[3] * tot[3] != p * tot[4]:
        _shared_failure(comm, layer, _BACKWARD, exc,
                        "the processes run backward of different calls (calls out of order)")
    return tot[5:5 + n_ch], tot[5 + n_ch:]


# -- the two exchange points of a synchronized layer -----------------------------------
class SyncPoint:
    """The exchange state of one synchronized layer.

    ``ckbn.BatchNormalization(synchronized=True)`` and ``keras_plugin``'s
    synchronized layer each own one and meet the other processes at two
    points per training step: :func:`sync_moments` in the forward (the global
    batch's mean, variance and count) and :func:`sync_sums` in the backward
    (the global batch's per-channel sums); :func:`guard` around a step makes a
    local error reach every process.  Every process must create its points in
    the same order with the same ``name`` and use them in the same order.
    """

    def __init__(self, name: str) -> None:
        self.name = str(name)
        self._sync = _SyncState()

    @property
    def step(self) -> int:
        """Synchronized forward steps exchanged so far (the same on every process)."""
        return self._sync.seq


def local_moments(x: ArrayLike, channel_axes: Any, mask: ArrayLike | None = None) -> tuple[float, np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
    """This process's ``(count, mean, M2)`` per channel, on the kernels.

    ``mean`` and ``M2 = sum((x - mean)**2)`` are float64, flat in C order over
    ``channel_axes``; an empty ``x`` gives count 0 and zeros.  ``mask``
    (boolean, ``x.shape[:-1]``, channels on the last axis only) keeps the
    positions where it is True, as Keras's masked batch normalization.
    """
    from ckbn import _ops
    from ckbn._layout import make_layout
    x = np.asarray(x)
    chan = sorted({int(a) % x.ndim for a in channel_axes})
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if chan != [x.ndim - 1] or mask.shape != x.shape[:-1]:
            raise ValueError(
                f"local_moments: a mask of shape {mask.shape} needs the channels on the last "
                f"axis of x of shape {x.shape} and the shape x.shape[:-1]")
        x = x[mask]
        chan = [1]
    n_ch = int(np.prod([x.shape[a] for a in chan]))
    if not x.size:
        return 0, np.zeros(n_ch), np.zeros(n_ch)
    layout = make_layout(x.shape, chan)
    mean, var = _ops.stats(x, layout)
    return layout.count, mean, var * layout.count


def sync_moments(point: Any, comm: Communicator, x: ArrayLike, channel_axes: Any,
                 mask: ArrayLike | None = None) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]], float]:
    """Mean, biased variance (float64, flat in C order over ``channel_axes``) and
    count of the global batch: ``x`` is this process's part (may be empty);
    ``mask`` as in :func:`local_moments`."""
    x = np.asarray(x)
    count, mean, m2 = local_moments(x, channel_axes, mask)
    return _exchange_forward(point, comm, x.dtype, mean, m2, count, None)


def sync_sums(point: Any, comm: Communicator, step: int, sum_dy: ArrayLike,
              sum_dy_xhat: ArrayLike
              ) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
    """The global batch's per-channel sums of backward step ``step`` (the
    point's ``step`` after its forward): every process's ``sum(dy)`` and
    ``sum(dy * xhat)`` added up, in float64.  :func:`grad_coefficients`
    turns them into dx's coefficients:
    ``grad_coefficients(scale, mean, var, eps, n, sum_dy, sum_dy_xhat, rsqrt=None)``
    returns ``(k1, k2, k3)`` of ``dx = dy * k1 + x * k2 + k3`` (``rsqrt``:
    the array library's ``1 / sqrt``, NumPy's by default)."""
    return _exchange_backward(point, comm, step, np.asarray(sum_dy, _f64).reshape(-1),
                              np.asarray(sum_dy_xhat, _f64).reshape(-1), None)
