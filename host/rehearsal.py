"""Rehearsal windows: a few of the model's own training windows that the board learns from again
after each labelled window, so that learning in the hidden layers keeps what the model knew.

Runs on: host. The board's reader is `device/rehearsal.py`; tests prove they agree.

Why. When the hidden layers learn ("bias", "all") from a handful of a new wearer's windows,
the features the model learnt from many wearers move towards what those few windows show: in
the shoulder data the first windows of each exercise come from one arm, and all-layer learning
gains on that arm and loses on the other (bench/README.md). Rehearsal (experience replay, the
usual remedy for forgetting in continual learning) interleaves one stored training window after
each labelled one: the board's step sequence is label, rehearsal, label, rehearsal, ..., the
rehearsal windows taken in file order, in a cycle. `microprop export` writes the file next to
the model (`model.rh`), `microprop deploy` copies it, and the board uses it when the hidden
layers learn (board.json `"rehearsal"`). `microprop adapt` measures the same sequence.

Choice: `per_class` windows of each class, drawn at random (seeded) from the training
subjects' windows, then shuffled, so that the cycle mixes classes.

File, little-endian:

| offset          | field       | type                                                 |
|-----------------|-------------|------------------------------------------------------|
| 0               | magic       | 4 bytes b'MPRH'                                      |
| 4               | version     | u16, 1                                               |
| 6               | n_features  | u16, the model's input count (1..MAX_FEATURES)       |
| 8               | n_windows   | u16, 1..MAX_WINDOWS                                  |
| 10              | n_classes   | u8, the model's output count                         |
| 11              | reserved    | u8, 0                                                |
| 12              | model_crc   | u32, the CRC32 at the end of the model file          |
| 16              | labels      | n_windows x u8, each < n_classes                     |
| 16 + n_windows  | features    | n_windows x n_features x i32, window-major; each     |
|                 |             | within its feature's range (host/features.py)        |
| length - 4      | crc32       | u32, binascii.crc32 of every byte before it          |
"""

import binascii
import struct

import numpy as np

from microprop.device.rehearsal import _MAX_WINDOWS as MAX_WINDOWS
from microprop.device.rehearsal import HEAD, MAGIC, VERSION

from . import features, outputs, pipeline
from .errors import UserError

PER_CLASS = 5
MAX_FEATURES = 512
SUFFIX = ".rh"
HEAD_SIZE = struct.calcsize(HEAD)


def pick(ds, subjects, classes, per_class=PER_CLASS, seed=0):
    """(raw features (n, F) int64, class indices (n,)): `per_class` windows of each class of
    `classes` drawn from `subjects`' windows of the pipeline.Dataset `ds`, then shuffled."""
    rng = np.random.default_rng(seed)
    from_subjects = np.isin(ds.subjects, [str(s) for s in subjects])
    idx = []
    for c in classes:
        pool = np.flatnonzero(from_subjects & (ds.labels == c))
        if len(pool) == 0:
            raise UserError(
                "rehearsal: no training window of class %r" % c, path=ds.source or None
            )
        idx.extend(rng.choice(pool, min(per_class, len(pool)), replace=False))
    idx = rng.permutation(np.asarray(idx, dtype=np.int64))
    return ds.X[idx].astype(np.int64), pipeline.class_indices(ds.labels[idx], list(classes))


def to_bytes(x, y, model_crc, n_classes):
    """The file's bytes (see the module docstring); ValueError for what it cannot hold."""
    x = np.asarray(x, dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    if x.ndim != 2 or len(x) != len(y) or not 1 <= len(x) <= MAX_WINDOWS:
        raise ValueError(
            "rehearsal: %d windows, expected 1..%d with a label each" % (len(x), MAX_WINDOWS)
        )
    if not 1 <= x.shape[1] <= MAX_FEATURES or not 2 <= n_classes <= 255:
        raise ValueError(
            "rehearsal: %d features and %d classes out of range" % (x.shape[1], n_classes)
        )
    if y.min() < 0 or y.max() >= n_classes:
        raise ValueError("rehearsal: a label outside 0..%d" % (n_classes - 1))
    lo, hi = features.feature_bounds(x.shape[1] // features.N_FEATURES)
    if x.shape[1] % features.N_FEATURES or (x < lo).any() or (x > hi).any():
        raise ValueError("rehearsal: features outside the window features' ranges")
    head = struct.pack(HEAD, MAGIC, VERSION, x.shape[1], len(x), n_classes, 0, model_crc)
    body = head + y.astype(np.uint8).tobytes() + x.astype("<i4").tobytes()
    return body + struct.pack("<I", binascii.crc32(body))


def from_bytes(data, model_crc=None):
    """-> (x (n, F) int64, y (n,) int64, model_crc); ValueError saying what is wrong."""
    if len(data) < HEAD_SIZE + 4:
        raise ValueError("rehearsal: %d bytes, too short for a rehearsal file" % len(data))
    magic, version, n_f, n_w, n_c, _, crc_model = struct.unpack_from(HEAD, data)
    if magic != MAGIC or version != VERSION:
        raise ValueError(
            "rehearsal: magic %r version %d, expected %r version %d"
            % (magic, version, MAGIC, VERSION)
        )
    size = HEAD_SIZE + n_w + 4 * n_w * n_f + 4
    if len(data) != size:
        raise ValueError("rehearsal: %d bytes, expected %d" % (len(data), size))
    if binascii.crc32(data[:-4]) != struct.unpack_from("<I", data, size - 4)[0]:
        raise ValueError("rehearsal: CRC mismatch")
    if model_crc is not None and crc_model != model_crc:
        raise ValueError("rehearsal: belongs to another model")
    y = np.frombuffer(data, np.uint8, n_w, HEAD_SIZE).astype(np.int64)
    x = np.frombuffer(data, "<i4", n_w * n_f, HEAD_SIZE + n_w).astype(np.int64)
    x = x.reshape(n_w, n_f)
    to_bytes(x, y, crc_model, n_c)  # the same checks as writing: labels, features, sizes
    return x, y, crc_model


def path_for(model_path):
    """model.mpm -> model.rh"""
    s = str(model_path)
    return (s[:-4] if s.endswith(".mpm") else s) + SUFFIX


def write(path, x, y, model_crc, n_classes):
    """Write the file atomically -> its size in bytes."""
    return outputs.write_bytes(path, to_bytes(x, y, model_crc, n_classes))


def interleave(x, y, rx, ry):
    """The board's step sequence: sample i of (x, y), then rehearsal window i mod len(rx)."""
    j = np.arange(len(x)) % len(rx)
    xs = np.stack([np.asarray(x), np.asarray(rx)[j]], axis=1).reshape(-1, np.shape(x)[1])
    ys = np.stack([np.asarray(y), np.asarray(ry)[j]], axis=1).reshape(-1)
    return xs, ys
