"""Quantizer: float MLP -> QModel (int8 weights, power-of-two scales), with optional QAT.

Runs on: host.

Post-training quantization walks the layers in order, feeding the calibration data (the
training set's int8 network inputs) through the already quantized layers, so each choice sees
the integers the board will see:

1. weights: one power-of-two scale 2**-f_w per layer, searched around the largest weight's
   choice for the least output error on the calibration inputs (a slightly clipped outlier
   often buys finer steps for all the other weights); int8 in [-127, 127], written-out rounding
   (floor(v + 0.5)); biases int32 at 2**-(f_x + f_w);
2. pre-activations: scale 2**-f_z and zero point from the range of the pre-activations on the
   calibration data (a percentile for hidden layers, min/max for the output), widened to hold
   0; relu layers use [0, hi], sigmoid / tanh inputs are cut to where the int8 output still
   changes (|z| <= 8 and 4);
3. the shift s = f_x + f_w - f_z is brought into [0, 24] (f_z is made coarser when s < 0, f_w
   coarser when s > 24);
4. sigmoid / tanh tables and the softmax exp table from host/tables.py (TFLite Micro's kernels).

Quantization-aware fine-tuning (`qat=True`, or `"auto"` when the post-training score drops more
than `max_drop` below the float model's) trains the float weights a few epochs with Adam through
a fake-quantized forward pass (weights, biases, pre-activations and sigmoid / tanh outputs
rounded to their int8 grids at the post-training scales; straight-through gradients, zero where
a value saturates), then re-quantizes. The model with the best integer score on the evaluation
data wins (post-training, QAT at the post-training scales, or QAT re-calibrated).
"""

import numpy as np

from .fixedpoint import SHIFT_MAX
from .mlp import MLP, forward_pass, train
from .qmodel import ACTIVATIONS, QLayer, QModel
from .reference import forward_layers
from .tables import TABLE_F_MAX, TABLE_F_MIN, activation_table, softmax_exp_table

W_MAX = 127
F_MIN, F_MAX = -16, 24  # fractional bits allowed for any tensor
F_W_SEARCH = 3  # extra fractional bits tried beyond the largest weight's choice
# Pre-activation range that still changes the int8 output (TFLM's sigmoid saturates past
# |z| ~ 6.2 at 1/256, tanh past |z| ~ 3.1 at 1/128).
ACTIVATION_RANGE = {"sigmoid": 8.0, "tanh": 4.0}


def _round(v):
    """float -> nearest integer (float64), ties up: floor(v + 0.5), written out."""
    return np.floor(np.asarray(v, dtype=np.float64) + 0.5)


def quantize_weights(W, f_w):
    """float weights -> int8 values (int64) at scale 2**-f_w, nearest, clipped to [-127, 127]."""
    return np.clip(_round(np.asarray(W) * 2.0**f_w), -W_MAX, W_MAX).astype(np.int64)


def max_weight_scale(W):
    """The max-based f_w: the largest f with max|W| * 2**f <= 127 (F_MAX for all-zero W)."""
    m = float(np.max(np.abs(W))) if np.size(W) else 0.0
    if m == 0.0:
        return F_MAX
    return int(np.clip(np.floor(np.log2(W_MAX / m)), F_MIN, F_MAX))


def weight_error(W, f_w, X=None):
    """Squared error of the quantized weights: of the layer's outputs X @ W.T on inputs X
    (n, n_in) when given, else of the weights themselves."""
    err = quantize_weights(W, f_w) * 2.0**-f_w - np.asarray(W)
    if X is None:
        return float(np.sum(err * err))
    out = np.asarray(X, dtype=np.float64) @ err.T
    return float(np.sum(out * out))


def choose_weight_scale(W, X=None, search=F_W_SEARCH):
    """f_w with the least `weight_error`, among the max-based choice and `search` finer ones
    (finer scales clip the largest weights; ties keep the coarser scale)."""
    f0 = max_weight_scale(W)
    best, best_err = f0, weight_error(W, f0, X)
    for f in range(f0 + 1, min(f0 + search, F_MAX) + 1):
        err = weight_error(W, f, X)
        if err < best_err:
            best, best_err = f, err
    return best


def activation_scale(lo, hi, f_max=F_MAX):
    """Real range [lo, hi] (widened to hold 0) -> (f, zp): the finest power-of-two scale whose
    256 steps cover the range, zero point in [-128, 127]."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    width = hi - lo
    f = f_max if width <= 0 else int(np.clip(np.floor(np.log2(255.0 / width)), F_MIN, f_max))
    zp = int(np.clip(_round(-128.0 - lo * 2.0**f), -128, 127))
    return f, zp


def _calibration_range(z, act, percentile, last):
    """Float pre-activations (n, n_out) -> the range [lo, hi] to quantize them over."""
    if last or percentile >= 100:
        lo, hi = float(z.min()), float(z.max())
    else:
        lo, hi = (float(v) for v in np.percentile(z, [100.0 - percentile, percentile]))
    if act == "relu":
        lo = 0.0
    if act in ACTIVATION_RANGE:
        r = ACTIVATION_RANGE[act]
        lo, hi = max(lo, -r), min(hi, r)
    return lo, hi


def _act_name(act, last):
    if act not in ACTIVATIONS:
        raise ValueError("quantize: unknown activation %r" % (act,))
    if act == "softmax" and not last:
        raise ValueError("quantize: softmax only on the last layer")
    return act


def quantize_layer(
    W, b, act, f_x, zp_x, x_q=None, f_w=None, z_scale=None, percentile=99.99, last=False
):
    """One float layer -> QLayer reading int8 inputs at (f_x, zp_x).

    x_q: int8 calibration inputs (n, n_in) of this layer; needed unless both f_w and z_scale
    = (f_z, zp_z) are given (the fixed scales QAT trained with).
    """
    W, b = np.asarray(W, dtype=np.float64), np.asarray(b, dtype=np.float64)
    x = None if x_q is None else (np.asarray(x_q, dtype=np.float64) - zp_x) * 2.0**-f_x
    if f_w is None:
        f_w = choose_weight_scale(W, x)
    w_q = quantize_weights(W, f_w)
    if z_scale is None:
        f_b = f_x + f_w
        b_q = _round(b * 2.0**f_b)
        z = (x @ w_q.T.astype(np.float64)) * 2.0**-f_w + b_q * 2.0**-f_b
        lo, hi = _calibration_range(z, act, percentile, last)
        f_cap = TABLE_F_MAX if act in ACTIVATION_RANGE else F_MAX
        f_z, zp_z = activation_scale(lo, hi, f_cap)
        if f_z > f_x + f_w:  # s < 0: the output cannot be finer than the product's scale
            f_z, zp_z = activation_scale(lo, hi, f_x + f_w)
        if f_x + f_w - f_z > SHIFT_MAX:  # s > 24: coarser weights
            f_w = f_z + SHIFT_MAX - f_x
            w_q = quantize_weights(W, f_w)
    else:
        f_z, zp_z = z_scale
    if act in ACTIVATION_RANGE and not TABLE_F_MIN <= f_z <= TABLE_F_MAX:
        raise ValueError(
            "quantize: %s pre-activation f_z %d outside [%d, %d]"
            % (act, f_z, TABLE_F_MIN, TABLE_F_MAX)
        )
    s = f_x + f_w - f_z
    if not 0 <= s <= SHIFT_MAX:
        raise ValueError("quantize: shift %d outside [0, %d]" % (s, SHIFT_MAX))
    b_q = _round(b * 2.0 ** (f_x + f_w)).astype(np.int64)
    table = activation_table(act, f_z, zp_z)
    return QLayer(w_q, b_q, act, int(f_x), int(zp_x), int(f_w), int(f_z), int(zp_z), table)


def build_qmodel(Ws, bs, acts, input_stage, X_q, scales=None, percentile=99.99, meta=None):
    """Float weights -> QModel, layer by layer through the quantized pipeline: each layer's
    scales chosen on the calibration inputs X_q as the layers below turn them (quantize_layer),
    or given as `scales` [(f_w, (f_z, zp_z)) per layer]."""
    layers = []
    f_x, zp_x = input_stage.f_in, input_stage.zp_in
    x_q = np.asarray(X_q, dtype=np.int64)
    n = len(Ws)
    for k in range(n):
        last = k == n - 1
        act = _act_name(acts[k], last)
        f_w, z_scale = (None, None) if scales is None else scales[k]
        layer = quantize_layer(Ws[k], bs[k], act, f_x, zp_x, x_q, f_w, z_scale, percentile, last)
        layers.append(layer)
        x_q = forward_layers(QModel(input_stage, [layer]), x_q)[0]
        f_x, zp_x = layer.out_scale
    exp = softmax_exp_table(layers[-1].f_z) if layers[-1].act == "softmax" else None
    meta = meta or {}
    return QModel(
        input_stage,
        layers,
        exp,
        list(meta.get("classes") or []),
        dict(meta.get("features") or {}),
        dict(meta.get("sensor") or {}),
    )


def _scales(qmodel):
    return [(layer.f_w, (layer.f_z, layer.zp_z)) for layer in qmodel.layers]


# -- scores ------------------------------------------------------------------------------------


def score_q(qmodel, X_q, y):
    """Score of the integer model: accuracy (softmax output; argmax of the logits, ties to the
    lower index) or R**2 (linear output, values dequantized)."""
    z = forward_layers(qmodel, X_q)[-1]
    last = qmodel.layers[-1]
    if last.act == "softmax":
        return float(np.mean(np.argmax(z, axis=1) == np.asarray(y)))
    return _r2((z - last.zp_z) * 2.0**-last.f_z, y)


def _score_float(out, y, act):
    if act == "softmax":
        return float(np.mean(np.argmax(out, axis=1) == np.asarray(y)))
    return _r2(out, y)


def _r2(pred, y):
    y = np.asarray(y, dtype=np.float64).reshape(len(pred), -1)
    var = float(np.sum((y - y.mean(axis=0)) ** 2))
    err = float(np.sum((pred - y) ** 2))
    return 1.0 - err / var if var > 0 else -err


# -- quantization-aware training ---------------------------------------------------------------


class FakeQuant:
    """Fake quantization at a QModel's scales, the hook of mlp.forward_pass for
    quantization-aware training: weights, biases, pre-activations and sigmoid / tanh outputs are
    rounded to the grids the board computes on (written-out rounding, as quantize_layer), but
    stay floats so that gradients flow through them. `masks[k]` (set by the forward) is 0 where
    layer k's pre-activation was clamped at -128 or 127, 1 elsewhere: the straight-through
    estimator passes gradients through the rounding, not through the clamp."""

    def __init__(self, qmodel):
        self.layers = qmodel.layers
        self.masks = [None] * len(self.layers)

    def weights(self, Ws, bs):
        """Float weights and biases -> their values on each layer's int8 and int32 grids."""
        Wq, bq = [], []
        for W, b, layer in zip(Ws, bs, self.layers, strict=True):
            f_b = layer.f_x + layer.f_w
            Wq.append(quantize_weights(W, layer.f_w) * 2.0**-layer.f_w)
            bq.append(_round(b * 2.0**f_b) * 2.0**-f_b)
        return Wq, bq

    def pre_activation(self, k, z):
        """Layer k's z -> its value on the int8 grid (f_z, zp_z), clamped."""
        layer = self.layers[k]
        zq = _round(z * 2.0**layer.f_z) + layer.zp_z
        self.masks[k] = ((zq >= -128) & (zq <= 127)).astype(np.float64)
        return (np.clip(zq, -128, 127) - layer.zp_z) * 2.0**-layer.f_z

    def output(self, k, a):
        """Layer k's activation output -> its int8 grid: sigmoid / tanh outputs are table
        entries at their own scale; relu keeps z's grid; softmax and linear are left alone
        (the board's argmax reads the logits)."""
        layer = self.layers[k]
        if layer.act not in ("sigmoid", "tanh"):
            return a
        f_y, zp_y = layer.out_scale
        yq = np.clip(_round(a * 2.0**f_y) + zp_y, -128, 127)
        return (yq - zp_y) * 2.0**-f_y


def fake_quant_forward(Ws, bs, qmodel, x):
    """The fake-quantized forward at `qmodel`'s scales: float inputs on the input grid (n, n_in)
    -> every layer's function signal (mlp.forward_pass; the last is softmax probabilities or
    the linear output)."""
    fq = FakeQuant(qmodel)
    Wq, bq = fq.weights(Ws, bs)
    return forward_pass(Wq, bq, [layer.act for layer in qmodel.layers], x, fq)


def qat_finetune(Ws, bs, qmodel, x, y, epochs=10, lr=1e-4, batch_size=32, seed=0):
    """Fine-tune float weights (copies) through the fake-quantized forward at `qmodel`'s scales:
    mlp.train with Adam, no L2 and no validation, and the FakeQuant hook.

    x: float network inputs on the input grid (n, n_in); y: class indices (softmax) or targets.
    Returns (Ws, bs).
    """
    net = MLP.from_weights(Ws, bs, [layer.act for layer in qmodel.layers])
    train(
        net, x, y, optimizer="adam", lr=lr, batch_size=batch_size, epochs=epochs, l2=0.0,
        val_fraction=0.0, seed=seed, fake_quant=FakeQuant(qmodel),
    )  # fmt: skip
    return net.W, net.b


# -- the quantizer -----------------------------------------------------------------------------


def quantize(
    mlp,
    input_stage,
    X_calib_q,
    y_calib=None,
    *,
    classes=(),
    features=None,
    sensor=None,
    X_val_q=None,
    y_val=None,
    qat="auto",
    qat_epochs=10,
    qat_lr=1e-4,
    qat_batch_size=32,
    max_drop=0.01,
    percentile=99.99,
    seed=0,
    info=None,
):
    """Float MLP -> QModel.

    mlp: an object with `.W`, `.b` (float, (n_out, n_in) and (n_out,) per layer) and
    `.activations` (names per layer: hidden relu / sigmoid / tanh, last softmax or linear).
    X_calib_q: int8 network inputs of the training data (input_stage.apply of the raw
    features); y_calib: their labels (class indices, or targets), needed for QAT and scores.
    X_val_q / y_val: data to score on instead (default: the calibration data).
    qat: True, False or "auto" (fine-tune when the integer score drops more than `max_drop`
    below the float score; scores are accuracy, or R**2 for a linear output).
    info: an optional dict, filled with "float_score", "ptq_score", "qat_score", "chosen".
    `mlp` is not modified.
    """
    X_q = _check_inputs(X_calib_q, mlp, "X_calib_q")
    Ws = [np.asarray(W, dtype=np.float64) for W in mlp.W]
    bs = [np.asarray(b, dtype=np.float64) for b in mlp.b]
    acts = list(mlp.activations)
    if len(Ws) != len(bs) or len(Ws) != len(acts) or not Ws:
        raise ValueError("quantize: W, b and activations must have one entry per layer")
    if qat not in (True, False, "auto"):
        raise ValueError("quantize: qat must be True, False or 'auto', found %r" % (qat,))
    meta = {"classes": classes, "features": features, "sensor": sensor}
    ptq = build_qmodel(Ws, bs, acts, input_stage, X_q, percentile=percentile, meta=meta)
    report = {"float_score": None, "ptq_score": None, "qat_score": None, "chosen": "ptq"}
    if info is not None:
        info.update(report)
    if y_calib is None:
        if qat is True:
            raise ValueError("quantize: qat needs the labels y_calib")
        return ptq

    if X_val_q is None:
        X_eval, y_eval = X_q, y_calib
    else:
        X_eval, y_eval = _check_inputs(X_val_q, mlp, "X_val_q"), y_val
    x_eval = input_stage.to_float(X_eval)
    logits = forward_pass(Ws, bs, acts, x_eval, logits=True)[-1]
    float_score = _score_float(logits, y_eval, acts[-1])
    ptq_score = score_q(ptq, X_eval, y_eval)
    report.update(float_score=float_score, ptq_score=ptq_score)
    best, best_score = ptq, ptq_score
    if qat is True or (qat == "auto" and float_score - ptq_score > max_drop):
        x = input_stage.to_float(X_q)
        Wq, bq = qat_finetune(Ws, bs, ptq, x, y_calib, qat_epochs, qat_lr, qat_batch_size, seed)
        candidates = [
            ("qat", build_qmodel(Wq, bq, acts, input_stage, X_q, _scales(ptq), meta=meta)),
            (
                "qat-recalibrated",
                build_qmodel(Wq, bq, acts, input_stage, X_q, None, percentile, meta),
            ),
        ]
        for name, qm in candidates:
            score = score_q(qm, X_eval, y_eval)
            if report["qat_score"] is None or score > report["qat_score"]:
                report["qat_score"] = score
            if score > best_score:
                best, best_score, report["chosen"] = qm, score, name
    if info is not None:
        info.update(report)
    return best


def _check_inputs(X_q, mlp, what):
    X_q = np.asarray(X_q)
    n_in = np.asarray(mlp.W[0]).shape[1]
    if X_q.ndim != 2 or X_q.shape[1] != n_in or len(X_q) == 0:
        raise ValueError(
            "quantize: expected %s of shape (n, %d) with n > 0, found %s" % (what, n_in, X_q.shape)
        )
    if not np.issubdtype(X_q.dtype, np.integer) or X_q.min() < -128 or X_q.max() > 127:
        raise ValueError("quantize: %s must be int8 values (input_stage.apply output)" % what)
    return X_q.astype(np.int64)
