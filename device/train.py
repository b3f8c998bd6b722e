"""On-board training of a softmax classifier: integer backprop, SGD into int16 master weights.

Runs on: board and host (MicroPython >= 1.22; also CPython). The bit-exact NumPy twin is
`host/trainref.py`; tests prove them identical.

    model = Model("model.mpm")
    trainer = Trainer(model, mode="last", lr_shift=7, batch=1, seed=1)
    trainer = Trainer(model, mode="all", lr_shift=6, hidden_shift=2)   # hidden layers 2**-8
    cls, correct = trainer.step(raw, label)      # forward + backward + update every `batch`

    trainer = Trainer(model, model_path="model.mpm", prefix="ckpt")
    seq, ignored = trainer.load()     # newest valid checkpoint of this model, or (None, [...])
    path, seq = trainer.save()        # -> ("ckpt.0" or "ckpt.1", its sequence number)
    trainer.reset()                   # exported weights again, counters and PRNG too, no slots

`step` allocates nothing (it runs inside `micropython.heap_lock()`) and returns the same list
[predicted_class, correct (0/1)] every call. The forward pass is the model's own (portable or
viper kernel); the backward pass and update have two kernels with identical integers, the
plain Python below and `device/kernel_train_viper.py` (native code), picked like the model's:
`Trainer(..., kernel=None)` follows `model.kernel` ("portable" or "viper"). What learns is
chosen at run time:

    "last"  the last layer's weights and biases (the default)
    "bias"  the biases of every layer
    "all"   every weight and bias

and only what learns gets memory: master weights array('h') and, for batch > 1, int32
gradient sums per trainable layer, int16 error signals for the layers backprop reaches.

The integers of one step (layer k reads x at (f_x, zp_x), weights at f_w):

- output error, probability scale 2**-8: e_j = (q_j + 128) - 256 * [j == label] in
  [-256, 255], q the softmax output (scores - 128). This is dL/dz of cross-entropy.
- error signals delta(k): int16 at a fixed scale 2**-f_d(k); f_d = 8 at the output; going
  down from layer k + 1 to the hidden layer k below:
      S_i = sum_j w[j][i] * delta_j(k+1)                     scale 2**-(f_w(k+1) + f_d(k+1))
      T_i = clamp(R(S_i, sb(k)), -32768, 32767)               sb(k) = clamp(f_w(k+1) + f_d(k+1)
                                                                      - 12, 0, 24)
      delta_i(k) = T_i * D_i at the derivative's scale, rounded back by R:
          relu / linear: T_i if y_i > zp_y (relu) else 0
          sigmoid: R(T_i * (y_i + 128) * (128 - y_i), 16)     p(1 - p), D <= 2**14 at 2**-16
          tanh:    R(T_i * (16384 - y_i * y_i), 14)           1 - a*a,  D <= 2**14 at 2**-14
  so f_d(k) = f_w(k+1) + f_d(k+1) - sb(k): 12 fractional bits unless the shift clamps.
  R is fixedpoint.rounding_rshift (TFLite rounding, ties away from zero).
- gradients, summed over the mini-batch in int32: gw[j][i] = sum delta_j * (x_i - zp_x),
  gb[j] = sum delta_j.
- update, SGD at the real learning rate lr = 2**-L on the summed gradient, L = lr_shift for
  the last layer and lr_shift + hidden_shift below it (discriminative fine-tuning: the
  hidden features move slower than the classifier; hidden_shift defaults to 0):
      master_w -= SR(gw, sw),  sw = L + f_d + f_x - f_w - 8  (master: 8 more bits)
      b        -= SR(gb, sbias), sbias = L + f_d - f_x - f_w
  SR(g, s) for s > 0 is floor(g / 2**s) plus 1 when the next t = min(s, 16) dropped bits
  exceed a fresh random draw: (g >> (s - t)) & (2**t - 1) > (r - 1) >> (16 - t), with r the
  next xorshift16 state (prng.py); for s <= 0 it is g << -s, exact, with no draw. Master
  weights clamp to [-32768, 32767]; the int8 weight is (master + 128) >> 8 (nearest, ties
  up) clamped to [-127, 127]. Biases clamp to +/- max(127 * n_in * max|x - zp_x|, max|b| at
  start), the limit of host/bounds.bias_limit. The int32 bias is its own master: it already
  has f_x more fractional bits than the weight.
- draw order: one draw per updated parameter with s > 0, layer by layer from layer 0, the
  weights row-major, then the biases.

Persistence (device/checkpoint.py, two slots named by `prefix`, tied to the model file's CRC):
the state is, layer by layer, the master weights (array('h')) of each layer whose weights
learn, then its biases (array('i'), the model's own), and for batch > 1 the int32 gradient
sums of the unfinished mini-batch (so training resumes exactly where it stopped), plus the ints
[steps, n_correct, PRNG state, samples in the batch, mode id]. The int8 weights are not
stored: `load` recomputes them from the master weights ((m + 128) >> 8, clamped), and the
viper kernel's row constants with them. A checkpoint of another model (CRC), or of a mode or
batch kind (1 or > 1) that keeps other arrays (shape), is ignored with a reason; two modes
that keep the same arrays train the same parameters (one layer: "last" and "all"), so either
loads it. These methods allocate (a 256-byte buffer, small objects; `reset` decodes the model
file again); `step` never does.

Bound proof (the same formula as host/trainref.check_train_bounds; 2**30 - 1 = LIMIT):
|e| <= 256, |delta| <= 32768; |S| <= 127 * n_out * max|delta| (checked: refuses wide layers
below another hidden layer in "bias" / "all"); |T * D| <= 2**15 * 2**14; a trainable layer's
forward accumulator <= 127 * n_in * d + bias limit (d = max|x - zp_x|); per parameter the
batch sum g_max * batch, shifted left by max(-s, 0), plus the master weight (2**15) or the
bias limit, plus 1, stays <= LIMIT. The largest batch this allows is `max_batch`; a larger
batch raises ValueError.
"""

import struct
from array import array

from . import checkpoint, modelfile
from .fixedpoint import rounding_rshift
from .prng import seed_state, xorshift16

try:
    from . import kernel_train_viper
except Exception:  # CPython (no `micropython`), or a port without the native emitter
    kernel_train_viper = None

MODES = ("last", "bias", "all")
LIMIT = 0x3FFFFFFF
F_DELTA_OUT = 8  # output error: probability scale 2**-8
F_DELTA = 12  # hidden error signals: target fractional bits
DELTA_MAX = 32768  # |int16|
DEFAULT_LR_SHIFT = 7
MAX_HIDDEN_SHIFT = 30
_RELU = 1
_SIGMOID = 2
_TANH = 3
_ACTS = ("linear", "relu", "sigmoid", "tanh", "softmax")
_EMPTY = bytearray(0)  # stands for an absent buffer in a viper call (never read)


def _zeros(typecode, n, size):
    return array(typecode, bytes(n * size))


def input_range(layers, k):
    """(lo, hi) of the int8 values layer k reads (the previous layer's output range)."""
    if k == 0:
        return -128, 127
    prev = layers[k - 1]
    if prev["act"] == "relu":
        return max(prev["zp_z"], -128), 127
    t = prev["table"]
    if t is not None:
        return min(t), max(t)
    return -128, 127


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
        defaults = model.training or {}
        mode = defaults.get("learn", "last") if mode is None else mode
        lr_shift = defaults.get("lr_shift", DEFAULT_LR_SHIFT) if lr_shift is None else lr_shift
        batch = defaults.get("batch", 1) if batch is None else batch
        if hidden_shift is None:
            hidden_shift = defaults.get("hidden_shift", 0)
        if mode not in MODES:
            raise ValueError("train: mode %r, expected one of %s" % (mode, ", ".join(MODES)))
        if not isinstance(lr_shift, int) or not 0 <= lr_shift <= 30:
            raise ValueError("train: lr_shift %r, expected an int in 0..30" % (lr_shift,))
        if not isinstance(batch, int) or batch < 1:
            raise ValueError("train: batch %r, expected an int >= 1" % (batch,))
        if not isinstance(hidden_shift, int) or not 0 <= hidden_shift <= MAX_HIDDEN_SHIFT:
            raise ValueError(
                "train: hidden_shift %r, expected an int in 0..%d"
                % (hidden_shift, MAX_HIDDEN_SHIFT)
            )
        layers = model.layers
        if layers[-1]["act"] != "softmax":
            raise ValueError("train: last layer %r, expected softmax" % layers[-1]["act"])
        if kernel is None:
            kernel = model.kernel if kernel_train_viper is not None else "portable"
        if kernel not in ("portable", "viper"):
            raise ValueError("train: kernel %r, expected 'portable' or 'viper'" % (kernel,))
        if kernel == "viper" and kernel_train_viper is None:
            raise ValueError("train: kernel 'viper' unavailable on this port, use 'portable'")
        self.kernel = kernel
        self.model = model
        self.mode = mode
        self.lr_shift = lr_shift
        self.hidden_shift = hidden_shift
        self.batch = batch
        n = len(layers)
        self._n = n
        self._lowest = n - 1 if mode == "last" else 0  # lowest layer that gets an error signal
        self._w = [layer["w"] for layer in layers]
        self._inputs = [model.x] + model.layer_outputs[:-1]
        self._consts = model._consts if model._viper else None
        self._act = [_ACTS.index(layer["act"]) for layer in layers]
        self._set_scales(layers, lr_shift, hidden_shift)
        self.trains_w = [mode == "all" or (mode == "last" and k == n - 1) for k in range(n)]
        self.trains_b = [mode != "last" or k == n - 1 for k in range(n)]
        self._bias_limit = [0] * n
        self._dmax = [0] * n
        for k in range(n):
            lo, hi = input_range(layers, k)
            d = max(abs(lo - layers[k]["zp_x"]), abs(hi - layers[k]["zp_x"]))
            self._dmax[k] = d
            big = 0
            for v in layers[k]["b"]:
                big = max(big, abs(v))
            self._bias_limit[k] = max(127 * layers[k]["n_in"] * d, big)
        self.max_batch, stage = self._prove(layers)
        if batch > self.max_batch:
            raise ValueError(
                "train: batch %d over the proven maximum %d (%s)" % (batch, self.max_batch, stage)
            )
        self._alloc(layers)
        if kernel == "viper":
            self._viper_params(layers)
        self.seed = 1 if seed is None else seed
        self.state = seed_state(self.seed)
        self.model_path = model_path  # the model file: its CRC names the checkpoints
        self.model_crc = None if model_path is None else checkpoint.model_crc_of(model_path)
        self.prefix = prefix
        self.steps = 0
        self.n_correct = 0
        self._count = 0  # samples summed since the last update
        self.result = [0, 0]

    def _set_scales(self, layers, lr_shift, hidden_shift):
        """Error-signal scales f_d, backward shifts and update shifts, per layer (the layers
        below the last learn at 2**-(lr_shift + hidden_shift))."""
        n = self._n
        self.f_delta = [0] * n
        self._sback = [0] * n  # S of layer k + 1 -> T of layer k
        self._sw = [0] * n
        self._sb = [0] * n
        self.f_delta[n - 1] = F_DELTA_OUT
        for k in range(n - 2, -1, -1):
            f = layers[k + 1]["f_w"] + self.f_delta[k + 1]
            s = min(max(f - F_DELTA, 0), 24)
            self._sback[k] = s
            self.f_delta[k] = f - s
        for k in range(n):
            f_x, f_w = layers[k]["f_x"], layers[k]["f_w"]
            lr = lr_shift + hidden_shift if k < n - 1 else lr_shift
            self._sw[k] = lr + self.f_delta[k] + f_x - f_w - 8
            self._sb[k] = lr + self.f_delta[k] - f_x - f_w

    def _prove(self, layers):
        """(max_batch, its limiting stage); raises ValueError for a stage no batch can fix."""
        n = self._n
        best, stage = LIMIT, "no trainable parameter"
        for k in range(n):
            layer = layers[k]
            dmax = 256 if k == n - 1 else DELTA_MAX
            if self.trains_w[k] or self.trains_b[k]:
                acc = 127 * layer["n_in"] * self._dmax[k] + self._bias_limit[k]
                if acc > LIMIT:
                    _over("layer %d accumulator" % k, acc)
                z = 128 + (acc >> (layer["f_x"] + layer["f_w"] - layer["f_z"])) + 1
                if z > LIMIT:
                    _over("layer %d zp_z + R(acc, s)" % k, z)
            if k > self._lowest:
                s = 127 * layer["n_out"] * dmax
                if s > LIMIT:
                    _over("layer %d backward sum" % k, s)
            if self.trains_w[k]:
                per = (dmax * self._dmax[k]) << max(-self._sw[k], 0)
                cap = (LIMIT - DELTA_MAX - 1) // per
                if cap < 1:
                    _over("layer %d weight update" % k, per + DELTA_MAX + 1)
                if cap < best:
                    best, stage = cap, "layer %d weight update" % k
            if self.trains_b[k]:
                per = dmax << max(-self._sb[k], 0)
                cap = (LIMIT - self._bias_limit[k] - 1) // per
                if cap < 1:
                    _over("layer %d bias update" % k, per + self._bias_limit[k] + 1)
                if cap < best:
                    best, stage = cap, "layer %d bias update" % k
        return best, stage

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

    def step(self, raw, label):
        """int raw features, class index -> [predicted class, correct (0/1)], the same list
        every call. Forward, error signals, gradients; updates every `batch` steps."""
        m = self.model
        if label < 0 or label >= m.n_outputs:
            raise ValueError("train: label %d, expected 0..%d" % (label, m.n_outputs - 1))
        m.input_stage(raw)
        m.forward()
        cls = m.classify()
        if self.kernel == "viper":
            self._learn_viper(label)
        else:
            self._learn_portable(label)
        correct = 1 if cls == label else 0
        self.steps += 1
        self.n_correct += correct
        self.result[0] = cls
        self.result[1] = correct
        return self.result

    def _learn_viper(self, label):
        """`_learn_portable` with kernel_train_viper: one native call per layer and stage, the
        weights and biases of a layer in the same call, each given the layer's buffer table
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

    def _learn_portable(self, label):
        """Output error, error signals, gradient sums or update, in plain Python."""
        self._output_error(label)
        for k in range(self._n - 1, self._lowest, -1):
            self._backward(k)
        self._count += 1
        update = self._count >= self.batch
        for k in range(self._n):
            if self.trains_w[k]:
                if update:
                    self._update_weights(k)
                else:
                    self._sum_weights(k)
            if self.trains_b[k]:
                if update:
                    self._update_biases(k)
                else:
                    self._sum_biases(k)
        if update:
            self._count = 0

    def _output_error(self, label):
        """softmax scores (q + 128, 0..255) -> e_j = scores_j - 256 [j == label], scale 2**-8."""
        scores = self.model.scores
        d = self.delta[self._n - 1]
        for j in range(len(d)):
            d[j] = scores[j]
        d[label] -= 256

    def _backward(self, k):
        """int16 delta(k) -> int16 delta(k - 1): W^T delta, shift, clamp, times the derivative
        of layer k - 1's activation (see the module docstring for the scales)."""
        w = self._w[k]
        d = self.delta[k]
        out = self.delta[k - 1]
        y = self._inputs[k]  # layer k - 1's output
        n_in = len(out)
        n_out = len(d)
        s = self._sback[k - 1]
        act = self._act[k - 1]
        zp = self.model.layers[k - 1]["zp_z"]
        for i in range(n_in):
            acc = 0
            idx = i
            for j in range(n_out):
                acc += w[idx] * d[j]
                idx += n_in
            t = rounding_rshift(acc, s)
            if t < -32768:
                t = -32768
            elif t > 32767:
                t = 32767
            if act == _RELU:
                if y[i] <= zp:
                    t = 0
            elif act == _SIGMOID:
                p = y[i]
                t = rounding_rshift(t * ((p + 128) * (128 - p)), 16)
            elif act == _TANH:
                a = y[i]
                t = rounding_rshift(t * (16384 - a * a), 14)
            out[i] = t

    def _sum_weights(self, k):
        """gw[j][i] += delta_j * (x_i - zp_x), int32."""
        g = self._gw[k]
        d = self.delta[k]
        x = self._inputs[k]
        zp_x = self.model.layers[k]["zp_x"]
        n_in = len(x)
        idx = 0
        for j in range(len(d)):
            dj = d[j]
            for i in range(n_in):
                g[idx] += dj * (x[i] - zp_x)
                idx += 1

    def _sum_biases(self, k):
        """gb[j] += delta_j, int32."""
        g = self._gb[k]
        d = self.delta[k]
        for j in range(len(d)):
            g[j] += d[j]

    def _update_weights(self, k):
        """master_w -= SR(gw + delta x, sw); int8 w = clamp((master + 128) >> 8); gw = 0."""
        gw = self._gw[k]
        d = self.delta[k]
        x = self._inputs[k]
        mw = self.master_w[k]
        w = self._w[k]
        zp_x = self.model.layers[k]["zp_x"]
        s = self._sw[k]
        t = s if s < 16 else 16
        r_shift = 16 - t
        f_shift = s - t
        mask = (1 << t) - 1 if s > 0 else 0
        c = None if self._consts is None else self._consts[k]
        cz = -(128 + zp_x)
        st = self.state
        n_in = len(x)
        idx = 0
        for j in range(len(d)):
            dj = d[j]
            total = 0
            for i in range(n_in):
                g = dj * (x[i] - zp_x)
                if gw is not None:
                    g += gw[idx]
                    gw[idx] = 0
                if s > 0:
                    st = xorshift16(st)
                    u = g >> s
                    if ((g >> f_shift) & mask) > ((st - 1) >> r_shift):
                        u += 1
                else:
                    u = g << -s
                v = mw[idx] - u
                if v < -32768:
                    v = -32768
                elif v > 32767:
                    v = 32767
                mw[idx] = v
                v = (v + 128) >> 8
                if v < -127:
                    v = -127
                elif v > 127:
                    v = 127
                w[idx] = v
                total += v
                idx += 1
            if c is not None:  # the viper kernel's row constant -(128 + zp_x) * sum_i w_ji
                c[j] = cz * total
        self.state = st

    def _update_biases(self, k):
        """b -= SR(gb + delta, sbias), clamped to +/- the bias limit; gb = 0."""
        gb = self._gb[k]
        d = self.delta[k]
        b = self.master_b[k]
        lim = self._bias_limit[k]
        s = self._sb[k]
        t = s if s < 16 else 16
        r_shift = 16 - t
        f_shift = s - t
        mask = (1 << t) - 1 if s > 0 else 0
        st = self.state
        for j in range(len(d)):
            g = d[j]
            if gb is not None:
                g += gb[j]
                gb[j] = 0
            if s > 0:
                st = xorshift16(st)
                u = g >> s
                if ((g >> f_shift) & mask) > ((st - 1) >> r_shift):
                    u += 1
            else:
                u = g << -s
            v = b[j] - u
            if v < -lim:
                v = -lim
            elif v > lim:
                v = lim
            b[j] = v
        self.state = st

    def accuracy(self):
        """Percent of correct predictions so far, 0..100 (integer, rounded down)."""
        return 100 * self.n_correct // self.steps if self.steps else 0

    # -- persistence (allocates; never called by step) --------------------------------------------

    def _state(self):
        """(arrays, ints) of a checkpoint; see the module docstring for the order."""
        arrays = []  # type: list
        for k in range(self._n):
            if self.trains_w[k]:
                arrays.append(self.master_w[k])
            if self.trains_b[k]:
                arrays.append(self.master_b[k])
        for k in range(self._n):
            if self._gw[k] is not None:
                arrays.append(self._gw[k])
            if self._gb[k] is not None:
                arrays.append(self._gb[k])
        ints = [self.steps, self.n_correct, self.state, self._count, MODES.index(self.mode)]
        return arrays, ints

    def _crc(self):
        if self.model_crc is None:
            raise ValueError("train: no model file given (model_path), needed for checkpoints")
        return self.model_crc

    def save(self, prefix=None):
        """Write the training state as the newest checkpoint -> (slot path, sequence number)."""
        prefix = self.prefix if prefix is None else prefix
        arrays, ints = self._state()
        seq = checkpoint.save(prefix, self._crc(), arrays, ints)
        return slot_of(prefix, seq), seq

    def load(self, prefix=None):
        """Load the newest valid checkpoint of this model, mode and batch kind -> (seq or None,
        [(slot path, reason), ...] ignored). Nothing changes when seq is None; a slot that fails
        while it is read leaves the exported weights (reset without clearing) and raises."""
        prefix = self.prefix if prefix is None else prefix
        arrays, ints = self._state()
        try:
            seq, ignored = checkpoint.load(prefix, self._crc(), arrays, ints)
        except OSError:
            self._restore()
            raise
        if seq is None:
            return None, ignored
        self.steps, self.n_correct, self._count = ints[0], ints[1], ints[3]
        self.state = ints[2] if 1 <= ints[2] <= 0xFFFF else seed_state(ints[2])
        for k in range(self._n):
            if self.trains_w[k]:
                _round_master(self.master_w[k], self._w[k])
                self._refresh_consts(k)
        return seq, ignored

    def reset(self, prefix=None):
        """Back to the exported weights: re-read the model file's weights and biases, master
        weights from them, gradient sums, counters and PRNG from the seed; clear the slots."""
        self._restore()
        checkpoint.clear(self.prefix if prefix is None else prefix)

    def _restore(self):
        """Exported weights and biases (from the model file) into the live arrays; state reset."""
        crc = checkpoint.model_crc_of(self.model_path) if self.model_path else None
        if crc is None or crc != self._crc():
            raise ValueError(
                "train: model file %s changed since start (crc 0x%08x, expected 0x%08x)"
                % (self.model_path, crc or 0, self._crc())
            )
        layers = modelfile.load(self.model_path)["layers"]
        for k in range(self._n):
            live = self.model.layers[k]
            w, b = layers[k]["w"], layers[k]["b"]
            if len(w) != len(live["w"]) or len(b) != len(live["b"]):
                raise ValueError("train: layer %d of %s differs in size" % (k, self.model_path))
            _copy(w, live["w"])
            _copy(b, live["b"])
            mw = self.master_w[k]
            if mw is not None:
                for i in range(len(w)):
                    mw[i] = w[i] * 256
            for g in (self._gw[k], self._gb[k]):
                if g is not None:
                    for i in range(len(g)):
                        g[i] = 0
            self._refresh_consts(k)
        self.state = seed_state(self.seed)
        self.steps = 0
        self.n_correct = 0
        self._count = 0

    def _refresh_consts(self, k):
        """The viper forward kernel's row constants of layer k, after its weights changed."""
        if self._consts is None:
            return
        c = self._consts[k]
        w = self._w[k]
        n_in = self.model.layers[k]["n_in"]
        cz = -(128 + self.model.layers[k]["zp_x"])
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


def _round_master(mw, w):
    """int16 master weights -> int8 weights: (m + 128) >> 8, clamped to [-127, 127]."""
    for i in range(len(mw)):
        v = (mw[i] + 128) >> 8
        w[i] = -127 if v < -127 else (127 if v > 127 else v)


def _or_empty(buf):
    return _EMPTY if buf is None else buf


def _copy(src, dst):
    for i in range(len(src)):
        dst[i] = src[i]


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


def _over(stage, value):
    raise ValueError("train: %s may reach %d, over 2**30 - 1" % (stage, value))
