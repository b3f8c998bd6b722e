"""Rehearsal windows on the board: a few of the model's training windows, learnt from again
after each labelled window so that learning in the hidden layers keeps what the model knew.

Runs on: board and host (MicroPython >= 1.22 and CPython; imports only array, binascii,
struct). The file is written by `host/rehearsal.py` (its docstring has the layout and why);
`microprop export` puts it next to the model as `model.rh`.

    r = Rehearsal("model.rh", model_crc, n_features, n_classes)   # ValueError if unusable
    label = r.window_into(i, raw)     # window i mod n_windows into `raw` -> its class index

The app takes window (steps - 1) mod n_windows after its labelled step number `steps`, so the
sequence goes on where it was after a checkpoint is loaded and starts again at `reset-model`.

Everything is checked before it is used: magic, version, sizes against the model, the model
CRC, the file CRC, every label and every feature against its range, so a window from the file
is one the board's own feature code could have computed. The windows live in one array('i')
and one bytearray, allocated once; `window_into` allocates nothing.
"""

import binascii
import struct
from array import array

try:
    from micropython import const
except ImportError:  # CPython

    def const(x):
        return x


MAGIC = b"MPRH"
VERSION = 1
HEAD = "<4sHHHBBI"  # magic, version, n_features, n_windows, n_classes, reserved, model_crc
_HEAD_SIZE = const(16)  # struct.calcsize(HEAD)
_MAX_WINDOWS = const(1024)  # host/rehearsal.py reads it too
# per feature of a channel (device/features.py): mean, std, min, max, mad, crossings, energy
_LO = (-32768, 0, -32768, -32768, 0, 0, 0)
_HI = (32767, 65536, 32767, 32767, 65535, 511, 65536)


class Rehearsal:
    def __init__(self, path, model_crc, n_features, n_classes):
        with open(path, "rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            head = f.read(_HEAD_SIZE)
            if len(head) < _HEAD_SIZE:
                raise ValueError("rehearsal: %d bytes, too short" % size)
            magic, version, n_f, n_w, n_c, _, crc_model = struct.unpack(HEAD, head)
            if magic != MAGIC or version != VERSION:
                raise ValueError(
                    "rehearsal: magic %r version %d, expected %r version %d"
                    % (magic, version, MAGIC, VERSION)
                )
            if n_f != n_features or n_c != n_classes:
                raise ValueError(
                    "rehearsal: %d features, %d classes; the model has %d, %d"
                    % (n_f, n_c, n_features, n_classes)
                )
            if not 1 <= n_w <= _MAX_WINDOWS or size != _HEAD_SIZE + n_w * (1 + 4 * n_f) + 4:
                raise ValueError("rehearsal: %d bytes for %d windows, a bad size" % (size, n_w))
            if crc_model != model_crc:
                raise ValueError("rehearsal: belongs to another model")
            labels = bytearray(n_w)
            x = array("i", bytes(4 * n_w * n_f))
            if f.readinto(labels) != n_w or f.readinto(x) != 4 * n_w * n_f:
                raise ValueError("rehearsal: file shorter than its header says")
            stored = struct.unpack("<I", f.read(4))[0]
        crc = binascii.crc32(x, binascii.crc32(labels, binascii.crc32(head)))
        if crc & 0xFFFFFFFF != stored:
            raise ValueError("rehearsal: CRC mismatch")
        for i in range(n_w):
            if labels[i] >= n_c:
                raise ValueError("rehearsal: window %d label %d >= %d" % (i, labels[i], n_c))
        for i in range(n_w * n_f):
            j = (i % n_f) % 7
            if not _LO[j] <= x[i] <= _HI[j]:
                raise ValueError("rehearsal: feature value %d out of range" % x[i])
        self.x = x
        self.labels = labels
        self.n_windows = n_w
        self.n_features = n_f

    def window_into(self, i, raw):
        """Copy window i mod n_windows into `raw` -> its class index (allocates nothing)."""
        i %= self.n_windows
        n = self.n_features
        x = self.x
        base = i * n
        for j in range(n):
            raw[j] = x[base + j]
        return self.labels[i]
