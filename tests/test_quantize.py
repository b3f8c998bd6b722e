"""Tests of the quantizer, the activation tables and the bound proof.

Runs on: host (pytest).
"""

import numpy as np
import pytest

from microprop.host import bounds, quantize, tables
from microprop.host.inputstage import InputStage, fit_input_stage
from microprop.host.mlp import MLP, cross_entropy, train
from microprop.host.qmodel import QLayer, QModel
from microprop.host.reference import forward_layers

# --- helpers ---


def blob_features(n, n_features, n_classes, spread, seed):
    """Raw int16-range features of Gaussian blobs, their labels and a fitted input stage."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 1.0, size=(n_classes, n_features)) * 3.0
    y = rng.integers(0, n_classes, size=n)
    raw = np.round((centers[y] + rng.normal(0.0, spread, size=(n, n_features))) * 100)
    raw = raw.astype(np.int64)
    stage = fit_input_stage(raw, np.full(n_features, -32768), np.full(n_features, 32767))
    return stage, stage.apply(raw), y


def trained_mlp(stage, X_q, y, sizes, act, epochs=60, seed=1):
    mlp = MLP(sizes, act, "softmax", seed=seed)
    train(
        mlp, stage.to_float(X_q), y, epochs=epochs, lr=3e-3, batch_size=32, seed=0, val_fraction=0
    )
    return mlp


def stage_of(n, f_in=5, zp_in=0):
    zeros = np.zeros(n, dtype=np.int64)
    return InputStage(zeros, zeros + 1, zeros, f_in, zp_in)


# --- weight scales ---


def test_weight_scale_search_beats_max_based_choice():
    # 100 small weights and one outlier just past a power of two: the max-based scale (f=3)
    # leaves the small weights at steps of 1/8; f=4 clips the outlier a little (8.1 -> 7.94)
    # and halves every other step.
    rng = np.random.default_rng(0)
    W = rng.uniform(-0.5, 0.5, size=(1, 101))
    W[0, 0] = 8.1
    f_max = quantize.max_weight_scale(W)
    assert f_max == 3
    f = quantize.choose_weight_scale(W)
    assert f > f_max
    assert quantize.weight_error(W, f) < 0.7 * quantize.weight_error(W, f_max)
    # With calibration inputs the output error decides; the outlier's input never moves here.
    X = rng.normal(size=(200, 101))
    X[:, 0] = 0.0
    assert quantize.choose_weight_scale(W, X) > f_max


def test_max_based_choice_kept_when_nothing_to_gain():
    W = np.array([[127.0, -64.0, 32.0]]) / 16  # exactly on the grid of f = 4
    assert quantize.choose_weight_scale(W) == quantize.max_weight_scale(W) == 4
    assert np.array_equal(quantize.quantize_weights(W, 4), [[127, -64, 32]])


def test_weights_int8_symmetric_and_rounding_written_out():
    W = np.array([[1000.0, -1000.0, 0.5 / 16, -0.5 / 16, 1.5 / 16]])
    q = quantize.quantize_weights(W, 4)
    assert q.tolist() == [[127, -127, 1, 0, 2]]  # floor(v + 0.5): ties up


def test_activation_scale_covers_range_with_zero():
    f, zp = quantize.activation_scale(-1.0, 3.0)
    assert f == 5 and (-1.0 * 2**f + zp) >= -128.5 and (3.0 * 2**f + zp) <= 127.5
    f, zp = quantize.activation_scale(0.0, 10.0)  # relu: zero at the bottom
    assert zp == -128 and 10.0 * 2**f - 128 <= 127
    f, zp = quantize.activation_scale(2.0, 5.0)  # widened to hold 0
    assert zp == -128


# --- shifts ---


def test_shifts_in_range_for_extreme_layers():
    rng = np.random.default_rng(3)
    stage = stage_of(4, f_in=5)
    X_q = rng.integers(-128, 128, size=(300, 4))
    cases = [
        ([rng.normal(0, 1e-6, (3, 4))], [np.zeros(3)], ["linear"]),  # tiny outputs: s < 0
        ([rng.normal(0, 1e3, (3, 4))], [np.zeros(3)], ["linear"]),  # huge outputs
        (
            [rng.normal(0, 1e-6, (3, 4)), rng.normal(0, 1, (2, 3))],
            [np.zeros(3), np.zeros(2)],
            ["sigmoid", "softmax"],
        ),
        (
            [rng.normal(0, 50, (3, 4)), rng.normal(0, 1e-4, (2, 3))],
            [np.ones(3), np.zeros(2)],
            ["tanh", "linear"],
        ),
    ]
    for Ws, bs, acts in cases:
        qm = quantize.build_qmodel(Ws, bs, acts, stage, X_q)
        for layer in qm.layers:
            assert 0 <= layer.shift <= 24
            assert np.abs(layer.w).max() <= 127
            assert -128 <= layer.zp_z <= 127
        forward_layers(qm, X_q)  # within 31 bits all the way


# --- post-training quantization and QAT ---


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh"])
def test_quantized_toy_model_keeps_accuracy(act):
    stage, X_q, y = blob_features(600, 6, 4, 1.2, seed=0)
    mlp = trained_mlp(stage, X_q, y, [6, 16, 8, 4], act)
    info = {}
    qm = quantize.quantize(mlp, stage, X_q, y, classes=["a", "b", "c", "d"], qat=False, info=info)
    assert info["float_score"] > 0.9
    assert info["ptq_score"] >= info["float_score"] - 0.02
    assert qm.classes == ["a", "b", "c", "d"]
    assert qm.softmax_exp is not None and qm.softmax_exp[0] == 2**16
    for layer, W in zip(qm.layers, mlp.W, strict=True):
        assert layer.w.shape == W.shape and 0 <= layer.shift <= 24
        if layer.act in ("sigmoid", "tanh"):
            assert np.array_equal(
                layer.table, tables.activation_table(layer.act, layer.f_z, layer.zp_z)
            )
    # The float model is left alone.
    assert mlp.W[0].dtype == np.float64
    bounds.check_bounds(qm, -32768, 32767)


def test_qat_runs_and_does_not_lose_accuracy():
    stage, X_q, y = blob_features(500, 5, 3, 2.0, seed=4)
    mlp = trained_mlp(stage, X_q, y, [5, 6, 3], "tanh", epochs=40)
    W0 = [W.copy() for W in mlp.W]
    info = {}
    qm = quantize.quantize(mlp, stage, X_q, y, qat=True, qat_epochs=5, info=info)
    assert info["qat_score"] is not None
    assert quantize.score_q(qm, X_q, y) >= info["ptq_score"]
    assert all(np.array_equal(a, b) for a, b in zip(W0, mlp.W, strict=True))

    # The fake-quantized forward agrees with the integer model it stands for.
    ptq = quantize.quantize(mlp, stage, X_q, y, qat=False)
    a = quantize.fake_quant_forward(mlp.W, mlp.b, ptq, stage.to_float(X_q))
    z = forward_layers(ptq, X_q)[-1]
    assert np.mean(np.argmax(a[-1], axis=1) == np.argmax(z, axis=1)) > 0.97

    # QAT lowers the fake-quantized loss it trains on.
    def loss(Ws, bs):
        p = quantize.fake_quant_forward(Ws, bs, ptq, stage.to_float(X_q))[-1]
        return np.mean(cross_entropy(np.eye(3)[y], p))

    Wq, bq = quantize.qat_finetune(mlp.W, mlp.b, ptq, stage.to_float(X_q), y, epochs=5, lr=1e-3)
    assert loss(Wq, bq) < loss(mlp.W, mlp.b)


def test_qat_auto_kicks_in_on_a_large_drop():
    stage, X_q, y = blob_features(300, 4, 3, 1.0, seed=5)
    mlp = trained_mlp(stage, X_q, y, [4, 8, 3], "relu", epochs=30)
    info = {}
    quantize.quantize(mlp, stage, X_q, y, qat="auto", max_drop=-1.0, qat_epochs=1, info=info)
    assert info["qat_score"] is not None  # a "drop" above -1 always triggers it
    info = {}
    quantize.quantize(mlp, stage, X_q, y, qat="auto", max_drop=1.0, info=info)
    assert info["qat_score"] is None


def test_linear_output_regression_keeps_r2():
    rng = np.random.default_rng(8)
    raw = rng.integers(-3000, 3000, size=(400, 3))
    stage = fit_input_stage(raw, np.full(3, -32768), np.full(3, 32767))
    X_q = stage.apply(raw)
    x = stage.to_float(X_q)
    target = np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2]
    mlp = MLP([3, 16, 1], "tanh", "linear", seed=0)
    train(mlp, x, target, epochs=80, lr=3e-3, batch_size=32, seed=0, val_fraction=0)
    info = {}
    qm = quantize.quantize(mlp, stage, X_q, target, qat="auto", qat_epochs=3, info=info)
    assert qm.softmax_exp is None and qm.layers[-1].act == "linear"
    assert info["float_score"] > 0.8
    assert quantize.score_q(qm, X_q, target) >= info["float_score"] - 0.05


def test_quantize_refuses_bad_inputs():
    stage, X_q, y = blob_features(50, 4, 2, 1.0, seed=6)
    mlp = MLP([4, 3, 2], "relu", "softmax", seed=0)
    with pytest.raises(ValueError, match="int8"):
        quantize.quantize(mlp, stage, X_q * 1000)
    with pytest.raises(ValueError, match=r"shape \(n, 4\)"):
        quantize.quantize(mlp, stage, X_q[:, :3])
    with pytest.raises(ValueError, match="y_calib"):
        quantize.quantize(mlp, stage, X_q, qat=True)


# --- bounds ---


def _layer(w, b, act="linear", f_x=5, zp_x=0, f_w=6, f_z=4, zp_z=0):
    w = np.asarray(w, dtype=np.int64)
    table = tables.activation_table(act, f_z, zp_z)
    return QLayer(w, np.asarray(b, dtype=np.int64), act, f_x, zp_x, f_w, f_z, zp_z, table)


def test_bounds_refuses_an_overflowing_layer_and_names_it():
    n = 40000  # 40000 * 127 * 255 > 2**30
    ok = _layer(np.ones((3, 4)), [0, 0, 0], "relu", zp_z=-128)
    big = _layer(np.full((2, n), 127), [0, 0], f_x=ok.f_z, zp_x=-128)
    small = _layer(np.ones((2, 4)), [0, 0])
    model = QModel(
        stage_of(4), [small, _layer(np.ones((n, 2)), np.zeros(n), "relu", f_x=4, zp_z=-128), big]
    )
    with pytest.raises(
        ValueError, match=r"bounds: layer 2 accumulator may reach \d+, over 2\*\*30 - 1"
    ):
        bounds.check_bounds(model, -100, 100)


def test_bounds_trainable_layer_with_any_int8_weight():
    n = 20000  # actual weights tiny, but any int8 weight could reach 20000 * 127 * 255
    w = np.zeros((2, n), dtype=np.int64)
    w[:, 0] = 1
    first = _layer(np.ones((n, 3)), np.zeros(n), "relu", zp_z=-128)
    model = QModel(stage_of(3), [first, _layer(w, [0, 0], f_x=4, zp_x=-128)])
    result = bounds.check_bounds(model, -10, 10)
    assert result["layers"][1] == 255
    with pytest.raises(ValueError, match="layer 1 accumulator"):
        bounds.check_bounds(model, -10, 10, trainable_layers=[1])
    rows = bounds.headroom(model, trainable_layers=[1])
    assert rows[1]["trainable"] and rows[1]["bits"] < 0 and rows[0]["bits"] > 10


def test_bounds_input_stage_and_shifts():
    model = QModel(stage_of(2), [_layer(np.ones((1, 2)), [0])])
    model.input_stage.mult[:] = 2000
    with pytest.raises(ValueError, match=r"input stage feature 0 \(r - offset\) \* mult"):
        bounds.check_bounds(model, -(2**20), 2**20)
    assert bounds.check_bounds(model, -1000, 1000)["input_stage"] == 2000 * 1000
    bad_shift = QModel(stage_of(2), [_layer(np.ones((1, 2)), [0], f_x=5, f_w=30, f_z=4)])
    with pytest.raises(ValueError, match="layer 0 shift 31 outside"):
        bounds.check_bounds(bad_shift, -10, 10)


def test_headroom_reports_bits():
    layer = _layer(np.full((1, 2), 127), [1000])
    rows = bounds.headroom(QModel(stage_of(2), [layer]))
    assert rows[0]["max_acc"] == 2 * 127 * 128 + 1000
    assert rows[0]["bits"] == 30 - (2 * 127 * 128 + 1000).bit_length()


# --- tables ---


@pytest.mark.parametrize("f_z", [0, 3, 4, 6, 10, 24])
def test_tables_monotonic_with_correct_endpoints(f_z):
    for zp in (-128, -20, 0, 77, 127):
        s = tables.sigmoid_table(f_z, zp)
        t = tables.tanh_table(f_z, zp)
        assert np.all(np.diff(s) >= 0) and np.all(np.diff(t) >= 0)
        assert s.min() >= -128 and s.max() <= 127 and t.min() >= -128 and t.max() <= 127
        assert s[zp + 128] == 0  # sigmoid(0) = 1/2 -> 128/256 - 128
        assert t[zp + 128] == 0
    # Saturated ends once the input range reaches far enough.
    s, t = tables.sigmoid_table(f_z, 0), tables.tanh_table(f_z, 0)
    if 128 * 2.0**-f_z >= 8:
        assert (s[0], s[-1]) == (-128, 127) and (t[0], t[-1]) == (-128, 127)
    # Close to the real functions: within 1 LSB.
    z = (np.arange(-128, 128)) * 2.0**-f_z
    assert np.max(np.abs(s - np.clip(256 / (1 + np.exp(-z)) - 128, -128, 127))) <= 1.0
    assert np.max(np.abs(t - np.clip(128 * np.tanh(z), -128, 127))) <= 1.0


@pytest.mark.parametrize("f_z", [-2, 0, 2, 4, 7, 12])
def test_softmax_exp_table(f_z):
    e = tables.softmax_exp_table(f_z)
    assert e[0] == 2**16 and np.all(np.diff(e) <= 0) and e.min() >= 0
    assert np.max(np.abs(e - tables.softmax_exp_table_float(f_z))) <= 1


def test_tables_refuse_unsupported_scales():
    with pytest.raises(ValueError, match="f_z in"):
        tables.sigmoid_table(25, 0)
    with pytest.raises(ValueError, match="zp_z"):
        tables.tanh_table(4, 200)
