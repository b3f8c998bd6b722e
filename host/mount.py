"""The board's mount search in NumPy: which of the 24 axis-aligned orientations
(device/mount.py) makes the model classify labelled windows best, bit for bit as the board
finds it.

Runs on: host.

    k = best(search(qm, windows, labels, channels))   # windows: int16 counts (W, N, C)
    log2 = turn_log(log, {subject: k})               # those subjects' samples turned by k

`turn_counts` turns counts as device/mount.turn does (a signed permutation of each axis
triple, -(-32768) saturating to 32767), so the features of a turned window are the board's.
`search` is device/mount.MountSearch over windows in the order given: for each orientation,
the sum over the windows of the int8 model's score (host/reference.predict, 0..255) for the
window's label, saturating at SCORE_LIMIT; `best` is its first highest sum.

The adaptation experiment (host/adapt.py, `learn_mount`) runs the search on each wearer's
adaptation windows before the layers learn, as the board does with `mount search` / `mount
pick` (microprop teach --find-mount).
"""

from dataclasses import replace

import numpy as np

from microprop.device.mount import IDENTITY, N_ORIENTATIONS, SCORE_LIMIT, channel_map

from . import features, reference


def turn_counts(counts, channels, k):
    """int counts (..., C) turned by orientation k -> int64 array of the same shape."""
    m = np.asarray(channel_map(list(channels), k), dtype=np.int64)
    x = np.asarray(counts, dtype=np.int64)[..., np.abs(m) - 1]
    neg = m < 0
    x[..., neg] = np.minimum(-x[..., neg], 32767)
    return x


def windows(ds, idx):
    """int16 counts (W, window, C) of the windows `idx` of a pipeline.Dataset."""
    counts = np.asarray(ds.log.counts, dtype=np.int64)
    starts = np.asarray(ds.starts)[np.asarray(idx, dtype=np.int64)]
    return counts[starts[:, None] + np.arange(ds.window)[None, :]]


def search(qmodel, wins, labels, channels):
    """Each orientation's score (int64 (24,)) on int16 windows (W, N, C) with class indices
    `labels` (W,): the sum of the model's score for the label, saturating at SCORE_LIMIT."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.zeros(N_ORIENTATIONS, dtype=np.int64)
    if len(labels) == 0:
        return out
    rows = np.arange(len(labels))
    for k in range(N_ORIENTATIONS):
        x = features.features_batch(turn_counts(wins, channels, k))
        _, scores = reference.predict(qmodel, x)
        out[k] = min(int(np.asarray(scores, dtype=np.int64)[rows, labels].sum()), SCORE_LIMIT)
    return out


def best(scores):
    """The orientation with the highest score, ties to the lower index (the identity first)."""
    return int(np.argmax(np.asarray(scores)))


def turn_log(log, turns):
    """A copy of `log` with the rows of each subject in `turns` ({subject: orientation})
    turned by that orientation, exactly in counts; other rows unchanged."""
    counts = np.array(log.counts, dtype=np.int64, copy=True)
    subjects = np.asarray(log.subjects).astype(str)
    for subject, k in turns.items():
        if k == IDENTITY:
            continue
        rows = subjects == str(subject)
        counts[rows] = turn_counts(counts[rows], log.channels, k)
    return replace(log, counts=counts.astype(log.counts.dtype, copy=False))
