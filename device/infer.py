"""Inference on the board: model file -> input stage -> int8 dense layers -> class and scores.

Runs on: board and host (MicroPython >= 1.22; the portable kernel also runs under CPython).

    model = Model("model.mpm")             # or Model(bytes), kernel="portable" / "viper"
    cls, scores = model.predict(raw)       # raw: the window's integer features

Buffers are made once in the constructor; `predict`, `forward` and `input_stage` allocate
nothing (they run inside `micropython.heap_lock()`). `predict` returns the same list
[class_index, scores] on every call, `scores` being an array('B') of 0..255. Every layer's
int8 output stays readable in `model.layer_outputs` (the logits, for a softmax layer). The
on-board trainer (device/train.py) learns `model.layers`' weights and biases in place and keeps
the viper kernel's row constants `model.consts` in step; it reads the input stage's
multipliers in `model.stage` (offset, mult, shift).

Two kernels give identical integers: the plain Python code here (`dense_portable`, and the
loops of `input_stage` and `classify`) and `device/kernel_viper.py` (native code, `run`: the
input stage, the layers and the classifier in one call), picked when the port compiles viper.
With it, `predict`, `input_stage`, `forward` and `classify` are each one native call, and
their bytecode frames stay within the 11 words that MicroPython keeps on the C stack (a larger
frame is allocated and freed on the heap at every call); the portable code is in functions of
its own for that reason.
"""

from array import array

from .fixedpoint import rounding_rshift
from .modelfile import RELU, SIGMOID, TANH  # activation ids

try:
    from . import kernel_viper
except Exception:  # CPython (no `micropython`), or a port without the native emitter
    kernel_viper = None

_NO_TABLE = bytearray(1)


def dense_portable(x, w, b, y, p, t):
    """int8 x (n_in) -> int8 y (n_out): acc = w.(x - zp_x) + b, z = clamp(zp_z + R(acc, s)),
    then the activation. TFLite rounding, saturated. Products are summed first, then the bias.

    p: (n_in, n_out, zp_x, s, zp_z, act id); t: the 256-entry int8 table of sigmoid / tanh.
    """
    n_in = p[0]
    zp_x = p[2]
    s = p[3]
    zp_z = p[4]
    act = p[5]
    k = 0
    for j in range(p[1]):
        acc = 0
        for i in range(n_in):
            acc += w[k + i] * (x[i] - zp_x)
        k += n_in
        z = zp_z + rounding_rshift(acc + b[j], s)
        if z < -128:
            z = -128
        elif z > 127:
            z = 127
        if act == RELU:
            if z < zp_z:
                z = zp_z
        elif act == SIGMOID or act == TANH:
            z = t[z + 128]
        y[j] = z


def _zeros(typecode, n, size):
    return array(typecode, bytes(n * size))


class Model:
    """A quantized MLP loaded from a model file: a path (read in small pieces straight into
    the arrays kept, see modelfile.load), or its bytes."""

    def __init__(self, source, kernel=None):
        # the module is not kept (only the ids above): a board that only predicts can drop
        # the loader once the model is in (device/board.py), about 10 KB of heap
        from . import modelfile

        if isinstance(source, str):
            m = modelfile.load(source)
        else:
            m = modelfile.decode(source)
        if kernel is None:
            kernel = "portable" if kernel_viper is None else "viper"
        if kernel not in ("portable", "viper"):
            raise ValueError("infer: kernel %r, expected 'portable' or 'viper'" % (kernel,))
        if kernel == "viper" and kernel_viper is None:
            raise ValueError("infer: kernel 'viper' unavailable on this port, use 'portable'")
        self.kernel = kernel
        self._viper = kernel == "viper"
        self.sensor = m["sensor"]
        self.features = m["features"]
        self.classes = m["classes"]
        self.training = m["training"]
        self.layers = m["layers"]
        inp = m["input"]
        self.f_in = inp["f_in"]
        self.zp_in = inp["zp_in"]
        self.stage = (inp["offset"], inp["mult"], inp["shift"])  # the input stage, per feature
        self.n_inputs = len(inp["offset"])
        self.n_outputs = self.layers[-1]["n_out"]
        self._exp = m["softmax_exp"]
        self.x = _zeros("b", self.n_inputs, 1)
        self.layer_outputs = []
        self._params = []
        self._tables = []
        self.consts = []  # viper: per layer, array('i') of row constants (_row_constants)
        widest = 1  # the viper kernel's scratch: the widest n_in
        for layer in self.layers:
            self.layer_outputs.append(_zeros("b", layer["n_out"], 1))
            s = layer["f_x"] + layer["f_w"] - layer["f_z"]
            act = modelfile.ACTIVATIONS.index(layer["act"])
            self._params.append(
                array("h", [layer["n_in"], layer["n_out"], layer["zp_x"], s, layer["zp_z"], act])
            )
            self._tables.append(_NO_TABLE if layer["table"] is None else layer["table"])
            if self._viper:
                self.consts.append(_row_constants(layer))
            widest = max(widest, layer["n_in"])
        self.scores = _zeros("B", self.n_outputs, 1)
        self.result = [0, self.scores]
        if self._viper:
            self._table = self._viper_table(widest)

    def _viper_table(self, widest):
        """The addresses of the buffers kernel_viper.run reads (kernel_viper.table)."""
        soft = self._exp is not None
        sizes = (len(self.layers), self.n_inputs, self.zp_in, self.n_outputs, 1 if soft else 0)
        self._sizes = array("h", sizes)
        buffers = [self._sizes] + list(self.stage)
        buffers += (self._exp if soft else _NO_TABLE, self.scores, bytearray(widest))
        x = self.x
        for k in range(len(self.layers)):
            layer, y = self.layers[k], self.layer_outputs[k]
            buffers += (x, layer["w"], layer["b"], self.consts[k], y)
            buffers += (self._params[k], self._tables[k])
            x = y
        return kernel_viper.table(buffers)

    def input_stage(self, raw):
        """int raw features -> int8 inputs in self.x: clamp(zp_in + R((r - offset) * mult,
        shift)), TFLite rounding, saturated."""
        if len(raw) != self.n_inputs:
            raise ValueError("infer: %d raw features, expected %d" % (len(raw), self.n_inputs))
        if self._viper:
            kernel_viper.run(0, 0, self._table, raw, kernel_viper.INPUT_STAGE)
        else:
            self._input_stage_portable(raw)
        return self.x

    def forward(self, x_q=None):
        """int8 layer-0 inputs (default: self.x, as set by input_stage) -> the last layer's
        output array (the logits for softmax); every layer's output is in layer_outputs."""
        if x_q is not None and x_q is not self.x:
            self._copy_inputs(x_q)
        if self._viper:
            kernel_viper.run(0, 0, self._table, None, kernel_viper.LAYERS)
        else:
            self._forward_portable()
        return self.layer_outputs[-1]

    def classify(self):
        """Last layer's output -> class index (argmax, ties to the lower index); fills scores:
        softmax probabilities + 128 (or the int8 outputs + 128 without softmax)."""
        if self._viper:
            return kernel_viper.run(0, 0, self._table, None, kernel_viper.CLASSIFY)
        return self._classify_portable()

    def predict(self, raw):
        """int raw features -> [class_index, scores]: the same list every call."""
        if not self._viper:
            self.input_stage(raw)
            self._forward_portable()
            self.result[0] = self._classify_portable()
            return self.result
        if len(raw) != self.n_inputs:
            raise ValueError("infer: %d raw features, expected %d" % (len(raw), self.n_inputs))
        self.result[0] = kernel_viper.run(0, 0, self._table, raw, kernel_viper.PREDICT)
        return self.result

    # the portable kernel's steps

    def _copy_inputs(self, x_q):
        x, n = self.x, self.n_inputs
        if len(x_q) != n:
            raise ValueError("infer: %d inputs, expected %d" % (len(x_q), n))
        for i in range(n):
            x[i] = x_q[i]

    def _input_stage_portable(self, raw):
        x = self.x
        offset, mult, shift = self.stage
        zp = self.zp_in
        for i in range(self.n_inputs):
            q = zp + rounding_rshift((raw[i] - offset[i]) * mult[i], shift[i])
            if q < -128:
                q = -128
            elif q > 127:
                q = 127
            x[i] = q

    def _forward_portable(self):
        x = self.x
        outs = self.layer_outputs
        for k in range(len(outs)):
            layer = self.layers[k]
            dense_portable(x, layer["w"], layer["b"], outs[k], self._params[k], self._tables[k])
            x = outs[k]

    def _classify_portable(self):
        z = self.layer_outputs[-1]
        k = self.n_outputs
        scores, e = self.scores, self._exp
        best = 0
        m = z[0]
        for j in range(1, k):
            if z[j] > m:
                m = z[j]
                best = j
        if e is None:
            for j in range(k):
                scores[j] = z[j] + 128
            return best
        total = 0
        for j in range(k):
            total += e[m - z[j]]
        half = total >> 1
        for j in range(k):
            # clamp((e*256 + S//2) // S - 128, -128, 127) + 128; the quotient is never < 0.
            p = (e[m - z[j]] * 256 + half) // total
            scores[j] = 255 if p > 255 else p
        return best


def _row_constants(layer):
    """array('i') of -(128 + zp_x) * sum_i w_ji per row, for the viper kernel."""
    w, n_in = layer["w"], layer["n_in"]
    c = _zeros("i", layer["n_out"], 4)
    k = 0
    for j in range(layer["n_out"]):
        total = 0
        for i in range(n_in):
            total += w[k + i]
        k += n_in
        c[j] = -(128 + layer["zp_x"]) * total
    return c
