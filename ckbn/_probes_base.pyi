# Type stub of ckbn._probes_base: memory-bandwidth probes for benchmarks/
# (pyx/ckbn/_probes.pxi built for the 'base' instruction set).
import numpy as np
from numpy.typing import NDArray

def probe_read(x: NDArray[np.float32], n_threads: int) -> float: ...
def probe_copy(src: NDArray[np.float32], dst: NDArray[np.float32], n_threads: int,
               use_memcpy: bool = True) -> None: ...
def probe_affine(x: NDArray[np.float32], a: NDArray[np.float32], b: NDArray[np.float32],
                 y: NDArray[np.float32], n_threads: int) -> None: ...
