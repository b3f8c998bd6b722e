"""The board's integer backprop is real learning, not noise: its gradients point where the float
gradients of the same (dequantized) network point, at the scale the docstrings state, and the
integer update moves the weights as float SGD at lr = 2**-lr_shift does.

Runs on: host (pytest). The integer gradients come from host/trainref.py, proven bit-identical
to device/train.py by tests/test_train_parity.py.
"""

import numpy as np
import pytest

from microprop.device.train import LEARN_MODES as MODES
from microprop.host import quantize, reference, trainref

from .helpers import ACTS, data_model, mlp_model

N_BATCH = 64


def cosine(a, b):
    a = np.ravel(a).astype(np.float64)
    b = np.ravel(b).astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def models():
    rng = np.random.default_rng(20240614)
    out = {act: mlp_model(rng, [8, 16, 12, 4], act) for act in ACTS}
    out["deep-tanh"] = mlp_model(rng, [6, 24, 16, 12, 5], "tanh")
    out["data"] = data_model()
    return out


@pytest.mark.parametrize("mode", MODES)
def test_integer_gradients_follow_the_float_gradients(models, mode):
    for name, (q, raw, labels) in models.items():
        ref = trainref.TrainRef(q, mode, 6, 1)
        grads = ref.gradients(raw[:N_BATCH], labels[:N_BATCH])
        net = trainref.dequantize(q)
        x = trainref.float_inputs(net, raw[:N_BATCH])
        dW, db = trainref.float_gradients(net, x, labels[:N_BATCH])
        checked = 0
        for k, ((gw, gb), p, layer) in enumerate(zip(grads, ref.plan, q.layers, strict=True)):
            assert (gw is not None) == p["trains_w"] and (gb is not None) == p["trains_b"]
            where = "%s, mode %s, layer %d" % (name, mode, k)
            if gw is not None:
                assert cosine(gw, dW[k]) > 0.9, where + " weights"
                # The stated scale: real gradient = gw * 2**-(f_delta + f_x).
                real = gw * 2.0 ** -(p["f_delta"] + layer.f_x)
                assert 0.7 < np.linalg.norm(real) / np.linalg.norm(dW[k]) < 1.4, where
                checked += 1
            if gb is not None:
                assert cosine(gb, db[k]) > 0.9, where + " biases"
                real = gb * 2.0 ** -p["f_delta"]
                assert 0.7 < np.linalg.norm(real) / np.linalg.norm(db[k]) < 1.4, where
                checked += 1
        assert checked == {"last": 2, "bias": len(q.layers), "all": 2 * len(q.layers)}[mode]


def test_hidden_error_signals_are_not_noise(models):
    # Per sample, not only summed over a batch: the hidden layers' error signals agree with
    # the float ones for most samples (the batch cosine could hide per-sample noise).
    q, raw, labels = models["deep-tanh"]
    ref = trainref.TrainRef(q, "all", 6, 1)
    net = trainref.dequantize(q)
    agree = []
    for n in range(N_BATCH):
        grads = ref.gradients(raw[n : n + 1], labels[n : n + 1])
        dW, _ = trainref.float_gradients(
            net, trainref.float_inputs(net, raw[n : n + 1]), labels[n : n + 1]
        )
        agree.append(cosine(grads[0][0], dW[0]))
    assert np.median(agree) > 0.9, np.median(agree)


@pytest.mark.parametrize("mode", MODES)
def test_integer_update_moves_like_float_sgd(models, mode):
    # Same samples, same layers, float SGD at lr = 2**-lr_shift on batch sums: the weight
    # (and bias) changes of the integer trainer point the same way. At lr 2**-7 every group
    # moves by many steps of its int scale; at 2**-8 the last layer's biases ("all") can move
    # by about 5 LSB, where the stochastic rounding's noise is as large as the signal.
    q, raw, labels = models["data"]
    lr_shift, batch, n = 7, 8, 256
    ref = trainref.train_steps(q, raw[:n], labels[:n], mode, lr_shift, batch, seed=3)
    net, _ = trainref.float_finetune(q, raw[:n], labels[:n], mode, lr_shift, batch)
    start = trainref.dequantize(q)
    trained = trainref.dequantize(ref.qmodel)
    for k in range(len(q.layers)):
        p = ref.plan[k]
        for key, learns in (("W", p["trains_w"]), ("b", p["trains_b"])):
            d_int = trained[key][k] - start[key][k]
            d_float = net[key][k] - start[key][k]
            if not learns:
                assert not d_int.any() and not d_float.any()
                continue
            assert cosine(d_int, d_float) > 0.8, (mode, k, key)
            assert 0.5 < np.linalg.norm(d_int) / np.linalg.norm(d_float) < 2.0, (mode, k, key)


def test_on_board_training_adapts_to_new_wearers(models):
    # The data model's samples are the windows of wearers it was not trained on: a pass of
    # integer training improves its accuracy on them, as the float baseline does.
    q, raw, labels = models["data"]
    before = quantize.score_q(q, reference.input_stage(q, raw), labels)
    for mode in MODES:
        ref = trainref.train_steps(q, raw, labels, mode, 6, 1, seed=1)
        after = quantize.score_q(ref.qmodel, reference.input_stage(q, raw), labels)
        net, _ = trainref.float_finetune(q, raw, labels, mode, 6, 1)
        float_after = np.mean(trainref.float_predict(net, raw) == labels)
        assert after > before and float_after > before, (mode, before, after, float_after)
