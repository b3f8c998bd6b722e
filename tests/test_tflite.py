"""The .tflite export run on TensorFlow Lite Micro's interpreter: the oracle nobody here wrote.

Runs on: host (pytest), with the pinned `tflite-micro` package.

Dense layers, ReLU, sigmoid and tanh must give the NumPy reference's integers exactly (every
layer's output tensor is read back from the interpreter); softmax within 1 LSB. The tables of
host/tables.py must equal TFLM's LOGISTIC / TANH over all 256 inputs, and the re-implemented
SOFTMAX kernel must equal TFLM's exactly. Without tflite-micro the module skips, except in CI
(CI set), where the missing oracle is a failure.
"""

import os

import numpy as np
import pytest

from microprop.host import reference, tables
from microprop.host.fixedpoint import rounding_rshift
from microprop.host.inputstage import InputStage
from microprop.host.qmodel import QLayer, QModel
from microprop.host.tflite_export import activation_tflite, tensor_index_of_layers, to_tflite

try:
    from tflite_micro.python.tflite_micro import runtime
except ImportError:  # the oracle is required in CI, optional elsewhere
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "tflite-micro is not installed (pip install the pinned tflite-micro)",
        allow_module_level=True,
    )


def interpreter(model_bytes, keep_tensors=False):
    # An explicit arena: the default (10x the model size) is too small for tiny models, and
    # running out crashes the process instead of raising.
    config = runtime.InterpreterConfig
    return runtime.Interpreter.from_bytes(
        model_bytes,
        arena_size=(1 << 16) + 16 * len(model_bytes),
        intrepreter_config=config.kPreserveAllTensors
        if keep_tensors
        else config.kAllocationRecording,
    )


def run_rows(it, x, tensors=()):
    """Invoke once per row of x (int8 (n, k)); return the output (n, m) and the tensors'
    values per row, as int64."""
    outs, inner = [], [[] for _ in tensors]
    for row in np.asarray(x, dtype=np.int8):
        it.set_input(row.reshape(1, -1), 0)
        it.invoke()
        outs.append(it.get_output(0).reshape(-1).astype(np.int64))
        for t, idx in enumerate(tensors):
            inner[t].append(it.GetTensor(idx, 0)["tensor_data"].reshape(-1).astype(np.int64))
    return np.array(outs), [np.array(v) for v in inner]


# --- tables against TFLM's kernels ---


@pytest.mark.parametrize("act", ["sigmoid", "tanh"])
def test_activation_tables_equal_tflm_over_all_inputs(act):
    x = np.arange(-128, 128, dtype=np.int8).reshape(1, 256)
    rng = np.random.default_rng(0)
    make = tables.sigmoid_table if act == "sigmoid" else tables.tanh_table
    for f_z in range(tables.TABLE_F_MIN, tables.TABLE_F_MAX + 1):
        for zp in [-128, -1, 0, 1, 127] + [int(v) for v in rng.integers(-128, 128, size=3)]:
            it = interpreter(activation_tflite(act, 256, f_z, zp))
            it.set_input(x, 0)
            it.invoke()
            got = it.get_output(0).reshape(-1).astype(np.int64)
            assert np.array_equal(got, make(f_z, zp)), (act, f_z, zp)


def _logit_rows(rng, n, count):
    rows = [np.full(n, -128), np.full(n, 127), np.zeros(n)]
    one_hot = np.full(n, -128)
    one_hot[n - 1] = 127
    rows.append(one_hot)
    for _ in range(count):
        spread = int(rng.choice([1, 3, 16, 64, 256]))
        base = int(rng.integers(-128, 128))
        rows.append(np.clip(base + rng.integers(-spread, spread + 1, size=n), -128, 127))
    return np.array(rows, dtype=np.int64)


def test_softmax_reimplementation_equals_tflm_and_board_within_one_lsb():
    rng = np.random.default_rng(1)
    worst = 0
    for f_z in range(-3, tables.SOFTMAX_F_MAX + 1, 2):
        exp = tables.softmax_exp_table(f_z)
        for n in (2, 3, 7, 16):
            it = interpreter(activation_tflite("softmax", n, f_z, 0))
            x = _logit_rows(rng, n, 25)
            got, _ = run_rows(it, x)
            mine = np.array([tables.tflm_softmax_int8(row, f_z) for row in x])
            assert np.array_equal(got, mine), f_z
            board = reference.softmax_q(QModel(None, [], exp), x)
            worst = max(worst, int(np.abs(board - got).max()))
    assert worst <= 1


# --- whole models ---


def _tflm_ready(qmodel):
    """Put TFLM's tables into a random model; False when a scale is outside what they cover."""
    for layer in qmodel.layers:
        if layer.act in ("sigmoid", "tanh"):
            if not tables.TABLE_F_MIN <= layer.f_z <= tables.TABLE_F_MAX:
                return False
            layer.table = tables.activation_table(layer.act, layer.f_z, layer.zp_z)
    last = qmodel.layers[-1]
    if last.act == "softmax":
        if last.f_z > tables.SOFTMAX_F_MAX:
            return False
        qmodel.softmax_exp = tables.softmax_exp_table(last.f_z)
    return True


def _random_models(seed, count, **kwargs):
    rng = np.random.default_rng(seed)
    models = []
    while len(models) < count:
        qm = reference.random_qmodel(rng, **kwargs)
        if _tflm_ready(qm):
            models.append(qm)
    return models, rng


def _inputs(rng, qmodel, n):
    n_in = qmodel.sizes[0]
    zp = qmodel.input_stage.zp_in
    edges = [np.full(n_in, v) for v in (-128, 127, zp, min(zp + 1, 127), max(zp - 1, -128))]
    alternating = np.where(np.arange(n_in) % 2 == 0, -128, 127)
    rows = edges + [alternating] + list(rng.integers(-128, 128, size=(n, n_in)))
    return np.array(rows, dtype=np.int64)


def check_model(qmodel, x):
    """Every layer's output from TFLM equals the reference's; softmax within 1 LSB."""
    it = interpreter(to_tflite(qmodel), keep_tensors=True)
    out, inner = run_rows(it, x, tensor_index_of_layers(qmodel))
    expected = reference.forward_layers(qmodel, x)
    for k, (got, want) in enumerate(zip(inner, expected, strict=True)):
        if not np.array_equal(got, want):
            bad = np.argwhere(got != want)[0]
            layer = qmodel.layers[k]
            raise AssertionError(
                "layer %d (%s, s=%d) sample %d unit %d: tflm %d, reference %d"
                % (k, layer.act, layer.shift, bad[0], bad[1], got[tuple(bad)], want[tuple(bad)])
            )
    if qmodel.layers[-1].act == "softmax":
        p = reference.softmax_q(qmodel, expected[-1])
        assert np.abs(p - out).max() <= 1
        f_z = qmodel.layers[-1].f_z
        assert np.array_equal(out, [tables.tflm_softmax_int8(z, f_z) for z in expected[-1]])
    else:
        assert np.array_equal(out, expected[-1])


@pytest.mark.parametrize("seed", range(4))
def test_random_models_equal_tflm(seed):
    models, rng = _random_models(seed, 40, max_units=48)
    for qm in models:
        check_model(qm, _inputs(rng, qm, 16))


@pytest.mark.parametrize("last", ["relu", "sigmoid", "tanh", "softmax", "linear"])
def test_random_models_per_output_activation(last):
    models, rng = _random_models(100, 6, max_units=40, last=last)
    for qm in models:
        check_model(qm, _inputs(rng, qm, 8))


def test_requantization_ties_every_shift():
    # One input, weight 1: acc = x + b_j sweeps 256 consecutive integers around a rounding
    # tie of R(., s) for every shift; TFLM must round exactly as host/fixedpoint.py does.
    stage = InputStage(np.zeros(1, np.int64), np.ones(1, np.int64), np.zeros(1, np.int64), 0, 0)
    x = np.arange(-128, 128).reshape(-1, 1)
    for s in range(0, 25):
        half = 1 << max(s - 1, 0)
        b = np.array([m * (1 << s) + half for m in (-3, -1, 0, 2)] + [-half, 1 - half, 0])
        w = np.ones((len(b), 1), dtype=np.int64)
        layer = QLayer(w, b, "linear", 0, 0, 7, 7 - s, 0)
        qm = QModel(stage, [layer])
        check_model(qm, x)
        # ... and the reference is the contract's R.
        z = reference.forward_layers(qm, x)[0]
        assert np.array_equal(z, np.clip(rounding_rshift(x + b, s), -128, 127))


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_quantized_trained_model_equals_tflm(act):
    from microprop.host.inputstage import fit_input_stage
    from microprop.host.mlp import MLP, train
    from microprop.host.quantize import quantize

    rng = np.random.default_rng(2)
    centers = rng.normal(0.0, 3.0, size=(3, 5))
    y = rng.integers(0, 3, size=300)
    raw = np.round((centers[y] + rng.normal(0.0, 1.0, size=(300, 5))) * 100).astype(np.int64)
    stage = fit_input_stage(raw, np.full(5, -32768), np.full(5, 32767))
    X_q = stage.apply(raw)
    mlp = MLP([5, 12, 6, 3], act, "softmax", seed=0)
    train(mlp, stage.to_float(X_q), y, epochs=20, lr=3e-3, seed=0, val_fraction=0)
    qm = quantize(mlp, stage, X_q, y, qat=False)
    check_model(qm, np.concatenate([X_q[:40], _inputs(rng, qm, 0)]))


def test_export_parses_with_the_tflite_schema():
    schema = pytest.importorskip("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")
    models, _ = _random_models(7, 1, n_layers=3, last="softmax")
    qm = models[0]
    data = to_tflite(qm)
    assert data[4:8] == b"TFL3"
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    g = m.subgraphs[0]
    assert [m.operatorCodes[op.opcodeIndex].builtinCode for op in g.operators][-1] == 25
    weights = g.tensors[1]
    assert list(weights.shape) == [qm.layers[0].n_out, qm.layers[0].n_in]
    assert weights.quantization.scale[0] == 2.0 ** -qm.layers[0].f_w
    got = np.frombuffer(bytes(m.buffers[weights.buffer].data), dtype=np.int8)
    assert np.array_equal(got.reshape(qm.layers[0].w.shape), qm.layers[0].w)
    assert g.tensors[g.outputs[0]].quantization.zeroPoint[0] == -128
