"""microprop device package: fixed-point inference and training for MicroPython boards.

Runs on: board and host (MicroPython >= 1.22; CPython for the portable paths).

`const` for the device modules (`from . import const`): micropython.const on a board, the
identity on CPython. MicroPython's parser folds `_NAME = const(...)` by that name wherever
`const` comes from, so importing it from here folds as `from micropython import const` does;
here it costs no module of its own on the board's heap.
"""

try:
    from micropython import const as const
except ImportError:  # CPython

    def const(x):
        return x
