"""Build the native framework ops once, on first use, into a cache folder.

The TensorFlow op library and the XLA FFI handler are C++ sources shipped in
``keras_plugin/native/``.  They are compiled on the user's machine against
the framework that is installed *there* (TensorFlow's C++ ABI changes with
every release; the XLA FFI headers ship with jaxlib), the first time a
backend needs them, and cached, keyed by a hash of the sources, the flags,
the compiler and the framework version.  So a wheel of ckbn carries no
framework-specific binary, and upgrading TensorFlow or JAX rebuilds instead
of loading a stale library.

The cache is ``$CKBN_CACHE_DIR`` or ``$XDG_CACHE_HOME/ckbn`` (default
``~/.cache/ckbn``), under ``native/``.  ``CKBN_NATIVE=0`` turns the native
ops off (the backends then use their Python path).  Without a C++ compiler,
or without the framework's headers, :func:`build_library` raises
:class:`NativeBuildError`; the backends catch it, warn once, and fall back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import warnings

__all__ = ["NativeBuildError", "build_library", "cache_dir", "native_enabled",
           "source_dir", "warn_fallback"]


class NativeBuildError(RuntimeError):
    """A native op library could not be built here (the reason is the message)."""


def native_enabled():
    """False when ``CKBN_NATIVE`` is set to 0/false/no/off."""
    value = os.environ.get("CKBN_NATIVE", "1").strip().lower()
    return value not in ("0", "false", "no", "off", "")


def source_dir():
    """Folder of the shipped C++ sources."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "native")


def cache_dir():
    """Folder where built libraries are kept."""
    root = os.environ.get("CKBN_CACHE_DIR")
    if not root:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "ckbn")
    return os.path.join(root, "native")


def _compiler():
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") \
        or shutil.which("clang++")
    if not cxx:
        raise NativeBuildError("no C++ compiler found (set CXX, or install g++)")
    return shlex.split(cxx)


def build_library(name, sources, include_dirs=(), extra_compile_args=(),
                  extra_link_args=(), key_extra=""):
    """Path of the shared library ``name`` built from ``sources``.

    Parameters
    ----------
    name : str
        Stem of the library file (``lib<name>-<hash>.so``).
    sources : list of str
        C++ files (absolute paths, or relative to :func:`source_dir`).
    include_dirs, extra_compile_args, extra_link_args : sequence of str
        Passed to the compiler as ``-I``, before and after the sources.
    key_extra : str
        Anything else the library depends on (the framework's version).

    Returns the cached library when one with the same key exists; otherwise
    compiles into a temporary file and renames it into place, so concurrent
    processes never load a half-written library.  Processes that need the
    same library at once (test workers, data-loader processes) take turns on
    a lock file next to it (``lib<name>-<hash>.so.lock``): one compiles, the
    others wait and then load its result instead of compiling again.

    Raises
    ------
    NativeBuildError
        No compiler, a failed compile (the message ends with the compiler's
        output), or ``CKBN_NATIVE=0``.
    """
    if not native_enabled():
        raise NativeBuildError("native ops are disabled (CKBN_NATIVE=0)")
    srcs = [s if os.path.isabs(s) else os.path.join(source_dir(), s) for s in sources]
    cxx = _compiler()
    h = hashlib.sha256()
    for part in (cxx, list(include_dirs), list(extra_compile_args), list(extra_link_args),
                 key_extra, sys.version):
        h.update(repr(part).encode())
    for path in srcs + _headers(include_dirs, srcs):
        with open(path, "rb") as f:
            h.update(f.read())
    out_dir = cache_dir()
    target = os.path.join(out_dir, f"lib{name}-{h.hexdigest()[:16]}.so")
    if os.path.exists(target):
        return target
    os.makedirs(out_dir, exist_ok=True)
    with _exclusive(target + ".lock"):
        if os.path.exists(target):      # built by another process while we waited
            return target
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=out_dir)
        os.close(fd)
        cmd = (cxx + ["-shared", "-fPIC", "-O3"] + list(extra_compile_args)
               + [f"-I{d}" for d in include_dirs] + srcs + ["-o", tmp] + list(extra_link_args))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True)
        except OSError as exc:
            os.unlink(tmp)
            raise NativeBuildError(f"could not run {cxx[0]}: {exc}") from exc
        if proc.returncode != 0:
            os.unlink(tmp)
            raise NativeBuildError(
                f"building {name} failed ({' '.join(cmd)}):\n{proc.stderr.strip()[-4000:]}")
        os.replace(tmp, target)
    return target


@contextlib.contextmanager
def _exclusive(lock_path):
    """Hold an exclusive ``flock`` on ``lock_path`` (created if missing).

    The lock file is left in place: removing it could let a third process
    lock a new file while the second still holds the old one.  Where
    ``fcntl`` does not exist (Windows) nothing is locked; the temporary file
    and the rename still keep a half-written library out of sight, and two
    processes may both compile.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _headers(include_dirs, srcs):
    """The project's own headers the sources may include (for the cache key)."""
    found = []
    for d in {os.path.dirname(s) for s in srcs}:
        found += sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith((".h", ".hpp")))
    from ckbn import get_include

    inc = get_include()
    found += sorted(os.path.join(inc, f) for f in os.listdir(inc) if f.endswith(".h"))
    return found


_WARNED = set()


def warn_fallback(what, reason):
    """Warn once per ``what`` that the native op is not used, and why."""
    if what in _WARNED:
        return
    _WARNED.add(what)
    warnings.warn(f"ckbn: {what} unavailable ({reason}); using the Python path instead",
                  RuntimeWarning, stacklevel=3)
