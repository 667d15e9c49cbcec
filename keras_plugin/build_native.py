"""Build the native framework ops now, instead of on first use.

    python -m keras_plugin.build_native [--frameworks tensorflow torch jax]

The TensorFlow op library, the PyTorch operators and the XLA FFI handler are
compiled against the installed framework the first time a backend needs
them (``keras_plugin._native_build``: about 20 s to a minute each, cached in
``$CKBN_CACHE_DIR`` or ``~/.cache/ckbn``).  This command does it ahead of
time, for instance while a container image is built, so that the first
training step does not pay for it.  For each framework asked for (default:
every one that is installed) it prints the library's path, or why it could
not be built, and it exits with status 1 when a requested framework that is
installed could not be built (0 otherwise).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import warnings

FRAMEWORKS = ("tensorflow", "torch", "jax")


def build(framework):
    """``(path, None)`` of ``framework``'s built native library, or ``(None, reason)``."""
    if importlib.util.find_spec(framework) is None:
        return None, "not installed"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            path = _build_and_load(framework)
    except Exception as exc:  # noqa: BLE001 - any failure is reported, not raised
        return None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
    if path is None:
        reasons = [str(w.message) for w in caught]
        return None, reasons[0] if reasons else "unavailable"
    return path, None


def _build_and_load(framework):
    """Builds (or finds in the cache) and loads the library; its path, or None where
    the loader declined (it then warned why)."""
    if framework == "tensorflow":
        from keras_plugin import _tf_native

        return _tf_native._build() if _tf_native.load() is not None else None
    if framework == "torch":
        from keras_plugin import _torch_native

        return _torch_native._build() if _torch_native.load() is not None else None
    from keras_plugin import _jax_ffi

    return _jax_ffi.library().path if _jax_ffi.available() else None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frameworks", nargs="+", choices=FRAMEWORKS, default=list(FRAMEWORKS),
                        help="which libraries to build (default: those of every installed "
                             "framework)")
    args = parser.parse_args(argv)
    failed = False
    for framework in args.frameworks:
        path, reason = build(framework)
        if path is not None:
            print(f"{framework}: {path}")
        else:
            print(f"{framework}: not built ({reason})")
            failed = failed or reason != "not installed"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
