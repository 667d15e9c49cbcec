"""Thread-count configuration.

The process-wide default comes from ``CKBN_NUM_THREADS``, then
``OMP_NUM_THREADS``, then the number of CPUs this process may run on.
:func:`set_num_threads` changes it; :func:`num_threads` overrides it for a
block of code in the calling thread (and in asyncio tasks started inside it),
through a context variable.  The kernels always receive an explicit positive
thread count: ckbn never changes OpenMP's global state.

Concurrent calls: the kernels release the GIL, so several Python threads can
run them at once.  Each call asks for its thread count; while other calls are
running, it gets only the threads they leave free (at least one).  A lone
call always gets what it asked for.  So the OpenMP threads of concurrent calls
add up to at most the largest request plus one per extra Python thread,
instead of growing with ``python threads x num_threads``.

threadpoolctl: ``threadpoolctl.threadpool_info()`` lists the OpenMP runtime
the kernels are linked with, and ``threadpoolctl.threadpool_limits(n)`` (or
``threadpool_limits(n, user_api="openmp")``) limits them, as it limits
scikit-learn's: while the runtime's limit (``omp_get_max_threads()`` in the
calling thread) is below the one it started with (``OMP_NUM_THREADS``, else
the CPU count), the thread count above is capped at it.  A call that passes ``n_threads=`` explicitly is
not capped.

fork: GNU OpenMP (libgomp) cannot start threads in a child created by
``fork()`` once the parent has run a parallel region: the child would hang.
So in such a child ckbn runs every kernel on one thread, and says so once
with a ``RuntimeWarning``.  Use the ``"spawn"`` or ``"forkserver"``
multiprocessing start methods for parallel kernels in worker processes.
"""

from __future__ import annotations
from typing import Iterator

import contextlib
import contextvars
import operator
import os
import threading
import warnings

__all__ = ["set_num_threads", "get_num_threads", "num_threads"]

_override = contextvars.ContextVar("ckbn_num_threads", default=None)
_default = None


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _check_threads(n, source):
    """Validate a thread count given by the user; return it as an int."""
    if isinstance(n, bool):
        raise TypeError(f"{source} must be a positive int, got {n!r}")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"{source} must be a positive int, got {n!r}") from None
    if n < 1:
        raise ValueError(f"{source} must be a positive int, got {n!r}")
    return n


def _env_default():
    for var in ("CKBN_NUM_THREADS", "OMP_NUM_THREADS"):
        raw = os.environ.get(var, "").strip()
        if not raw:
            continue
        # OMP_NUM_THREADS may be a list ("4,2") for nested levels: take the first.
        first = raw.split(",")[0].strip()
        try:
            return _check_threads(int(first), var)
        except (TypeError, ValueError):
            raise ValueError(f"{var}={raw!r} is not a positive integer") from None
    return _cpu_count()


_has_openmp = None
_threads_started = False   # a kernel may have started an OpenMP team
_fork_capped = False       # we are a fork()ed child of such a process
_fork_warned = False


def _after_fork_in_child():
    global _fork_capped
    if _threads_started:
        _fork_capped = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _capped_after_fork():
    global _fork_warned
    if not _fork_warned:
        _fork_warned = True
        warnings.warn(
            "ckbn runs single-threaded in this process: it was fork()ed from a "
            "process that had started OpenMP threads, which libgomp cannot "
            "restart in a child. Use the 'spawn' or 'forkserver' start method "
            "for parallel kernels in worker processes.",
            RuntimeWarning,
            stacklevel=4,
        )
    return 1


_omp_max = None        # omp_get_max_threads of the kernels' OpenMP runtime
_omp_baseline = None   # the limit the runtime started with


def _omp_max_threads_fn():
    """``omp_get_max_threads`` of the OpenMP runtime the kernel module in use
    is linked with (found through the module's own dependencies, so it is
    the runtime its parallel regions use), or None."""
    import ctypes

    from ckbn._dispatch import kernels

    path = getattr(kernels(), "__file__", None)
    if not path or path.endswith(".py"):
        return None
    try:
        fn = ctypes.CDLL(path).omp_get_max_threads
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = []
    return fn


def _omp_start_limit():
    """The limit an OpenMP runtime starts with: the first entry of
    ``OMP_NUM_THREADS``, else the CPUs this process may use (what libgomp
    and LLVM's libomp do)."""
    raw = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    try:
        n = int(raw)
    except ValueError:
        n = 0
    return n if n > 0 else _cpu_count()


def _threadpool_cap(n):
    """``n``, capped at the OpenMP runtime's limit when something (such as
    ``threadpoolctl.threadpool_limits``) lowered it below its first value."""
    global _omp_max, _omp_baseline
    if _omp_max is None:
        _omp_max = _omp_max_threads_fn() or False
        _omp_baseline = _omp_start_limit()
    if not _omp_max:
        return n
    limit = _omp_max()
    if limit < _omp_baseline:
        return max(1, min(n, limit))
    return n


def get_num_threads() -> int:
    """Number of OpenMP threads the kernels use in the calling context.

    Returns 1 when ckbn was built without OpenMP.  Under
    ``threadpoolctl.threadpool_limits(k)`` it is at most ``k``.
    """
    global _default, _has_openmp
    if _has_openmp is None:
        from ckbn._openmp import openmp_enabled

        _has_openmp = openmp_enabled()
    if not _has_openmp:
        return 1
    if _fork_capped:
        return _capped_after_fork()
    n = _override.get()
    if n is None:
        if _default is None:
            _default = _env_default()
        n = _default
    n = _threadpool_cap(n)
    if n > 1:
        global _threads_started
        _threads_started = True
    return n


def set_num_threads(n: int) -> None:
    """Set the process-wide default number of threads.

    Parameters
    ----------
    n : int
        A positive thread count.  It is not capped at the number of cores.
    """
    global _default
    _default = _check_threads(n, "n")


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """Context manager: use ``n`` threads inside the ``with`` block.

    Examples
    --------
    >>> import ckbn
    >>> with ckbn.num_threads(1):
    ...     pass
    """
    token = _override.set(_check_threads(n, "n"))
    try:
        yield
    finally:
        _override.reset(token)


# Inputs with fewer elements run on one thread inside the kernels
# (PARALLEL_MIN in pyx/ckbn/_kernels.pxi, exported as PARALLEL_MIN_ELEMENTS):
# such calls skip the thread accounting.
PARALLEL_MIN = 65536


class _Share:
    """Threads handed out to the kernel calls now running."""

    __slots__ = ("active", "busy", "cap")

    def __init__(self):
        self.active = 0   # calls running
        self.busy = 0     # threads they were given
        self.cap = 1      # largest request among them


_share = _Share()
_share_lock = threading.Lock()


class kernel_threads:
    """Context for one kernel call: ``with kernel_threads(n) as t:`` gives the
    thread count the call may use.

    A call alone gets the requested count; a call that starts while others
    run gets what is left of the largest request so far (at least one).
    (A small class rather than a generator: it sits on every call's path.)
    """

    __slots__ = ("n", "t")

    def __init__(self, n_threads=None, size=None):
        if size is not None and size < PARALLEL_MIN and n_threads is None:
            self.n = 0        # the kernels run this call on one thread anyway
        else:
            self.n = _resolve_threads(n_threads)

    def __enter__(self):
        n = self.n
        if n == 0:
            self.t = 0
            return 1
        s = _share
        with _share_lock:
            if s.active == 0:
                t = s.cap = n
            else:
                t = max(1, min(n, s.cap - s.busy))
                if n > s.cap:
                    s.cap = n
            s.active += 1
            s.busy += t
        self.t = t
        return t

    def __exit__(self, *exc):
        if self.t == 0:
            return False
        s = _share
        with _share_lock:
            s.active -= 1
            s.busy -= self.t
        return False


def _resolve_threads(n_threads):
    """Explicit thread count for a kernel call (``None`` -> current setting)."""
    if n_threads is None:
        return get_num_threads()
    n = _check_threads(n_threads, "n_threads")
    if _fork_capped:
        return _capped_after_fork()
    if n > 1:
        global _threads_started
        _threads_started = True
    return n
