"""The rounding of each weight storage, and how far it may move a stored weight from the one that was saved.

`saving.py` rounds this way when it writes a model smaller; `make_ensemble` uses the same bounds to tell an
encoder read back from a rounded file from a different encoder.
"""

from __future__ import annotations

import math

import numpy as np

# "packed": a matrix of at least PACKED_MIN_VALUES values is stored to a step of at most 1/PACKED_STEPS_PER_STD
# of its own standard deviation by HDF5's scale-offset filter (the rest as float16): a rounding noise of under
# 1 % of the matrix's typical weight, where float16 keeps 0.05 %.
PACKED_MIN_VALUES = 65_536
PACKED_STEPS_PER_STD = 32
# float16 keeps 11 significant bits: a stored weight is within half a unit in the last place, 2^-11 of itself
FLOAT16_RELATIVE_ROUNDING = 2.0 ** -10
FLOAT16_ABSOLUTE_ROUNDING = 1e-7  # below float16's smallest normal number its steps are absolute (2^-24)


def packed_decimal_digits(values: np.ndarray) -> int:
    """Decimal digits that round `values` to a step of at most std / PACKED_STEPS_PER_STD."""
    spread = float(np.std(values))
    return max(0, math.ceil(-math.log10(spread / PACKED_STEPS_PER_STD))) if spread > 0 else 0


def same_up_to_storage_rounding(first: list, second: list) -> bool:
    """Equal weights, or weights that differ only by the rounding of a stored file (float16 or packed).

    Any trained or differently initialised network differs by far more than a storage step.
    """
    if len(first) != len(second):
        return False
    for a, b in zip(first, second):
        if np.shape(a) != np.shape(b):
            return False
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        packed_step = max(a.std(), b.std()) / PACKED_STEPS_PER_STD  # packed rounding is off by up to one step
        tolerance = np.maximum(packed_step, np.abs(a) * FLOAT16_RELATIVE_ROUNDING) + FLOAT16_ABSOLUTE_ROUNDING
        if not np.all(np.abs(a - b) <= tolerance):
            return False
    return True
