"""Jitter statistics of the board app's sample clock: how late the samples came.

Runs on: board and host (MicroPython >= 1.22; CPython).

    jitter = Jitter()
    jitter.note(late_us)        # per sample, in realtime (device/app.py, App.wait)
    jitter.max_us, jitter.mean_us

`max_us` and `mean_us` are the largest and the mean lateness over the last complete block of 64
samples, each lateness counted at most 1 s (the sums stay small ints). `note` allocates nothing.
"""

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


_BLOCK = const(64)  # the stats cover the last complete block of this many samples
_CAP = const(1000000)  # lateness counted at most 1 s


class Jitter:
    """Max and mean lateness (us) of the samples, per block (see the module doc)."""

    def __init__(self):
        self.max_us = self.mean_us = 0
        self._n = self._sum = self._max = 0

    def note(self, late):
        """One sample came `late` microseconds after its deadline."""
        if late > _CAP:
            late = _CAP
        self._sum += late
        if late > self._max:
            self._max = late
        self._n += 1
        if self._n == _BLOCK:
            self.max_us = self._max
            self.mean_us = self._sum // _BLOCK
            self._n = self._sum = self._max = 0
