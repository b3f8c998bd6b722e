"""The plan of on-board training: what learns, the scales and shifts, and the bound proof.

Runs on: board and host (MicroPython >= 1.22; also CPython). Used by device/train.py's
Trainer when it is made; the same formulas as host/trainref.py (`check_train_bounds`).

Per layer k (the integers themselves are written out in device/train_portable.py):

- what learns, by mode: "last" the last layer's weights and biases, "bias" every layer's
  biases, "all" everything; error signals reach down to the lowest layer that learns.
- error-signal scale f_d(k) (8 at the output), the backward shift sb(k) from layer k + 1 to
  layer k, and the update shifts sw (weights) and sbias of each layer.
- d = max|x - zp_x| over the int8 inputs the layer can read, and the bias limit
  max(127 * n_in * d, max|b| at start) (host/bounds.bias_limit).

A layer whose weights learn must read something besides its zero point (`zero_input`): when
every value it can read is zp_x, x - zp_x is 0 for every input, its weights neither act nor
learn, d = 0 and the weight-update bound below would divide by it. That is a relu below with
zero point 127 (its outputs are clamped to [127, 127]), a sigmoid / tanh table holding only
the zero point, or, for layer 0, an input stage whose every mult is 0 (each input is zp_in).
The Trainer refuses such a layer in the modes that train its weights ("last" for the last
layer, "all"); "bias" trains no weights and has nothing to divide. host/trainref.py and the
exporter's proof (host/bounds.py) apply the same rule through `zero_input`.

Bound proof (2**30 - 1 = LIMIT): |e| <= 256, |delta| <= 32768; |S| <= 127 * n_out * max|delta|
(checked: refuses wide layers below another hidden layer in "bias" / "all"); |T * D| <= 2**15 *
2**14; a trainable layer's forward accumulator <= 127 * n_in * d + bias limit; per parameter
the batch sum g_max * batch, shifted left by max(-s, 0), plus the master weight (2**15) or the
bias limit, plus 1, stays <= LIMIT. The largest batch this allows is the Trainer's
`max_batch`; a larger batch raises ValueError.
"""

from .config import LEARN

LEARN_MODES = LEARN[1:]  # the trainer's modes: board.json "learn" but "off"
LIMIT = 0x3FFFFFFF
F_DELTA_OUT = 8  # output error: probability scale 2**-8
F_DELTA = 12  # hidden error signals: target fractional bits
DELTA_MAX = 32768  # |int16|


def learns(mode, n):
    """(trains_w, trains_b, lowest) of `mode` on n layers: per layer whether its weights and
    biases learn, and the lowest layer that gets an error signal."""
    trains_w = [mode == "all" or (mode == "last" and k == n - 1) for k in range(n)]
    trains_b = [mode != "last" or k == n - 1 for k in range(n)]
    return trains_w, trains_b, (n - 1 if mode == "last" else 0)


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


def zero_input(layers, k, mult):
    """Why every int8 value layer k reads is its zero point zp_x, or None when it can read
    another value; `mult` is the input stage's multipliers (layer 0 reads zp_in when all are
    0; zp_in = layer 0's zp_x, as the model file checks)."""
    zp = layers[k]["zp_x"]
    if k == 0:
        for m in mult:
            if m:
                return None
        return "every input stage mult is 0"
    lo, hi = input_range(layers, k)
    if lo != zp or hi != zp:
        return None
    below = layers[k - 1]
    if below["act"] == "relu":
        return "zero point %d after relu" % zp
    return "%s table of %d only" % (below["act"], zp)


def check_inputs(layers, mult, trains_w):
    """Raise ValueError for a layer whose weights learn but whose inputs are all its zero point
    (see the module docstring: nothing to learn from, and d = 0 in the proof)."""
    for k in range(len(layers)):
        if trains_w[k]:
            why = zero_input(layers, k, mult)
            if why is not None:
                raise ValueError(
                    "train: layer %d input takes one value (%s): nothing to learn from" % (k, why)
                )


def input_limits(layers):
    """(dmax, bias_limit) per layer: max|x - zp_x| of its int8 inputs and the int32 bias
    limit max(127 * n_in * dmax, max|b|)."""
    n = len(layers)
    dmax = [0] * n
    bias_limit = [0] * n
    for k in range(n):
        lo, hi = input_range(layers, k)
        d = max(abs(lo - layers[k]["zp_x"]), abs(hi - layers[k]["zp_x"]))
        dmax[k] = d
        big = 0
        for v in layers[k]["b"]:
            big = max(big, abs(v))
        bias_limit[k] = max(127 * layers[k]["n_in"] * d, big)
    return dmax, bias_limit


def scales(layers, lr_shift, hidden_shift):
    """(f_delta, sback, sw, sb) per layer: error-signal scales, backward shifts (S of layer
    k + 1 -> T of layer k), weight and bias update shifts (the layers below the last learn at
    2**-(lr_shift + hidden_shift))."""
    n = len(layers)
    f_delta = [0] * n
    sback = [0] * n
    sw = [0] * n
    sb = [0] * n
    f_delta[n - 1] = F_DELTA_OUT
    for k in range(n - 2, -1, -1):
        f = layers[k + 1]["f_w"] + f_delta[k + 1]
        s = min(max(f - F_DELTA, 0), 24)
        sback[k] = s
        f_delta[k] = f - s
    for k in range(n):
        f_x, f_w = layers[k]["f_x"], layers[k]["f_w"]
        lr = lr_shift + hidden_shift if k < n - 1 else lr_shift
        sw[k] = lr + f_delta[k] + f_x - f_w - 8
        sb[k] = lr + f_delta[k] - f_x - f_w
    return f_delta, sback, sw, sb


def prove(t, layers):
    """(max_batch, its limiting stage) of Trainer `t` with its plan set; raises ValueError for
    a stage no batch can fix, or for a layer whose weights learn from one value."""
    check_inputs(layers, t.model._stage[1], t.trains_w)
    n = len(layers)
    best, stage = LIMIT, "no trainable parameter"
    for k in range(n):
        layer = layers[k]
        dmax = 256 if k == n - 1 else DELTA_MAX
        if t.trains_w[k] or t.trains_b[k]:
            acc = 127 * layer["n_in"] * t._dmax[k] + t._bias_limit[k]
            if acc > LIMIT:
                _over("layer %d accumulator" % k, acc)
            z = 128 + (acc >> (layer["f_x"] + layer["f_w"] - layer["f_z"])) + 1
            if z > LIMIT:
                _over("layer %d zp_z + R(acc, s)" % k, z)
        if k > t._lowest:
            s = 127 * layer["n_out"] * dmax
            if s > LIMIT:
                _over("layer %d backward sum" % k, s)
        if t.trains_w[k]:
            per = (dmax * t._dmax[k]) << max(-t._sw[k], 0)
            cap = (LIMIT - DELTA_MAX - 1) // per
            if cap < 1:
                _over("layer %d weight update" % k, per + DELTA_MAX + 1)
            if cap < best:
                best, stage = cap, "layer %d weight update" % k
        if t.trains_b[k]:
            per = dmax << max(-t._sb[k], 0)
            cap = (LIMIT - t._bias_limit[k] - 1) // per
            if cap < 1:
                _over("layer %d bias update" % k, per + t._bias_limit[k] + 1)
            if cap < best:
                best, stage = cap, "layer %d bias update" % k
    return best, stage


def _over(stage, value):
    raise ValueError("train: %s may reach %d, over 2**30 - 1" % (stage, value))
