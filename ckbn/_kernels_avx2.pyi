# Type stub of ckbn._kernels_avx2: pyx/ckbn/_kernels.pxi compiled for the
# 'avx2' instruction set, the same source and the same entry points as
# ckbn._kernels_base, whose stub is the one stub of all three.
from ckbn._kernels_base import *
from ckbn._kernels_base import __all__ as __all__
