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
[predicted_class, correct (0/1)] every call. The forward pass is the model's own (portable or
viper kernel); the backward pass and update have two kernels with identical integers, the
plain Python of `device/train_portable.py` and `device/kernel_train_viper.py` (native code),
picked like the model's: `Trainer(..., kernel=None)` follows `model.kernel` ("portable" or
"viper"). What learns is chosen at run time:

    "last"  the last layer's weights and biases (the default)
    "bias"  the biases of every layer
    "all"   every weight and bias

and only what learns gets memory: master weights array('h') and, for batch > 1, int32
gradient sums per trainable layer, int16 error signals for the layers backprop reaches.

Where the rest is written out:

- device/train_portable.py: the integers of one step (formats, scales, shifts, rounding,
  stochastic rounding and draw order).
- device/train_plan.py: what each mode trains, the per-layer scales and shifts, the bias
  limits and the bound proof behind `max_batch` (a larger batch raises ValueError).
- device/train_state.py: the checkpoint contents and `save` / `load` / `reset` (these
  allocate; `step` never does).
"""

from array import array

from . import checkpoint, train_plan, train_portable, train_state
from .config import DEFAULTS, MAX_SHIFT
from .modelfile import ACTIVATIONS
from .prng import seed_state
from .train_plan import (  # noqa: F401 (re-exported: the public names of device.train)
    DELTA_MAX,
    F_DELTA,
    F_DELTA_OUT,
    LEARN_MODES,
    LIMIT,
    input_range,
)
from .train_state import slot_of  # noqa: F401 (re-exported)

try:
    from . import kernel_train_viper
except Exception:  # CPython (no `micropython`), or a port without the native emitter
    kernel_train_viper = None

DEFAULT_LR_SHIFT = 7
_EMPTY = bytearray(0)  # stands for an absent buffer in a viper call (never read)


def _zeros(typecode, n, size):
    return array(typecode, bytes(n * size))


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
        layers = model.layers
        if layers[-1]["act"] != "softmax":
            raise ValueError("train: last layer %r, expected softmax" % layers[-1]["act"])
        self.kernel = _pick_kernel(kernel, model)
        self.model = model
        self.mode = mode
        self.lr_shift = lr_shift
        self.hidden_shift = hidden_shift
        self.batch = batch
        n = len(layers)
        self._n = n
        self._w = [layer["w"] for layer in layers]
        self._inputs = [model.x] + model.layer_outputs[:-1]
        self._consts = model._consts if model._viper else None
        self._act = [ACTIVATIONS.index(layer["act"]) for layer in layers]
        stage = self._plan(layers)
        if batch > self.max_batch:
            raise ValueError(
                "train: batch %d over the proven maximum %d (%s)" % (batch, self.max_batch, stage)
            )
        self._alloc(layers)
        if self.kernel == "viper":
            self._viper_params(layers)
        self.seed = DEFAULTS["seed"] if seed is None else seed
        self.state = seed_state(self.seed)
        self.model_path = model_path  # the model file: its CRC names the checkpoints
        self.model_crc = None if model_path is None else checkpoint.model_crc_of(model_path)
        self.prefix = prefix
        self.steps = 0
        self.n_correct = 0
        self._count = 0  # samples summed since the last update
        self.result = [0, 0]

    def _plan(self, layers):
        """What learns, scales and shifts, limits and `max_batch` (device/train_plan.py);
        returns the stage that limits the batch."""
        self.trains_w, self.trains_b, self._lowest = train_plan.learns(self.mode, self._n)
        plan = train_plan.scales(layers, self.lr_shift, self.hidden_shift)
        self.f_delta, self._sback, self._sw, self._sb = plan
        self._dmax, self._bias_limit = train_plan.input_limits(layers)
        self.max_batch, stage = train_plan.prove(self, layers)
        return stage

    def _alloc(self, layers):
        n = self._n
        self.delta = [None] * n
        self.master_w = [None] * n
        self.master_b = [None] * n
        self._gw = [None] * n
        self._gb = [None] * n
        for k in range(n):
            n_in, n_out = layers[k]["n_in"], layers[k]["n_out"]
            if k >= self._lowest:
                self.delta[k] = _zeros("h", n_out, 2)
            if self.trains_w[k]:
                w = layers[k]["w"]
                m = _zeros("h", n_in * n_out, 2)
                for i in range(n_in * n_out):
                    m[i] = w[i] * 256
                self.master_w[k] = m
                if self.batch > 1:
                    self._gw[k] = _zeros("i", n_in * n_out, 4)
            if self.trains_b[k]:
                self.master_b[k] = layers[k]["b"]
                if self.batch > 1:
                    self._gb[k] = _zeros("i", n_out, 4)

    def _viper_params(self, layers):
        """The buffer table of the viper kernels per learning layer (kernel_train_viper.py):
        the buffers, `_EMPTY` where a layer has none, and array('h') parameters."""
        n = self._n
        self._tables = [None] * n  # type: list
        for k in range(self._lowest, n):
            layer = layers[k]
            n_in, n_out, zp_x = layer["n_in"], layer["n_out"], layer["zp_x"]
            out = pback = _EMPTY
            if k > self._lowest:
                out = self.delta[k - 1]
                below = layers[k - 1]
                pback = array(
                    "h", [n_in, n_out, self._sback[k - 1], self._act[k - 1], below["zp_z"]]
                )
            has_c = self.trains_w[k] and self._consts is not None
            pw = _update_params(self._sw[k], n_in, n_out, zp_x, self._gw[k] is not None, has_c)
            pb = _update_params(self._sb[k], n_in, n_out, zp_x, self._gb[k] is not None, False)
            lim = self._bias_limit[k] if self.trains_b[k] else 0  # < 2**30 when it learns
            flags = [int(self.trains_w[k]), int(self.trains_b[k]), lim & 0x7FFF, lim >> 15]
            p = array("h", pw + pb + flags)
            self._tables[k] = kernel_train_viper.layer_table(
                self.delta[k],
                self._inputs[k],
                _or_empty(self._gw[k]),
                _or_empty(self.master_w[k]),
                self._w[k],
                self._consts[k] if has_c else _EMPTY,
                _or_empty(self._gb[k]),
                _or_empty(self.master_b[k]),
                p,
                out,
                pback,
            )

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
        if self.kernel == "viper":
            self._learn_viper(label)
        else:
            train_portable.learn(self, label)
        correct = 1 if cls == label else 0
        if count and self.steps < LIMIT:  # counting stops at 2**30 - 1: small ints
            self.steps += 1
            self.n_correct += correct
        self.result[0] = cls
        self.result[1] = correct
        return self.result

    def _learn_viper(self, label):
        """train_portable.learn with kernel_train_viper: one native call per layer and stage,
        the weights and biases of a layer in the same call, each given the layer's buffer table
        instead of its buffers (see kernel_train_viper's docstring for what a call costs).
        The layers from `_lowest` up are those that learn."""
        kv = kernel_train_viper
        n = self._n
        tables = self._tables
        d = self.delta[n - 1]
        kv.output_error(self.model.scores, d, len(d), label)
        for k in range(n - 1, self._lowest, -1):
            kv.backward(0, 0, 0, tables[k])
        self._count += 1
        if self._count < self.batch:
            for k in range(self._lowest, n):
                kv.sum_layer(0, 0, 0, tables[k])
            return
        self._count = 0
        st = self.state
        for k in range(self._lowest, n):
            st = kv.update_layer(st, 0, 0, tables[k])
        self.state = st

    def accuracy(self):
        """Percent of correct predictions so far, 0..100 (integer, rounded down)."""
        return 100 * self.n_correct // self.steps if self.steps else 0

    # -- persistence (device/train_state.py; allocates, never called by step) -------------------

    def save(self, prefix=None):
        """Write the training state as the newest checkpoint -> (slot path, sequence number)."""
        return train_state.save(self, self.prefix if prefix is None else prefix)

    def load(self, prefix=None):
        """Load the newest valid checkpoint of this model, mode and batch kind -> (seq or None,
        [(slot path, reason), ...] ignored). Nothing changes when seq is None; a slot that fails
        while it is read leaves the exported weights (reset without clearing) and raises."""
        return train_state.load(self, self.prefix if prefix is None else prefix)

    def reset(self, prefix=None):
        """Back to the exported weights: re-read the model file's weights and biases, master
        weights from them, gradient sums, counters and PRNG from the seed; clear the slots."""
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


def _or_empty(buf):
    return _EMPTY if buf is None else buf


def _update_params(s, n_in, n_out, zp_x, has_g, has_c):
    """The update parameters of a layer's weights or biases for the viper kernels, update
    shift s: [n_in, n_out, 128 + zp_x, draw, ls, rs, fs, t, rt, has_g, has_c], see
    kernel_train_viper.update_layer. Shifts clamp at 31: |g| < 2**30, so g >> 31 is
    g >> s for any s >= 31."""
    t = min(max(s, 0), 16)
    return [
        n_in,
        n_out,
        128 + zp_x,
        1 if s > 0 else 0,
        max(-s, 0),
        min(max(s, 0), 31),
        min(s - t, 31) if s > 0 else 0,
        t,
        16 - t,
        1 if has_g else 0,
        1 if has_c else 0,
    ]
