"""Checkpoints of device/train.py's Trainer: save, load, reset to the exported weights.

Runs on: board and host (MicroPython >= 1.22; also CPython). The Trainer's `save`, `load` and
`reset` call these with itself as `t`.

Persistence (device/checkpoint.py, two slots named by `prefix`, tied to the model file's CRC):
the state is, layer by layer, the master weights (array('h')) of each layer whose weights
learn, then its biases (array('i'), the model's own), and for batch > 1 the int32 gradient
sums of the unfinished mini-batch (so training resumes exactly where it stopped), plus the ints
[steps, n_correct, PRNG state, samples in the batch]; the header holds the mode's id
(train_plan.LEARN_MODES) and the batch size. The int8 weights are not stored: `load` recomputes
them from the master weights ((m + 128) >> 8, clamped), and the viper kernel's row constants with
them. A checkpoint of another model (CRC), or of a mode or batch kind (1 or > 1) that keeps
other arrays (shape), is ignored with a reason; two modes that train the same parameters (one
layer: "last" and "all") load each other's checkpoints, and so do two batch sizes of one kind
when the samples in the batch fit both.

Every field of a slot is checked against the model and the trainer before any of it is used
(`check`; device/checkpoint.py checks in the file, so a refused slot leaves the trainer as it
was and the other slot, or the exported weights, is used; the app reports the refused one with
`info checkpoint_ignored=<slot> reason=<...>`):

    mode        an id of train_plan.LEARN_MODES that trains the trainer's parameters
    batch       1..max_batch, and > 1 exactly when the trainer's is
    steps       0..2**30 - 1 (Trainer.step stops counting there)
    n_correct   0..steps (accuracy 0..100)
    PRNG state  1..65535 (xorshift16's states)
    in batch    0..min(batch, trainer's batch) - 1
    master w    any int16 (the update clamps them there)
    biases      within +/- the layer's bias limit (train_plan.input_limits)
    grad sums   within +/- in-batch count * the largest per-sample gradient (|delta| <= 256 at
                the output, 32768 below, times max|x - zp_x|): so the proof of max_batch holds

Every limit is below 2**30 (the proof keeps it there), ints outside 31 bits are refused before
the check sees them, so the check makes no big int on a board. These functions allocate (a
256-byte buffer, small objects; `reset` decodes the model file again); the training step never
calls them.
"""

import struct

from . import checkpoint, modelfile
from .prng import seed_state
from .train_plan import DELTA_MAX, LEARN_MODES, LIMIT, learns


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
    ints = [t.steps, t.n_correct, t.state, t._count]
    return arrays, ints


def save(t, prefix):
    """Write the training state as the newest checkpoint -> (slot path, sequence number)."""
    arrays, ints = state(t)
    seq = checkpoint.save(prefix, _crc(t), arrays, ints, LEARN_MODES.index(t.mode), t.batch)
    return slot_of(prefix, seq), seq


def load(t, prefix):
    """Load the newest valid checkpoint of this model, mode and batch kind -> (seq or None,
    [(slot path, reason), ...] ignored). Nothing changes when seq is None; a slot that fails
    while it is read leaves the exported weights (reset without clearing) and raises. Only a
    slot that `check` accepts loads."""
    arrays, ints = state(t)

    def check_slot(got, mode, batch):
        return check(t, got, mode, batch)

    try:
        seq, ignored = checkpoint.load(prefix, _crc(t), arrays, ints, check_slot)
    except OSError:
        restore(t)
        raise
    if seq is None:
        return None, ignored
    t.steps, t.n_correct, t.state, t._count = ints
    for k in range(t._n):
        if t.trains_w[k]:
            _round_master(t.master_w[k], t._w[k])
            refresh_consts(t, k)
    return seq, ignored


def check(t, ints, mode, batch):
    """A slot's ints [steps, n_correct, PRNG state, in batch] and header mode id and batch
    against Trainer `t` -> the reason to refuse it, or the limit of each array of `state(t)`
    (device/checkpoint.py's `check`; the module docstring lists the ranges)."""
    if not 0 <= mode < len(LEARN_MODES):
        return "mode id %d, expected 0..%d" % (mode, len(LEARN_MODES) - 1)
    trains_w, trains_b, _ = learns(LEARN_MODES[mode], t._n)
    if trains_w != t.trains_w or trains_b != t.trains_b:
        return "mode %s, the trainer's %s learns other parameters" % (LEARN_MODES[mode], t.mode)
    if not 1 <= batch <= t.max_batch or (batch > 1) != (t.batch > 1):
        kind = "2..%d" % t.max_batch if t.batch > 1 else "1"
        return "batch %d, expected %s" % (batch, kind)
    steps, n_correct, st, count = ints
    if not 0 <= steps <= LIMIT:
        return "steps %d, expected 0..%d" % (steps, LIMIT)
    if not 0 <= n_correct <= steps:
        return "correct answers %d, expected 0..%d (the steps)" % (n_correct, steps)
    if not 1 <= st <= 0xFFFF:
        return "prng state %d, expected 1..65535" % st
    room = batch if batch < t.batch else t.batch
    if not 0 <= count < room:
        return "samples in the batch %d, expected 0..%d" % (count, room - 1)
    limits = []  # type: list
    for k in range(t._n):
        if t.trains_w[k]:
            limits.append(None)  # int16 master weights: every value is one the update keeps
        if t.trains_b[k]:
            limits.append(t._bias_limit[k])
    for k in range(t._n):
        d = 256 if k == t._n - 1 else DELTA_MAX  # max |delta| of the layer's error signal
        if t._gw[k] is not None:
            limits.append(count * d * t._dmax[k])  # < max_batch * per-sample max <= LIMIT
        if t._gb[k] is not None:
            limits.append(count * d)
    return limits


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
