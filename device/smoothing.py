"""Smoothing of the board app's predictions: the most frequent class of the last N windows.

Runs on: board and host (MicroPython >= 1.22; CPython). The host's twin is
`host/boardeval.smooth`; tests/test_app.py holds them to the same classes.

    s = Smoother(3, n_classes)
    s.add(cls)        # -> the class to report: majority of the last 3, ties to the most recent
    s.clear()         # forget the history (the app's window restarts)

A tie goes to the tied class seen most recently. Two arrays made once; `add` allocates nothing.
"""

from array import array


class Smoother:
    """Majority class of the last `n` of `k` classes (see the module doc)."""

    def __init__(self, n, k):
        self.n = n
        self.hist = array("H", bytes(2 * n))  # the last n classes, a ring
        self.counts = array("H", bytes(2 * k))  # per class, over the last n
        self.clear()

    def clear(self):
        """No history: the next class reported is the next one added."""
        self.filled = 0
        self.pos = 0
        counts = self.counts
        for j in range(len(counts)):
            counts[j] = 0

    def add(self, cls):
        """Add this window's class; -> the majority of the last n, ties to the most recent."""
        hist, counts, n = self.hist, self.counts, self.n
        k = self.pos
        if self.filled == n:
            counts[hist[k]] -= 1
        else:
            self.filled += 1
        hist[k] = cls
        counts[cls] += 1
        self.pos = k + 1 if k + 1 < n else 0
        best = cls
        top = counts[cls]
        for _ in range(self.filled):
            j = hist[k]
            if counts[j] > top:
                best = j
                top = counts[j]
            k = k - 1 if k > 0 else n - 1
        return best
