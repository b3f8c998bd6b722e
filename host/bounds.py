"""Worst-case bound proof of the integer pipeline: every value within 31-bit small ints.

Runs on: host (the exporter calls it before writing a model file).

MicroPython on ESP32 and RP2040 keeps integers in [-2**30, 2**30 - 1]; past that they become
heap-allocated big ints (../DESIGN.md, "The numeric contract"). `check_bounds` proves, for every
input the sensors can produce, that

- input stage: |r - offset| and |r - offset| * mult stay in range for r in [lo, hi] per feature,
  mult in [0, 2**11), shift in [0, 24];
- dense layers: every partial sum of sum_i w[j][i] * (x_i - zp_x) + b_j, in any order, is at
  most sum_i |w[j][i]| * max|x_i - zp_x| + |b_j|, where x ranges over what the previous layer
  can output (int8; [zp, 127] after relu; the table's values after sigmoid / tanh). A layer
  listed in `trainable_layers` is proven for ANY int8 weight (|w| <= 127) and any bias with
  |b_j| <= bias_limit(layer) (the board's training step clamps its biases there: a larger
  bias saturates the unit for every input anyway);
- shifts s = f_x + f_w - f_z in [0, 24]; zp_z + R(acc, s) stays small;
- softmax: the table's entries are in [0, 2**16], S = sum_j e_j and e_j * 256 + S // 2 stay in
  range;
- no layer reads only its zero point (device/train_plan.zero_input: a relu below with zero
  point 127, a sigmoid / tanh table of the zero point only, an input stage whose every mult
  is 0): every window would give the same prediction, and the board cannot train its weights
  (its bound proof would divide by max|x - zp_x| = 0). `check_zero_inputs` is that rule for
  the training proof of host/trainref.py, with the board's message.

Anything else raises ValueError naming the stage and the bound, e.g.
"bounds: layer 2 accumulator may reach 1234567890, over 2**30 - 1". Layers are numbered from 0
as in `qmodel.layers`.
"""

import numpy as np

from microprop.device import train_plan

from .fixedpoint import SHIFT_MAX, SMALL_INT_MAX
from .inputstage import MULT_BITS

LIMIT_TEXT = "2**30 - 1"


def _fail(stage, value):
    raise ValueError("bounds: %s may reach %d, over %s" % (stage, value, LIMIT_TEXT))


def _check(stage, value):
    value = int(value)
    if value > SMALL_INT_MAX:
        _fail(stage, value)
    return value


def _check_shift(stage, s):
    if not 0 <= int(s) <= SHIFT_MAX:
        raise ValueError("bounds: %s shift %d outside [0, %d]" % (stage, int(s), SHIFT_MAX))


def _output_range(layer):
    """(lo, hi) of the int8 values a layer can output (what the next layer reads)."""
    if layer.act == "relu":
        return max(int(layer.zp_z), -128), 127
    if layer.act in ("sigmoid", "tanh") and layer.table is not None:
        table = np.asarray(layer.table, dtype=np.int64)
        return int(table.min()), int(table.max())
    return -128, 127


def _input_ranges(qmodel):
    """Per layer: (lo, hi) of its int8 inputs."""
    ranges, lo_hi = [], (-128, 127)  # the input stage clamps to int8
    for layer in qmodel.layers:
        ranges.append(lo_hi)
        lo_hi = _output_range(layer)
    return ranges


def _max_abs_d(layer, x_range):
    lo, hi = x_range
    return max(abs(lo - int(layer.zp_x)), abs(hi - int(layer.zp_x)))


def bias_limit(layer, x_range=(-128, 127)):
    """Largest |bias| the proof allows for a trainable layer: 127 * n_in * max|x - zp_x|."""
    return 127 * layer.n_in * _max_abs_d(layer, x_range)


def layer_bound(layer, x_range=(-128, 127), trainable=False):
    """Worst |partial sum| of the layer's accumulators, int (see the module docstring)."""
    d = _max_abs_d(layer, x_range)
    w = np.abs(np.asarray(layer.w, dtype=np.int64))
    b = np.abs(np.asarray(layer.b, dtype=np.int64))
    if trainable:
        limit = bias_limit(layer, x_range)
        return int(127 * layer.n_in * d + max(limit, int(b.max(initial=0))))
    if w.size == 0:
        return int(b.max(initial=0))
    # Exact Python ints: no int64 overflow for absurd models.
    return max(int(row) * d + int(bj) for row, bj in zip(w.sum(axis=1), b, strict=True))


def plan_layers(qmodel):
    """QModel -> the layer dicts (act, zp_x, zp_z, table) that device/train_plan.py reads."""
    return [
        {
            "act": layer.act,
            "zp_x": int(layer.zp_x),
            "zp_z": int(layer.zp_z),
            "table": None if layer.table is None else [int(v) for v in np.ravel(layer.table)],
        }
        for layer in qmodel.layers
    ]


def _mult(qmodel):
    return [int(m) for m in np.ravel(qmodel.input_stage.mult)]


def check_zero_inputs(qmodel, trains_w):
    """The board's rule (device/train_plan.check_inputs): ValueError "train: layer k input
    takes one value (...): nothing to learn from" for a layer whose weights learn (trains_w[k])
    but that reads only its zero point."""
    train_plan.check_inputs(plan_layers(qmodel), _mult(qmodel), trains_w)


def _check_no_zero_input(qmodel):
    layers, mult = plan_layers(qmodel), _mult(qmodel)
    for k in range(len(layers)):
        why = train_plan.zero_input(layers, k, mult)
        if why is not None:
            raise ValueError(
                "bounds: layer %d input takes one value (%s): every window gives the same "
                "prediction and the board cannot train its weights" % (k, why)
            )


def check_input_stage(stage, feature_lo, feature_hi):
    """Prove the input stage for raw features r in [feature_lo, feature_hi] (per feature)."""
    lo = np.broadcast_to(np.asarray(feature_lo, dtype=object), (stage.n_features,))
    hi = np.broadcast_to(np.asarray(feature_hi, dtype=object), (stage.n_features,))
    worst = 0
    for i in range(stage.n_features):
        offset, mult, shift = int(stage.offset[i]), int(stage.mult[i]), int(stage.shift[i])
        where = "input stage feature %d" % i
        if int(lo[i]) > int(hi[i]):
            raise ValueError("bounds: %s range [%d, %d] is empty" % (where, lo[i], hi[i]))
        if not 0 <= mult < 2**MULT_BITS:
            raise ValueError("bounds: %s mult %d outside [0, 2**%d)" % (where, mult, MULT_BITS))
        _check_shift(where, shift)
        for r in (int(lo[i]), int(hi[i])):
            _check(where + " raw value", abs(r))
        d = max(abs(int(lo[i]) - offset), abs(int(hi[i]) - offset))
        _check(where + " r - offset", d)
        worst = max(worst, _check(where + " (r - offset) * mult", d * mult))
    return worst


def check_bounds(qmodel, feature_lo, feature_hi, trainable_layers=()):
    """Prove that no value of the forward pass leaves [-2**30, 2**30 - 1], or raise ValueError.

    feature_lo / feature_hi: per-feature (or scalar) bounds of the raw integer features any
    sensor input can produce. trainable_layers: indices of layers the board may train.
    Returns {"input_stage": worst |(r - offset) * mult|, "layers": [worst |acc| per layer],
    "softmax": worst numerator or None}.
    """
    trainable = _trainable(qmodel, trainable_layers)
    _check_no_zero_input(qmodel)
    result = {"input_stage": check_input_stage(qmodel.input_stage, feature_lo, feature_hi)}
    accs = []
    for k, (layer, x_range) in enumerate(zip(qmodel.layers, _input_ranges(qmodel), strict=True)):
        where = "layer %d" % k
        _check_shift(where, layer.shift)
        if not -128 <= int(layer.zp_x) <= 127 or not -128 <= int(layer.zp_z) <= 127:
            raise ValueError("bounds: %s zero points must be in [-128, 127]" % where)
        w = np.asarray(layer.w, dtype=np.int64)
        if w.size and np.abs(w).max() > 127:
            raise ValueError("bounds: %s weights must be in [-127, 127]" % where)
        acc = layer_bound(layer, x_range, k in trainable)
        accs.append(_check(where + " accumulator", acc))
        # zp_z + R(acc, s): |R| <= |acc| / 2**s + 1
        _check(where + " zp_z + R(acc, s)", 128 + (acc >> layer.shift) + 1)
    result["layers"] = accs
    result["softmax"] = None
    last = qmodel.layers[-1]
    if last.act == "softmax":
        table = np.asarray(qmodel.softmax_exp, dtype=np.int64)
        if table.shape != (256,) or table.min() < 0 or table.max() > 2**16:
            raise ValueError("bounds: softmax table must be 256 values in [0, 2**16]")
        total = _check("softmax sum", int(table.max()) * last.n_out)
        result["softmax"] = _check("softmax numerator", int(table.max()) * 256 + total // 2)
    return result


def _trainable(qmodel, trainable_layers):
    n = len(qmodel.layers)
    out = set()
    for k in trainable_layers:
        k = int(k)
        if not -n <= k < n:
            raise ValueError("bounds: trainable layer %d, expected 0..%d" % (k, n - 1))
        out.add(k % n)
    return out


def headroom(qmodel, trainable_layers=()):
    """Per layer: {"layer", "max_acc" (worst |accumulator| over any int8 input), "bits" (how
    many more bits it could grow before leaving 31 bits; negative when already over),
    "trainable"}: for `microprop info`."""
    trainable = _trainable(qmodel, trainable_layers)
    rows = []
    for k, (layer, x_range) in enumerate(zip(qmodel.layers, _input_ranges(qmodel), strict=True)):
        acc = layer_bound(layer, x_range, k in trainable)
        rows.append(
            {
                "layer": k,
                "max_acc": acc,
                "bits": SMALL_INT_MAX.bit_length() - max(acc, 1).bit_length(),
                "trainable": k in trainable,
            }
        )
    return rows
