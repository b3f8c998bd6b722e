"""Checkpoints of device/train.py's Trainer: save, load, reset to the exported weights.

Runs on: board and host (MicroPython >= 1.22; also CPython). The Trainer's `save`, `load` and
`reset` call these with itself as `t`.

Persistence (device/checkpoint.py, two slots named by `prefix`, tied to the model file's CRC):
the state is, layer by layer, the master weights (array('h')) of each layer whose weights
learn, then its biases (array('i'), the model's own), and for batch > 1 the int32 gradient
sums of the unfinished mini-batch (so training resumes exactly where it stopped), plus the ints
[steps, n_correct, PRNG state, samples in the batch, mode id]. The int8 weights are not
stored: `load` recomputes them from the master weights ((m + 128) >> 8, clamped), and the
viper kernel's row constants with them. A checkpoint of another model (CRC), or of a mode or
batch kind (1 or > 1) that keeps other arrays (shape), is ignored with a reason; two modes
that keep the same arrays train the same parameters (one layer: "last" and "all"), so either
loads it. These functions allocate (a 256-byte buffer, small objects; `reset` decodes the
model file again); the training step never calls them.
"""

import struct

from . import checkpoint, modelfile
from .prng import seed_state
from .train_plan import MODES


def state(t):
    """(arrays, ints) of a checkpoint of Trainer `t`; see the module docstring for the order."""
    arrays = []  # type: list
    for k in range(t._n):
        if t.trains_w[k]:
            arrays.append(t.master_w[k])
        if t.trains_b[k]:
            arrays.append(t.master_b[k])
    for k in range(t._n):
        if t._gw[k] is not None:
            arrays.append(t._gw[k])
        if t._gb[k] is not None:
            arrays.append(t._gb[k])
    ints = [t.steps, t.n_correct, t.state, t._count, MODES.index(t.mode)]
    return arrays, ints


def save(t, prefix):
    """Write the training state as the newest checkpoint -> (slot path, sequence number)."""
    arrays, ints = state(t)
    seq = checkpoint.save(prefix, _crc(t), arrays, ints)
    return slot_of(prefix, seq), seq


def load(t, prefix):
    """Load the newest valid checkpoint of this model, mode and batch kind -> (seq or None,
    [(slot path, reason), ...] ignored). Nothing changes when seq is None; a slot that fails
    while it is read leaves the exported weights (reset without clearing) and raises."""
    arrays, ints = state(t)
    try:
        seq, ignored = checkpoint.load(prefix, _crc(t), arrays, ints)
    except OSError:
        restore(t)
        raise
    if seq is None:
        return None, ignored
    t.steps, t.n_correct, t._count = ints[0], ints[1], ints[3]
    t.state = ints[2] if 1 <= ints[2] <= 0xFFFF else seed_state(ints[2])
    for k in range(t._n):
        if t.trains_w[k]:
            _round_master(t.master_w[k], t._w[k])
            refresh_consts(t, k)
    return seq, ignored


def reset(t, prefix):
    """Back to the exported weights (`restore`), then clear the slots of `prefix`."""
    restore(t)
    checkpoint.clear(prefix)


def restore(t):
    """Exported weights and biases (from the model file) into the live arrays; master weights
    from them, gradient sums zero, counters and PRNG from the seed."""
    crc = checkpoint.model_crc_of(t.model_path) if t.model_path else None
    if crc is None or crc != _crc(t):
        raise ValueError(
            "train: model file %s changed since start (crc 0x%08x, expected 0x%08x)"
            % (t.model_path, crc or 0, _crc(t))
        )
    layers = modelfile.load(t.model_path)["layers"]
    for k in range(t._n):
        live = t.model.layers[k]
        w, b = layers[k]["w"], layers[k]["b"]
        if len(w) != len(live["w"]) or len(b) != len(live["b"]):
            raise ValueError("train: layer %d of %s differs in size" % (k, t.model_path))
        _copy(w, live["w"])
        _copy(b, live["b"])
        mw = t.master_w[k]
        if mw is not None:
            for i in range(len(w)):
                mw[i] = w[i] * 256
        for g in (t._gw[k], t._gb[k]):
            if g is not None:
                for i in range(len(g)):
                    g[i] = 0
        refresh_consts(t, k)
    t.state = seed_state(t.seed)
    t.steps = 0
    t.n_correct = 0
    t._count = 0


def refresh_consts(t, k):
    """The viper forward kernel's row constants of layer k, after its weights changed."""
    if t._consts is None:
        return
    c = t._consts[k]
    w = t._w[k]
    n_in = t.model.layers[k]["n_in"]
    cz = -(128 + t.model.layers[k]["zp_x"])
    idx = 0
    for j in range(len(c)):
        total = 0
        for i in range(n_in):
            total += w[idx + i]
        idx += n_in
        c[j] = cz * total


def slot_of(prefix, seq):
    """The slot path of `prefix` whose header holds sequence number `seq` (device/checkpoint.py:
    u32 at offset 12), or `prefix` + ".?" when neither does."""
    for path in checkpoint.slot_paths(prefix):
        try:
            with open(path, "rb") as f:
                head = f.read(16)
        except OSError:
            continue
        if len(head) == 16 and struct.unpack_from("<I", head, 12)[0] == seq:
            return path
    return prefix + ".?"


def _crc(t):
    if t.model_crc is None:
        raise ValueError("train: no model file given (model_path), needed for checkpoints")
    return t.model_crc


def _round_master(mw, w):
    """int16 master weights -> int8 weights: (m + 128) >> 8, clamped to [-127, 127]."""
    for i in range(len(mw)):
        v = (mw[i] + 128) >> 8
        w[i] = -127 if v < -127 else (127 if v > 127 else v)


def _copy(src, dst):
    for i in range(len(src)):
        dst[i] = src[i]
