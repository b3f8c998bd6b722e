"""A tiny random number generator for stochastic rounding: xorshift on a 16-bit state.

Runs on: board and host (MicroPython and CPython). The host reference (`host/trainref.py`)
reproduces the same bits.

    x ^= (x << 7) & 0xFFFF;  x ^= x >> 9;  x ^= (x << 8) & 0xFFFF

The state is an int in [1, 65535] (0 is a fixed point and never used); the triple (7, 9, 8)
gives the full period 65535. Every intermediate stays below 2**24, far inside the 31-bit
small-int range of 32-bit ports, and nothing is allocated.

Test vectors: from state 1, the next ten states are
    33153, 24609, 59801, 11787, 46494, 55715, 12071, 17913, 39973, 27874
and from state 0xACE1 (the default seed) the next five are
    54031, 61861, 5940, 65394, 5969
"""

DEFAULT_SEED = 0xACE1


def seed_state(seed):
    """int seed -> a valid state in [1, 65535]: its low 16 bits, or DEFAULT_SEED for 0."""
    x = seed & 0xFFFF
    return x if x else DEFAULT_SEED


def xorshift16(x):
    """16-bit state in [1, 65535] -> the next state, in [1, 65535]."""
    x ^= (x << 7) & 0xFFFF
    x ^= x >> 9
    x ^= (x << 8) & 0xFFFF
    return x
