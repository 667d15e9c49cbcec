"""Whether the kernels in use were built with OpenMP."""

from ckbn._dispatch import kernels

__all__ = ["openmp_enabled"]


def openmp_enabled() -> bool:
    """True when the compiled kernels in use were built with OpenMP.

    Examples
    --------
    >>> import ckbn
    >>> isinstance(ckbn.openmp_enabled(), bool)
    True
    """
    k = kernels()
    fn = getattr(k, "openmp_enabled", None)
    return bool(fn()) if fn is not None else False
