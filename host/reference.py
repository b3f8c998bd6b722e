"""NumPy integer reference of the board's inference: input stage, dense layers, softmax.

Runs on: host.

Exactly the per-layer semantics of `host/qmodel.py` (the numeric contract of ../DESIGN.md),
vectorised over samples. Every intermediate value is checked against the 31-bit small-int range
of 32-bit MicroPython ports; leaving it raises `fixedpoint.BoundError`. Dense partial sums are
bounded by sum_i |w_ji| * |x_i - zp_x| (the board sums the products first, then adds the bias),
so checking that bound covers every partial sum in any order.
"""

import numpy as np

from .fixedpoint import check_small, clamp_int8, rounding_rshift
from .inputstage import InputStage
from .qmodel import ACTIVATIONS, SIGMOID_OUT, TANH_OUT, QLayer, QModel

EXP_ONE = 1 << 16


def input_stage(qmodel, raw):
    """int raw features (n, F) -> int8 layer-0 inputs (n, F), TFLite rounding, saturated."""
    raw = check_small(np.asarray(raw, dtype=np.int64), "raw features")
    return qmodel.input_stage.apply(raw)


def dense(layer, x_q, k=0):
    """int8 inputs (n, n_in) -> (int8 pre-activation z, int8 output y), both (n, n_out).

    acc = sum_i w[j][i] * (x_i - zp_x) + b_j, z = clamp(zp_z + R(acc, s)), s = f_x + f_w - f_z.
    """
    where = "layer %d" % k
    x = np.asarray(x_q, dtype=np.int64)
    if x.ndim != 2 or x.shape[1] != layer.n_in:
        raise ValueError(
            "reference: %s expected inputs of shape (n, %d), found %s"
            % (where, layer.n_in, x.shape)
        )
    d = x - layer.zp_x
    check_small(np.abs(d) @ np.abs(layer.w).T, where + " partial sums")
    acc = check_small(d @ layer.w.T + layer.b, where + " accumulator")
    r = rounding_rshift(acc, layer.shift)
    z = clamp_int8(check_small(layer.zp_z + r, where + " zp_z + R(acc, s)"))
    if layer.act in ("linear", "softmax"):
        y = z
    elif layer.act == "relu":
        y = np.maximum(z, layer.zp_z)
    elif layer.act in ("sigmoid", "tanh"):
        y = np.asarray(layer.table, dtype=np.int64)[z + 128]
    else:
        raise ValueError(
            "reference: %s activation %r, expected one of %s" % (where, layer.act, ACTIVATIONS)
        )
    return z, y


def forward_layers(qmodel, x_q):
    """int8 layer-0 inputs (n, n_in) -> list of int64 (n, n_out) per layer: the output y after
    the activation, and for a softmax layer its logits z."""
    outs = []
    x = np.asarray(x_q, dtype=np.int64)
    for k, layer in enumerate(qmodel.layers):
        _, x = dense(layer, x, k)
        outs.append(x)
    return outs


def softmax_q(qmodel, logits):
    """int8 logits (n, k) -> int8 probabilities (n, k), scale 1/256, zero point -128.

    e_j = softmax_exp[max - z_j] (Q16), S = sum_j e_j, p_j = clamp((e_j*256 + S//2) // S - 128).
    """
    z = np.asarray(logits, dtype=np.int64)
    table = np.asarray(qmodel.softmax_exp, dtype=np.int64)
    e = table[z.max(axis=1, keepdims=True) - z]
    s = check_small(e.sum(axis=1, keepdims=True), "softmax sum")
    num = check_small(e * 256 + (s >> 1), "softmax numerator")
    return clamp_int8(num // s - 128)


def predict(qmodel, raw_features):
    """int raw features (n, F) -> (class index (n,), scores (n, k) in 0..255).

    The class is the argmax of the last layer's output (the logits for softmax), ties to the
    lower index. Scores are the softmax probabilities + 128, or the last layer's int8 output
    + 128 for the other activations.
    """
    cls, scores, _ = classify(qmodel, input_stage(qmodel, raw_features))
    return cls, scores


def classify(qmodel, x_q):
    """int8 inputs (n, F) -> (class index (n,), scores (n, k) in 0..255, [each layer's int8
    output (n, units)]): `predict` after the input stage, with the layer outputs."""
    outs = forward_layers(qmodel, x_q)
    y = outs[-1]
    cls = np.argmax(y, axis=1)
    if qmodel.layers[-1].act == "softmax":
        return cls, softmax_q(qmodel, y) + 128, outs
    return cls, y + 128, outs


# --- random models within the contract, for parity tests ---


def _table(act, f_z, zp_z):
    """int8 table for sigmoid / tanh over z = -128..127 (float-derived, for tests)."""
    z = (np.arange(-128, 128) - zp_z) * 2.0**-f_z
    if act == "sigmoid":
        f_y, zp_y = SIGMOID_OUT
        v = 0.5 * (1 + np.tanh(z / 2))
    else:
        f_y, zp_y = TANH_OUT
        v = np.tanh(z)
    return np.clip(np.floor(v * 2.0**f_y + 0.5) + zp_y, -128, 127).astype(np.int64)


def softmax_table(f_z):
    """Q16 table of exp(-d * 2**-f_z) for d = 0..255; entry 0 is 2**16."""
    d = np.arange(256)
    return np.floor(EXP_ONE * np.exp(-d * 2.0**-f_z) + 0.5).astype(np.int64)


def _random_layer(rng, n_in, n_out, act, f_x, zp_x):
    style = rng.integers(4)
    if style == 0:  # full range
        w = rng.integers(-127, 128, size=(n_out, n_in))
    elif style == 1:  # mostly small, some saturated
        w = np.clip(np.round(rng.normal(0, 30, size=(n_out, n_in))), -127, 127)
    elif style == 2:  # extremes only
        w = rng.choice([-127, 0, 127], size=(n_out, n_in))
    else:  # sparse
        w = rng.integers(-127, 128, size=(n_out, n_in)) * (rng.random((n_out, n_in)) < 0.2)
    w = w.astype(np.int64)
    f_w = int(rng.integers(0, 9))
    # |x - zp_x| <= 255, and zp_z + R(acc, 0) must stay small too: keep 256 of margin.
    room = 2**30 - 256 - 255 * np.abs(w).sum(axis=1)
    typical = 100.0 * np.sqrt(n_in) * max(float(np.abs(w).mean()), 1.0)
    if rng.random() < 0.15:
        b = np.array([rng.integers(-r, r + 1) for r in room], dtype=np.int64)
    else:
        b = np.clip(np.round(rng.normal(0, typical, size=n_out)), -room, room).astype(np.int64)
    if rng.random() < 0.75:  # a shift that keeps outputs in range
        s = int(np.clip(np.round(np.log2(max(typical, 1.0))) - 6 + rng.integers(-2, 3), 0, 24))
    else:
        s = int(rng.integers(0, 25))
    f_z = f_x + f_w - s
    if f_z < -20 or f_z > 30:  # keep f small: move f_w, not s
        f_w -= f_z - int(np.clip(f_z, -20, 30))
        f_z = f_x + f_w - s
    zp_z = int(rng.integers(-128, 128))
    table = _table(act, f_z, zp_z) if act in ("sigmoid", "tanh") else None
    return QLayer(w, b, act, f_x, zp_x, f_w, f_z, zp_z, table)


def random_qmodel(rng, n_layers=None, max_units=128, last=None):
    """A random QModel within the numeric contract (1-4 layers, 1-`max_units` units)."""
    n_layers = int(rng.integers(1, 5)) if n_layers is None else n_layers
    sizes = [int(v) for v in rng.integers(1, max_units + 1, size=n_layers + 1)]
    n_features = sizes[0]
    stage = InputStage(
        offset=rng.integers(-1000, 1001, size=n_features).astype(np.int64),
        mult=rng.integers(0, 2048, size=n_features).astype(np.int64),
        shift=rng.integers(0, 25, size=n_features).astype(np.int64),
        f_in=int(rng.integers(0, 8)),
        zp_in=int(rng.integers(-128, 128)),
    )
    layers = []
    f_x, zp_x = stage.f_in, stage.zp_in
    for k in range(n_layers):
        if k < n_layers - 1:
            act = str(rng.choice(ACTIVATIONS[:-1]))  # softmax: the last layer's only
        else:
            act = last or str(rng.choice(ACTIVATIONS))
        layer = _random_layer(rng, sizes[k], sizes[k + 1], act, f_x, zp_x)
        layers.append(layer)
        f_x, zp_x = layer.out_scale
    exp = softmax_table(layers[-1].f_z) if layers[-1].act == "softmax" else None
    classes = ["c%d" % j for j in range(sizes[-1])] if exp is not None else []
    return QModel(stage, layers, exp, classes)


def random_raw(rng, qmodel, n):
    """n random int16 raw feature vectors for `qmodel` (within its input stage's bound)."""
    return rng.integers(-32768, 32768, size=(n, qmodel.layers[0].n_in)).astype(np.int64)
