"""Scalar integer rounding of the numeric contract (../DESIGN.md).

Runs on: board and host. The host's NumPy twin is `host/fixedpoint.py`; tests prove them
identical. Every value stays inside the 31-bit small-int range when the inputs do.
"""


def rounding_rshift(acc, s):
    """int -> int, times 2**-s, TFLite Micro rounding (MultiplyByQuantizedMultiplier, 2**-s).

    s = 0 returns acc. For s in [1, 24]: h = floor((acc + 1) / 2), written
    (acc >> 1) + (acc & 1) so that acc + 1 never leaves 31 bits; then h / 2**(s-1) rounded to
    nearest, ties away from zero. `s` is not checked here: the model file reader did.
    """
    if s == 0:
        return acc
    h = (acc >> 1) + (acc & 1)
    e = s - 1
    mask = (1 << e) - 1
    threshold = mask >> 1
    if h < 0:
        threshold += 1
    if (h & mask) > threshold:
        return (h >> e) + 1
    return h >> e
