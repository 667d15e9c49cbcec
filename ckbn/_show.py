"""``ckbn.show_config()``: what this installation was built with and uses."""

import platform
import sys
from typing import TextIO

__all__ = ["show_config"]


def _config_dict():
    import numpy as np

    import ckbn
    from ckbn._config import get_num_threads
    from ckbn._dispatch import available_kernels, kernel_name, kernels
    from ckbn._openmp import openmp_enabled

    try:
        from ckbn import _build_info as bi
        build = {
            "compiler": bi.COMPILER,
            "flags": " ".join(bi.BASE_FLAGS),
            "openmp_flags": " ".join(bi.OPENMP_FLAGS),
            "variants_built": ", ".join(v.rsplit("_", 1)[-1] for v in bi.VARIANTS),
        }
    except ImportError:
        build = {"compiler": "unknown (no build record)"}
    info = {
        "ckbn": ckbn.__version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "platform": platform.platform(),
        "openmp": openmp_enabled(),
        "threads": get_num_threads(),
        "kernels": kernel_name(),
        "kernels_available": ", ".join(available_kernels()),
        "float16": ("F16C conversion in the kernels"
                    if getattr(kernels(), "f16c_enabled", lambda: False)()
                    else "converted by NumPy"),
    }
    info.update(build)
    return info


def show_config(file: TextIO | None = None) -> None:
    """Print the version, OpenMP status, thread count, kernel variant and build flags.

    Parameters
    ----------
    file : file-like, optional
        Where to print (default: ``sys.stdout``).
    """
    info = _config_dict()
    width = max(len(k) for k in info)
    for key, value in info.items():
        print(f"{key.rjust(width)}: {value}", file=file or sys.stdout)
