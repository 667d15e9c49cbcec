"""Type aliases of the public annotations (for type checkers and readers)."""

from __future__ import annotations

from typing import Any, Union

import numpy as np
import numpy.typing as npt

__all__ = ["Array", "ArrayLike", "Axis", "FloatArray"]

#: A NumPy array of any dtype (what the functions return).
Array = npt.NDArray[Any]
#: A floating array (float16/32/64), the data the kernels take.
FloatArray = npt.NDArray[np.floating[Any]]
#: Anything ``np.asarray`` turns into an array.
ArrayLike = npt.ArrayLike
#: One axis or several.
Axis = Union[int, "list[int]", "tuple[int, ...]"]
