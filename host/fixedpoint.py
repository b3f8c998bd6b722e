"""The integer rounding and clamping of the numeric contract, vectorised with NumPy.

Runs on: host. The board's scalar twin is `device/fixedpoint.py`; tests prove them identical.
"""

import numpy as np

SMALL_INT_MIN = -(2**30)
SMALL_INT_MAX = 2**30 - 1
SHIFT_MAX = 24

# the reductions without ndarray.min/max's Python wrappers (check_small runs per value set)
_min, _max = np.minimum.reduce, np.maximum.reduce


class BoundError(ValueError):
    """A value left the 31-bit small-int range of 32-bit MicroPython ports."""


def check_small(x, what):
    """Raise BoundError if any value of `x` lies outside [-2**30, 2**30)."""
    x = np.asarray(x)
    if x.size:
        lo, hi = _min(x, axis=None), _max(x, axis=None)
        if lo < SMALL_INT_MIN or hi > SMALL_INT_MAX:
            bad = lo if lo < SMALL_INT_MIN else hi
            raise BoundError("bound: %s reaches %d, outside [-2**30, 2**30)" % (what, int(bad)))
    return x


def rounding_rshift(acc, s):
    """int -> int, times 2**-s, TFLite Micro rounding (MultiplyByQuantizedMultiplier, 2**-s).

    s = 0 returns acc. For s >= 1 it rounds twice, exactly as TFLite Micro's
    SaturatingRoundingDoublingHighMul by 2**30 followed by RoundingDivideByPOT(s - 1):
    h = floor((acc + 1) / 2), written (acc >> 1) + (acc & 1) so that acc + 1 never leaves
    31 bits; then h / 2**(s-1) rounded to nearest, ties away from zero.
    `s` may be a scalar or an array broadcasting against `acc`.
    """
    acc = np.asarray(acc, dtype=np.int64)
    if isinstance(s, (int, np.integer)):  # one shift: the same arithmetic without the masks
        if not 0 <= s <= SHIFT_MAX:
            raise ValueError("fixed point: shift must be in [0, %d], found %r" % (SHIFT_MAX, s))
        if s == 0:
            return acc.copy()
        h = (acc >> 1) + (acc & 1)
        e = int(s) - 1
        mask = (1 << e) - 1
        return (h >> e) + ((h & mask) > (mask >> 1) + (h < 0))
    s = np.asarray(s, dtype=np.int64)
    if np.any((s < 0) | (s > SHIFT_MAX)):
        raise ValueError("fixed point: shift must be in [0, %d], found %r" % (SHIFT_MAX, s))
    h = (acc >> 1) + (acc & 1)
    e = np.maximum(s - 1, 0)
    mask = (np.int64(1) << e) - 1
    rem = h & mask
    threshold = (mask >> 1) + (h < 0)
    out = (h >> e) + (rem > threshold)
    return np.where(s == 0, acc, out)


def clamp_int8(x):
    """int -> int8 range [-128, 127], saturated (returned as int64 for further arithmetic)."""
    return np.minimum(np.maximum(np.asarray(x, dtype=np.int64), -128), 127)
