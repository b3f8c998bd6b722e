"""On-board training of a softmax classifier: integer backprop, SGD into int16 master weights.

Runs on: board and host (MicroPython >= 1.22; also CPython). The bit-exact NumPy twin is
`host/trainref.py`; tests prove them identical.

    model = Model("model.mpm")
    trainer = Trainer(model, mode="last", lr_shift=7, batch=1, seed=1)
    trainer = Trainer(model, mode="all", lr_shift=6, hidden_shift=2)   # hidden layers 2**-8
    cls, correct = trainer.step(raw, label)      # forward + backward + update every `batch`
    trainer.step(raw2, label2, 0)                # a rehearsal step: not in steps, accuracy()

    trainer = Trainer(model, model_path="model.mpm", prefix="ckpt")
    seq, ignored = trainer.load()     # newest valid checkpoint of this model, or (None, [...])
    path, seq = trainer.save()        # -> ("ckpt.0" or "ckpt.1", its sequence number)
    trainer.reset()                   # exported weights again, counters and PRNG too, no slots

`step` allocates nothing (it runs inside `micropython.heap_lock()`) and returns the same list
[predicted_class, correct (0/1)] every call. It is the textbook step: the model's forward pass
(its portable or viper kernel), the output error into the last layer, the error signals
backward through the layers that learn, top down, then each layer's gradient sums or, every
`batch` steps, its update, bottom up.

Each layer that learns is a `Layer` (device/train_portable.py) that owns its arrays (master
weights, error signals, gradient sums; the model's weights and biases, learned in place) and
its plan (shifts, bias limit), and does its own backward pass, gradient sums and update: in
plain Python, or as a `ViperLayer` (device/kernel_train_viper.py), one native call each, with
identical integers. `Trainer(..., kernel=None)` follows `model.kernel` ("portable" or "viper").
What learns is chosen at run time:

    "last"  the last layer's weights and biases (the default)
    "bias"  the biases of every layer
    "all"   every weight and bias

and only what learns gets memory: `trainer.layers` holds a Layer for each layer from the
lowest that learns up (in "last", the last layer alone), with master weights array('h') where
the weights learn and, for batch > 1, int32 gradient sums. The trainer's public state:
`layers`, `master_w` (per model layer, None where the weights do not learn), `trains_w` and
`trains_b` (per model layer), `max_batch`, the counters `steps`, `n_correct` and `in_batch`
(samples summed since the last update), `state` (the PRNG's), and `mount`: the orientation
(device/mount.py) of the samples the weights learn on, which the app sets and a checkpoint
keeps.

Where the rest is written out:

- device/train_portable.py: the integers of one step (formats, scales, shifts, rounding,
  stochastic rounding and draw order).
- device/train_plan.py: what each mode trains, the per-layer scales and shifts, the bias
  limits and the bound proof behind `max_batch` (a larger batch raises ValueError).
- device/train_state.py: the checkpoint contents and `save` / `load` / `reset` (these
  allocate, and import it, device/checkpoint.py and train_plan.py when called: the board's
  running app keeps none of them; `step` never allocates).
"""

from .config import DEFAULTS, MAX_SHIFT
from .prng import seed_state
from .train_plan import LEARN_MODES, LIMIT
from .train_portable import Layer

try:
    from . import kernel_train_viper
except Exception:  # CPython (no `micropython`), or a port without the native emitter
    kernel_train_viper = None

DEFAULT_LR_SHIFT = 7


class Trainer:
    """Trains `model` (a device.infer.Model whose last layer is softmax) in place."""

    def __init__(
        self,
        model,
        mode=None,
        lr_shift=None,
        batch=None,
        seed=None,
        kernel=None,
        model_path=None,
        prefix="ckpt",
        hidden_shift=None,
    ):
        mode, lr_shift, batch, hidden_shift = settings(
            model.training, mode, lr_shift, batch, hidden_shift
        )
        _check_args(mode, lr_shift, batch, hidden_shift)
        specs = model.layers
        if specs[-1]["act"] != "softmax":
            raise ValueError("train: last layer %r, expected softmax" % specs[-1]["act"])
        self.kernel = _pick_kernel(kernel, model)
        self.model = model
        self.mode = mode
        self.lr_shift = lr_shift
        self.hidden_shift = hidden_shift
        self.batch = batch
        from . import train_plan  # the running app does not keep it (device/board.py)

        plan = train_plan.plan(specs, mode, lr_shift, hidden_shift)
        self.trains_w, self.trains_b, lowest = train_plan.learns(mode, len(specs))
        train_plan.check_inputs(specs, model.stage[1], self.trains_w)
        self.max_batch, stage = train_plan.prove(specs, plan)
        if batch > self.max_batch:
            raise ValueError(
                "train: batch %d over the proven maximum %d (%s)" % (batch, self.max_batch, stage)
            )
        form = kernel_train_viper.ViperLayer if self.kernel == "viper" else Layer
        inputs = [model.x] + model.layer_outputs
        consts = model.consts if model.kernel == "viper" else None
        self.layers = []  # the layers that learn, from the lowest up
        self.master_w = [None] * len(specs)  # per model layer: its master weights, or None
        below = None
        for k in range(lowest, len(specs)):
            c = None if consts is None else consts[k]
            layer = form(specs[k], inputs[k], below, plan[k], batch, c)
            self.layers.append(layer)
            self.master_w[k] = layer.master_w
            below = layer
        self._down = self.layers[:0:-1]  # the layers that pass an error signal down, top first
        self.seed = DEFAULTS["seed"] if seed is None else seed
        self.state = seed_state(self.seed)  # the xorshift16 state of the stochastic rounding
        self.model_path = model_path  # the model file: its CRC names the checkpoints
        self.model_crc = None
        if model_path is not None:
            from .checkpoint import model_crc_of

            self.model_crc = model_crc_of(model_path)
        self.prefix = prefix
        self.steps = 0
        self.n_correct = 0
        self.in_batch = 0  # samples summed since the last update
        self.mount = 0  # the sensor's mount the weights learn in (device/train_state.py)
        self.result = [0, 0]

    def step(self, raw, label, count=1):
        """int raw features, class index -> [predicted class, correct (0/1)], the same list
        every call. Forward, error signals, gradients; updates every `batch` steps. count=0:
        a rehearsal step (device/rehearsal.py), left out of `steps` and `accuracy()`; `steps`
        and `n_correct` stop at 2**30 - 1 steps (they stay small ints)."""
        m = self.model
        if label < 0 or label >= m.n_outputs:
            raise ValueError("train: label %d, expected 0..%d" % (label, m.n_outputs - 1))
        m.input_stage(raw)
        m.forward()
        cls = m.classify()
        layers = self.layers
        layers[-1].output_error(m.scores, label)
        for layer in self._down:  # top down: each layer's error signal to the one below
            layer.backward()
        n = self.in_batch + 1
        if n < self.batch:
            self.in_batch = n
            for layer in layers:
                layer.accumulate()
        else:  # bottom up: the PRNG's draw order
            self.in_batch = 0
            st = self.state
            for layer in layers:
                st = layer.update(st)
            self.state = st
        correct = 1 if cls == label else 0
        if count and self.steps < LIMIT:  # counting stops at 2**30 - 1: small ints
            self.steps += 1
            self.n_correct += correct
        r = self.result
        r[0] = cls
        r[1] = correct
        return r

    def accuracy(self):
        """Percent of correct predictions so far, 0..100 (integer, rounded down)."""
        return 100 * self.n_correct // self.steps if self.steps else 0

    # -- persistence (device/train_state.py, imported here: a running app keeps no checkpoint
    # code, device/board.py; allocates, never called by step) ---------------------------------

    def save(self, prefix=None):
        """Write the training state as the newest checkpoint -> (slot path, sequence number)."""
        from . import train_state

        return train_state.save(self, self.prefix if prefix is None else prefix)

    def load(self, prefix=None):
        """Load the newest valid checkpoint of this model, mode and batch kind -> (seq or None,
        [(slot path, reason), ...] ignored). Nothing changes when seq is None; a slot that fails
        while it is read leaves the exported weights (reset without clearing) and raises."""
        from . import train_state

        return train_state.load(self, self.prefix if prefix is None else prefix)

    def reset(self, prefix=None):
        """Back to the exported weights: re-read the model file's weights and biases, master
        weights from them, gradient sums, counters and PRNG from the seed; clear the slots."""
        from . import train_state

        train_state.reset(self, self.prefix if prefix is None else prefix)


def settings(training, mode=None, lr_shift=None, batch=None, hidden_shift=None):
    """(mode, lr_shift, batch, hidden_shift): each one given, else the model file's training
    item (`training`, a dict or None), else the default: board.json's "learn", lr_shift
    DEFAULT_LR_SHIFT, batch 1, hidden_shift 0. host/trainref.py takes the same."""
    d = training or {}
    return (
        d.get("learn", DEFAULTS["learn"]) if mode is None else mode,
        d.get("lr_shift", DEFAULT_LR_SHIFT) if lr_shift is None else lr_shift,
        d.get("batch", 1) if batch is None else batch,
        d.get("hidden_shift", 0) if hidden_shift is None else hidden_shift,
    )


def _check_args(mode, lr_shift, batch, hidden_shift):
    """Raises ValueError for a mode, shift or batch out of range."""
    if mode not in LEARN_MODES:
        raise ValueError("train: mode %r, expected one of %s" % (mode, ", ".join(LEARN_MODES)))
    if not isinstance(lr_shift, int) or not 0 <= lr_shift <= MAX_SHIFT:
        raise ValueError("train: lr_shift %r, expected an int in 0..%d" % (lr_shift, MAX_SHIFT))
    if not isinstance(batch, int) or batch < 1:
        raise ValueError("train: batch %r, expected an int >= 1" % (batch,))
    if not isinstance(hidden_shift, int) or not 0 <= hidden_shift <= MAX_SHIFT:
        raise ValueError(
            "train: hidden_shift %r, expected an int in 0..%d" % (hidden_shift, MAX_SHIFT)
        )


def _pick_kernel(kernel, model):
    """The training kernel: `kernel`, or the model's when None and this port has viper."""
    if kernel is None:
        kernel = model.kernel if kernel_train_viper is not None else "portable"
    if kernel not in ("portable", "viper"):
        raise ValueError("train: kernel %r, expected 'portable' or 'viper'" % (kernel,))
    if kernel == "viper" and kernel_train_viper is None:
        raise ValueError("train: kernel 'viper' unavailable on this port, use 'portable'")
    return kernel
