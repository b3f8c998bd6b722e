"""Checkpoints of device/train.py's Trainer: save, load, reset to the exported weights.

Runs on: board and host (MicroPython >= 1.22; also CPython). The Trainer's `save`, `load` and
`reset` call these with itself; they read its public state (its `layers`, counters and PRNG
state, device/train.py).

Persistence (device/checkpoint.py, two slots named by `prefix`, tied to the model file's CRC):
the state is, layer by layer (the trainer's `layers`, the lowest first), the master weights
(array('h')) of each layer whose weights learn, then its biases (array('i'), the model's own),
and for batch > 1 the int32 gradient sums of the unfinished mini-batch (so training resumes
exactly where it stopped), plus the ints [steps, n_correct, PRNG state, samples in the batch];
the header holds the mode's id (train_plan.LEARN_MODES), the batch size and the trainer's
`mount`: the sensor's mount (device/mount.py's orientation index) the app turned the samples
by, which the weights learned in (the app sets it, device/app.py; `load` sets it from the
slot, 0 from a slot of version 2, and `reset` leaves it). The int8 weights
are not stored: `load` recomputes them from the master weights ((m + 128) >> 8, clamped), and
the viper kernel's row constants with them (Layer.round_master). A checkpoint of another
model (CRC), or of a mode or batch kind (1 or > 1) that keeps other arrays (shape), is ignored
with a reason; two modes that train the same parameters (one layer: "last" and "all") load
each other's checkpoints, and so do two batch sizes of one kind when the samples in the batch
fit both.

Every field of a slot is checked against the model and the trainer before any of it is used
(`check`; device/checkpoint.py checks in the file, so a refused slot leaves the trainer as it
was and the other slot, or the exported weights, is used; the app reports the refused one with
`info checkpoint_ignored=<slot> reason=<...>`):

    mode        an id of train_plan.LEARN_MODES that trains the trainer's parameters
    mount       0..23 (device/mount.py's orientations)
    batch       1..max_batch, and > 1 exactly when the trainer's is
    steps       0..2**30 - 1 (Trainer.step stops counting there)
    n_correct   0..steps (accuracy 0..100)
    PRNG state  1..65535 (xorshift16's states)
    in batch    0..min(batch, trainer's batch) - 1
    master w    any int16 (the update clamps them there)
    biases      within +/- the layer's bias limit (train_plan.plan)
    grad sums   within +/- in-batch count * the largest per-sample gradient (|delta| <= 256 at
                the output, 32768 below, times max|x - zp_x|): so the proof of max_batch holds

Every limit is below 2**30 (the proof keeps it there), ints outside 31 bits are refused before
the check sees them, so the check makes no big int on a board. These functions allocate (a
256-byte buffer, small objects; `reset` decodes the model file again); the training step never
calls them.
"""

import struct

from . import checkpoint
from .prng import seed_state
from .train_plan import DELTA_MAX, LEARN_MODES, LIMIT, input_dmax, learns


def state(trainer):
    """(arrays, ints) of a checkpoint of `trainer`; see the module docstring for the order."""
    arrays = []  # type: list
    for layer in trainer.layers:
        if layer.trains_w:
            arrays.append(layer.master_w)
        arrays.append(layer.b)  # a Layer's biases always learn
    for layer in trainer.layers:
        if layer.gw is not None:
            arrays.append(layer.gw)
        if layer.gb is not None:
            arrays.append(layer.gb)
    ints = [trainer.steps, trainer.n_correct, trainer.state, trainer.in_batch]
    return arrays, ints


def save(trainer, prefix):
    """Write the training state as the newest checkpoint -> (slot path, sequence number)."""
    arrays, ints = state(trainer)
    mode = LEARN_MODES.index(trainer.mode)
    seq = checkpoint.save(prefix, _crc(trainer), arrays, ints, mode, trainer.batch, trainer.mount)
    return slot_of(prefix, seq), seq


def load(trainer, prefix):
    """Load the newest valid checkpoint of this model, mode and batch kind -> (seq or None,
    [(slot path, reason), ...] ignored). Nothing changes when seq is None; a slot that fails
    while it is read leaves the exported weights (reset without clearing) and raises. Only a
    slot that `check` accepts loads."""
    arrays, ints = state(trainer)

    def check_slot(got, mode, batch, mount):
        return check(trainer, got, mode, batch, mount)

    head = {}  # type: dict
    try:
        seq, ignored = checkpoint.load(prefix, _crc(trainer), arrays, ints, check_slot, head)
    except OSError:
        restore(trainer)
        raise
    if seq is None:
        return None, ignored
    trainer.steps, trainer.n_correct, trainer.state, trainer.in_batch = ints
    trainer.mount = head["mount"]
    for layer in trainer.layers:
        if layer.trains_w:
            layer.round_master()
    return seq, ignored


def check(trainer, ints, mode, batch, mount=0):
    """A slot's ints [steps, n_correct, PRNG state, in batch] and header mode id, batch and
    mount against `trainer` -> the reason to refuse it, or the limit of each array of
    `state(trainer)` (device/checkpoint.py's `check`; the module docstring lists the ranges)."""
    if mount:
        from .mount import N_ORIENTATIONS  # only for a turned mount: the identity needs none

        if mount >= N_ORIENTATIONS:
            return "mount %d, expected 0..%d" % (mount, N_ORIENTATIONS - 1)
    if not 0 <= mode < len(LEARN_MODES):
        return "mode id %d, expected 0..%d" % (mode, len(LEARN_MODES) - 1)
    trains_w, trains_b, _ = learns(LEARN_MODES[mode], len(trainer.trains_w))
    if trains_w != trainer.trains_w or trains_b != trainer.trains_b:
        return "mode %s, the trainer's %s learns other parameters" % (
            LEARN_MODES[mode],
            trainer.mode,
        )
    t_batch, max_batch = trainer.batch, trainer.max_batch
    if not 1 <= batch <= max_batch or (batch > 1) != (t_batch > 1):
        kind = "2..%d" % max_batch if t_batch > 1 else "1"
        return "batch %d, expected %s" % (batch, kind)
    steps, n_correct, st, count = ints
    if not 0 <= steps <= LIMIT:
        return "steps %d, expected 0..%d" % (steps, LIMIT)
    if not 0 <= n_correct <= steps:
        return "correct answers %d, expected 0..%d (the steps)" % (n_correct, steps)
    if not 1 <= st <= 0xFFFF:
        return "prng state %d, expected 1..65535" % st
    room = batch if batch < t_batch else t_batch
    if not 0 <= count < room:
        return "samples in the batch %d, expected 0..%d" % (count, room - 1)
    layers = trainer.layers
    limits = []  # type: list
    for layer in layers:
        if layer.trains_w:
            limits.append(None)  # int16 master weights: every value is one the update keeps
        limits.append(layer.bias_limit)
    specs = trainer.model.layers
    lowest = len(specs) - len(layers)
    for i in range(len(layers)):
        layer = layers[i]
        d = 256 if layer is layers[-1] else DELTA_MAX  # max |delta| of its error signal
        if layer.gw is not None:  # < max_batch * per-sample max <= LIMIT
            limits.append(count * d * input_dmax(specs, lowest + i))
        if layer.gb is not None:
            limits.append(count * d)
    return limits


def reset(trainer, prefix):
    """Back to the exported weights (`restore`), then clear the slots of `prefix`."""
    restore(trainer)
    checkpoint.clear(prefix)


def restore(trainer):
    """Exported weights and biases (from the model file) into the live arrays; master weights
    from them, gradient sums zero, counters and PRNG from the seed."""
    path = trainer.model_path
    crc = checkpoint.model_crc_of(path) if path else None
    if crc is None or crc != _crc(trainer):
        raise ValueError(
            "train: model file %s changed since start (crc 0x%08x, expected 0x%08x)"
            % (path, crc or 0, _crc(trainer))
        )
    from .modelfile import load  # only here: a save or load needs no model-file loader

    live = trainer.model.layers
    exported = load(path)["layers"]
    for k in range(len(live)):
        w, b = exported[k]["w"], exported[k]["b"]
        if len(w) != len(live[k]["w"]) or len(b) != len(live[k]["b"]):
            raise ValueError("train: layer %d of %s differs in size" % (k, path))
        _copy(w, live[k]["w"])
        _copy(b, live[k]["b"])
    for layer in trainer.layers:
        layer.restart()
    trainer.state = seed_state(trainer.seed)
    trainer.steps = 0
    trainer.n_correct = 0
    trainer.in_batch = 0


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


def _crc(trainer):
    if trainer.model_crc is None:
        raise ValueError("train: no model file given (model_path), needed for checkpoints")
    return trainer.model_crc


def _copy(src, dst):
    for i in range(len(src)):
        dst[i] = src[i]
