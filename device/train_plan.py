"""The plan of on-board training: what learns, the scales and shifts, and the bound proof.

Runs on: board and host (MicroPython >= 1.22; also CPython). Used by device/train.py's
Trainer when it is made (each of its Layers keeps its part); the same formulas as
host/trainref.py (`train_plan`, `check_train_bounds`).

    trains_w, trains_b, lowest = learns("bias", 3)      # which layers learn what, per mode
    p = plan(model.layers, "all", lr_shift, hidden_shift)  # one dict per layer
    max_batch, stage = prove(model.layers, p)           # or ValueError naming the stage

Per layer k (`plan`; the integers themselves are written out in device/train_portable.py):

- what learns, by mode: "last" the last layer's weights and biases, "bias" every layer's
  biases, "all" everything; error signals reach down to the lowest layer that learns.
- error-signal scale f_delta(k) (8 at the output), the backward shift sback(k) from layer
  k + 1 to layer k, and the update shifts sw (weights) and sb (biases) of each layer.
- dmax = max|x - zp_x| over the int8 inputs the layer can read, and the bias limit
  max(127 * n_in * dmax, max|b| at start) (host/bounds.bias_limit).

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
bias limit, plus 1, stays <= LIMIT. The largest batch this allows (`prove`) is the Trainer's
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
    biases learn, and the lowest layer that gets an error signal. Every layer from `lowest` up
    learns its biases (train_portable.Layer relies on it)."""
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


def input_dmax(layers, k):
    """max|x - zp_x| over the int8 values x that layer k reads."""
    lo, hi = input_range(layers, k)
    zp_x = layers[k]["zp_x"]
    return max(abs(lo - zp_x), abs(hi - zp_x))


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


def plan(layers, mode, lr_shift, hidden_shift):
    """Per layer (model layer dicts `layers`), a dict of what it learns and how, the keys of
    host/trainref.train_plan: trains_w, trains_b, has_delta (it gets an error signal),
    f_delta, sback (the shift of the error signal from the layer above into this one), sw, sb
    (update shifts; the layers below the last learn at 2**-(lr_shift + hidden_shift)), dmax
    (max|x - zp_x| of its int8 inputs), bias_limit (max(127 * n_in * dmax, max|b|)) and
    delta_max (max|delta|: 256 at the output, DELTA_MAX below)."""
    n = len(layers)
    trains_w, trains_b, lowest = learns(mode, n)
    out = [None] * n  # type: list
    f_delta = F_DELTA_OUT
    sback = 0
    for k in range(n - 1, -1, -1):
        layer = layers[k]
        if k < n - 1:  # the error signal of layer k + 1, W^T delta, shifted back into int16
            f = layers[k + 1]["f_w"] + f_delta
            sback = min(max(f - F_DELTA, 0), 24)
            f_delta = f - sback
        dmax = input_dmax(layers, k)
        big = 0
        for v in layer["b"]:
            big = max(big, abs(v))
        f_x, f_w = layer["f_x"], layer["f_w"]
        lr = lr_shift + hidden_shift if k < n - 1 else lr_shift
        out[k] = {
            "trains_w": trains_w[k],
            "trains_b": trains_b[k],
            "has_delta": k >= lowest,
            "f_delta": f_delta,
            "sback": sback,
            "sw": lr + f_delta + f_x - f_w - 8,
            "sb": lr + f_delta - f_x - f_w,
            "dmax": dmax,
            "bias_limit": max(127 * layer["n_in"] * dmax, big),
            "delta_max": 256 if k == n - 1 else DELTA_MAX,
        }
    return out


def prove(layers, plan):
    """(max_batch, its limiting stage) of training model layers `layers` by `plan`; raises
    ValueError for a stage no batch can fix."""
    best, stage = LIMIT, "no trainable parameter"
    for k in range(len(layers)):
        layer, p = layers[k], plan[k]
        if p["trains_w"] or p["trains_b"]:
            acc = 127 * layer["n_in"] * p["dmax"] + p["bias_limit"]
            if acc > LIMIT:
                _over("layer %d accumulator" % k, acc)
            z = 128 + (acc >> (layer["f_x"] + layer["f_w"] - layer["f_z"])) + 1
            if z > LIMIT:
                _over("layer %d zp_z + R(acc, s)" % k, z)
        if k > 0 and plan[k - 1]["has_delta"]:
            s = 127 * layer["n_out"] * p["delta_max"]
            if s > LIMIT:
                _over("layer %d backward sum" % k, s)
        if p["trains_w"]:
            per = (p["delta_max"] * p["dmax"]) << max(-p["sw"], 0)
            cap = (LIMIT - DELTA_MAX - 1) // per
            if cap < 1:
                _over("layer %d weight update" % k, per + DELTA_MAX + 1)
            if cap < best:
                best, stage = cap, "layer %d weight update" % k
        if p["trains_b"]:
            per = p["delta_max"] << max(-p["sb"], 0)
            cap = (LIMIT - p["bias_limit"] - 1) // per
            if cap < 1:
                _over("layer %d bias update" % k, per + p["bias_limit"] + 1)
            if cap < best:
                best, stage = cap, "layer %d bias update" % k
    return best, stage


def _over(stage, value):
    raise ValueError("train: %s may reach %d, over 2**30 - 1" % (stage, value))
