"""Tests of the float MLP trainer: gradients, determinism, learning, early stopping, files.

Runs on: host (pytest).
"""

import json
import os
import warnings

import numpy as np
import pytest

from microprop.host import mlp as mlp_module
from microprop.host.errors import UserError
from microprop.host.mlp import (
    HIDDEN_ACTIVATIONS,
    MLP,
    cross_entropy,
    sigmoid,
    softmax,
    split_validation,
    train,
)

# --- helpers ---


def blobs(n_per_class, centers, spread, seed):
    """Gaussian blobs around `centers`; returns X (n, d) and class indices y."""
    rng = np.random.default_rng(seed)
    centers = np.asarray(centers, dtype=np.float64)
    X = np.concatenate([c + spread * rng.normal(size=(n_per_class, len(c))) for c in centers])
    y = np.repeat(np.arange(len(centers)), n_per_class)
    return X, y


def xor_data(n, seed):
    """Four clusters at (+-1, +-1); the class is 1 where the signs differ (XOR)."""
    X, corner = blobs(n // 4, [(-1, -1), (1, 1), (-1, 1), (1, -1)], 0.3, seed)
    return X, (corner >= 2).astype(np.int64)


def one_hot(y, k):
    return np.eye(k)[y]


def numerical_grads(m, X, Y, sw, l2, eps=1e-6):
    """Central differences of the loss with respect to every weight and bias."""
    grads = []
    for p in m.W + m.b:
        g = np.zeros_like(p)
        for idx in np.ndindex(p.shape):
            keep = p[idx]
            p[idx] = keep + eps
            up = m.loss_value(X, Y, sw, l2)
            p[idx] = keep - eps
            down = m.loss_value(X, Y, sw, l2)
            p[idx] = keep
            g[idx] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


# --- gradients ---


@pytest.mark.parametrize("output", ["softmax", "linear"])
@pytest.mark.parametrize("act", HIDDEN_ACTIVATIONS)
def test_gradients_match_central_differences(act, output):
    rng = np.random.default_rng(1)
    m = MLP([4, 6, 5, 3], hidden_activation=act, output=output, seed=2)
    for b in m.b:  # non-zero biases so that their gradients are exercised too
        b[...] = rng.normal(0, 0.3, size=b.shape)
    X = rng.normal(size=(7, 4))
    Y = one_hot(rng.integers(0, 3, size=7), 3) if output == "softmax" else rng.normal(size=(7, 3))
    sw = rng.uniform(0.2, 3.0, size=7)
    l2 = 0.05
    if act == "relu":  # central differences are only valid away from the kink at z = 0
        a = X
        for W, b in zip(m.W[:-1], m.b[:-1], strict=True):
            z = a @ W.T + b
            assert np.abs(z).min() > 1e-3
            a = np.maximum(z, 0)

    loss, dW, db = m.loss_and_grads(X, Y, sample_weight=sw, l2=l2)
    assert loss == pytest.approx(m.loss_value(X, Y, sw, l2), rel=1e-12)
    for name, g, n in zip(
        ["W0", "W1", "W2", "b0", "b1", "b2"],
        dW + db,
        numerical_grads(m, X, Y, sw, l2),
        strict=True,
    ):
        rel = np.linalg.norm(g - n) / (np.linalg.norm(g) + np.linalg.norm(n))
        assert rel < 1e-6, (name, rel)


def test_l2_penalises_weights_not_biases():
    m = MLP([3, 4, 2], seed=0)
    X, Y = np.ones((2, 3)), one_hot([0, 1], 2)
    _, dW0, db0 = m.loss_and_grads(X, Y, l2=0.0)
    _, dW1, db1 = m.loss_and_grads(X, Y, l2=0.5)
    for k in range(2):
        np.testing.assert_allclose(dW1[k] - dW0[k], 0.5 * m.W[k], rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(db1[k], db0[k])


def test_sample_weights_are_a_weighted_mean():
    m = MLP([2, 3, 2], seed=0)
    X, Y = np.array([[1.0, 2.0], [-1.0, 0.5]]), one_hot([0, 1], 2)
    per_sample = cross_entropy(Y, m.forward(X))
    assert m.loss_value(X, Y, [3.0, 1.0]) == pytest.approx(
        0.75 * per_sample[0] + 0.25 * per_sample[1]
    )
    assert m.loss_value(X, Y, [6.0, 2.0]) == pytest.approx(m.loss_value(X, Y, [3.0, 1.0]))


# --- numerics and shapes ---


def test_stable_softmax_sigmoid_and_cross_entropy():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or divide-by-zero warnings
        p = softmax(np.array([[1000.0, 0.0, -1000.0]]))
        np.testing.assert_allclose(p, [[1.0, 0.0, 0.0]])
        np.testing.assert_allclose(sigmoid(np.array([-1000.0, 0.0, 1000.0])), [0.0, 0.5, 1.0])
        loss = cross_entropy(np.array([[0.0, 0.0, 1.0]]), p)
    assert np.isfinite(loss).all() and loss[0] > 30


def test_init_glorot_he_and_zero_biases():
    m = MLP([200, 300, 100, 10], hidden_activation="relu", seed=0)
    assert [W.shape for W in m.W] == [(300, 200), (100, 300), (10, 100)]
    assert all(W.dtype == np.float64 for W in m.W)
    assert m.W[0].std() == pytest.approx(np.sqrt(2 / 200), rel=0.05)  # He
    assert np.abs(m.W[2]).max() <= np.sqrt(6 / 110)  # Glorot for the output layer
    assert all(not b.any() for b in m.b)
    t = MLP([200, 300, 10], hidden_activation="tanh", seed=0)
    assert np.abs(t.W[0]).max() <= np.sqrt(6 / 500)
    assert m.activations == ["relu", "relu", "softmax"] and m.loss == "cross_entropy"
    r = MLP([3, 1], output="linear")
    assert r.activations == ["linear"] and r.loss == "mse"


def test_forward_and_predict():
    m = MLP([3, 4, 3], seed=0)
    X = np.random.default_rng(0).normal(size=(5, 3))
    p = m.forward(X)
    assert p.shape == (5, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_array_equal(m.predict(X), p.argmax(axis=1))
    m.W[-1][...] = 0.0  # equal logits: ties go to the lowest index
    np.testing.assert_array_equal(m.predict(X), [0] * 5)
    r = MLP([3, 4, 1], output="linear", seed=0)
    assert r.predict(X).shape == (5,)


def test_forward_and_backward_pass_carry_stacked_copies_of_the_network():
    """Leading axes stack copies of the network (host/trainref.py: one per learning rate):
    each copy gets what it would alone; `lowest` stops the error signal, `logits` the
    forward before the output activation."""
    nets = [MLP([4, 5, 3, 3], hidden_activation="tanh", seed=s) for s in range(3)]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 2, 4))  # two samples per copy
    Y = one_hot(rng.integers(0, 3, size=2), 3)
    W = [np.stack([m.W[k] for m in nets]) for k in range(3)]
    b = [np.stack([m.b[k] for m in nets])[:, None, :] for k in range(3)]
    a = mlp_module.forward_pass(W, b, nets[0].activations, x)
    dW, db = mlp_module.backward_pass(W, nets[0].activations, a, a[-1] - Y, lowest=1)
    assert dW[0] is None and db[0] is None
    for j, m in enumerate(nets):
        a1 = mlp_module.forward_pass(m.W, m.b, m.activations, x[j])
        np.testing.assert_allclose(a[-1][j], a1[-1], rtol=1e-12)
        np.testing.assert_allclose(a1[-1], m.forward(x[j]), rtol=1e-12)
        np.testing.assert_allclose(
            mlp_module.forward_pass(m.W, m.b, m.activations, x[j], logits=True)[-1],
            m.logits(x[j]),
            rtol=1e-12,
        )
        _, dW1, db1 = m.loss_and_grads(x[j], Y, l2=0.0)  # the mean: 1/2 of the sums
        for k in (1, 2):
            np.testing.assert_allclose(dW[k][j], 2 * dW1[k], rtol=1e-12)
            np.testing.assert_allclose(db[k][j], 2 * db1[k], rtol=1e-12)


def test_from_weights_copies_and_checks_them():
    m = MLP([3, 4, 2], hidden_activation="sigmoid", seed=0)
    c = MLP.from_weights(m.W, m.b, m.activations)
    assert c.sizes == [3, 4, 2] and c.activations == ["sigmoid", "softmax"]
    X = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_array_equal(c.forward(X), m.forward(X))
    c.W[0][...] = 0.0
    assert m.W[0].any()  # a copy
    with pytest.raises(ValueError, match="share one activation"):
        MLP.from_weights(m.W + [np.ones((2, 2))], m.b + [np.ones(2)], ["relu", "tanh", "softmax"])
    with pytest.raises(ValueError, match=r"layer 1 has W \(3, 4\)"):
        MLP.from_weights([m.W[0], np.ones((3, 4))], m.b, m.activations)
    with pytest.raises(ValueError, match="one weight matrix, bias vector and activation"):
        MLP.from_weights(m.W, m.b, ["softmax"])


# --- determinism ---


def _trained(init_seed, train_seed):
    X, y = xor_data(80, seed=0)
    m = MLP([2, 8, 2], seed=init_seed)
    train(m, X, y, epochs=5, batch_size=16, seed=train_seed)
    return m


def test_same_seed_gives_identical_weights():
    a, b = _trained(3, 5), _trained(3, 5)
    for x, y in zip(a.W + a.b, b.W + b.b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(MLP([2, 8, 2], seed=3).W[0], MLP([2, 8, 2], seed=4).W[0])
    assert not np.array_equal(a.W[0], _trained(4, 5).W[0])
    assert not np.array_equal(a.W[0], _trained(3, 6).W[0])


# --- learning ---


@pytest.mark.parametrize("optimizer, lr", [("adam", 0.01), ("sgd", 0.1), ("nesterov", 0.1)])
def test_learns_xor(optimizer, lr):
    X, y = xor_data(400, seed=0)
    Xt, yt = xor_data(400, seed=1)
    m = MLP([2, 16, 2], hidden_activation="tanh", seed=0)
    h = train(m, X, y, optimizer=optimizer, lr=lr, epochs=300, batch_size=16, patience=30)
    assert np.mean(m.predict(Xt) == yt) > 0.95
    assert h["loss"][-1] < h["loss"][0]


@pytest.mark.parametrize("optimizer, lr", [("adam", 0.01), ("sgd", 0.05)])
def test_learns_blobs_with_relu(optimizer, lr):
    centers = [(0, 0, 2), (2, 0, 0), (0, 2, 0), (2, 2, 2)]
    X, y = blobs(60, centers, 0.4, seed=0)
    Xt, yt = blobs(60, centers, 0.4, seed=1)
    m = MLP([3, 16, 8, 4], hidden_activation="relu", seed=1)
    h = train(m, X, y, optimizer=optimizer, lr=lr, epochs=200)
    assert np.mean(m.predict(Xt) == yt) > 0.95
    assert max(h["val_acc"]) > 0.9


def test_regression_reduces_mse():
    rng = np.random.default_rng(0)
    X = rng.uniform(-3, 3, size=(300, 1))
    y = np.sin(X[:, 0])
    m = MLP([1, 16, 16, 1], hidden_activation="tanh", output="linear", seed=0)
    before = np.mean((m.predict(X) - y) ** 2)
    h = train(m, X, y, lr=0.01, epochs=300, val_fraction=0.2)
    after = np.mean((m.predict(X) - y) ** 2)
    assert after < 0.05 * before and after < 0.01
    assert min(h["val_loss"]) < h["val_loss"][0]
    assert np.isnan(h["val_acc"]).all()  # no accuracy for regression


# --- early stopping, validation, progress ---


def test_early_stopping_restores_best_weights():
    # Few, noisy samples and a big network: the validation loss soon rises again.
    X, y = blobs(15, [(0, 0), (1, 1)], 1.0, seed=0)
    X_val, y_val = blobs(100, [(0, 0), (1, 1)], 1.0, seed=1)
    m = MLP([2, 64, 64, 2], seed=0)
    h = train(m, X, y, X_val=X_val, y_val=y_val, lr=0.01, batch_size=4, epochs=500, patience=10)
    assert h["epochs_run"] < 500
    assert h["epochs_run"] == h["best_epoch"] + 1 + 10
    assert len(h["loss"]) == len(h["val_loss"]) == len(h["val_acc"]) == h["epochs_run"]
    best = min(h["val_loss"])
    assert h["val_loss"][h["best_epoch"]] == best
    assert h["val_loss"][-1] > best
    assert m.loss_value(X_val, one_hot(y_val, 2)) == best


def test_val_fraction_zero_runs_every_epoch():
    X, y = xor_data(40, seed=0)
    h = train(MLP([2, 4, 2]), X, y, epochs=7, val_fraction=0, patience=1)
    assert h["epochs_run"] == 7 and h["best_epoch"] == 6
    assert np.isnan(h["val_loss"]).all() and np.isnan(h["val_acc"]).all()
    assert h["seconds"] >= 0


def test_stratified_split():
    y = np.repeat([0, 1, 2], [100, 50, 10])
    tr, va = split_validation(y, 0.2, np.random.default_rng(0))
    assert np.bincount(y[va]).tolist() == [20, 10, 2]
    assert sorted(np.concatenate([tr, va]).tolist()) == list(range(len(y)))
    tr2, va2 = split_validation(y, 0.2, np.random.default_rng(0))
    np.testing.assert_array_equal(va, va2)


def test_progress_called_once_per_epoch():
    X, y = xor_data(40, seed=0)
    calls = []
    train(MLP([2, 4, 2]), X, y, epochs=6, patience=100, progress=lambda *a: calls.append(a))
    assert [c[0] for c in calls] == [0, 1, 2, 3, 4, 5]  # epochs counted from 0
    assert all(c[1] == 6 for c in calls)
    epoch, epochs, loss, val_loss, val_acc, left = calls[-1]
    assert np.isfinite(loss) and np.isfinite(val_loss) and 0 <= val_acc <= 1
    assert left == 0 and calls[0][5] > 0
    calls.clear()
    train(MLP([2, 4, 2]), X, y, epochs=2, val_fraction=0, progress=lambda *a: calls.append(a))
    assert [c[3:5] for c in calls] == [(None, None), (None, None)]  # no validation set


def test_balanced_class_weight_raises_minority_recall():
    # 95 % / 5 %, overlapping: unweighted, the minority class is mostly predicted wrong.
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, size=(570, 2)), rng.normal(1.5, 1, size=(30, 2))])
    y = np.repeat([0, 1], [570, 30])
    Xt = np.concatenate([rng.normal(0, 1, size=(570, 2)), rng.normal(1.5, 1, size=(300, 2))])
    yt = np.repeat([0, 1], [570, 300])

    def minority_recall(class_weight):
        m = MLP([2, 8, 2], seed=0)
        train(m, X, y, lr=0.01, epochs=60, val_fraction=0, class_weight=class_weight)
        return np.mean(m.predict(Xt[yt == 1]) == 1)

    plain, balanced = minority_recall(None), minority_recall("balanced")
    assert plain < 0.5 < balanced
    assert minority_recall({1: 19.0}) > 0.5  # the same ratio as "balanced" gives


# --- files ---


def test_save_load_roundtrip_exact(tmp_path):
    m = MLP([5, 7, 4, 3], hidden_activation="sigmoid", seed=4)
    for p in m.W + m.b:
        p += np.random.default_rng(1).normal(size=p.shape) * 1e-3
    meta = {"classes": ["rest", "lift", "curl"], "epochs": 12, "note": "ünïcode"}
    path = tmp_path / "model.npz"
    m.save(path, meta)
    m2, meta2 = MLP.load(path)
    assert meta2 == meta
    assert (m2.sizes, m2.activations, m2.loss) == (m.sizes, m.activations, m.loss)
    for a, b in zip(m.W + m.b, m2.W + m2.b, strict=True):
        assert a.dtype == b.dtype == np.float64
        np.testing.assert_array_equal(a, b)
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind
    m.save(tmp_path / "other.bin", {})  # the name is kept as given
    assert sorted(os.listdir(tmp_path)) == ["model.npz", "other.bin"]
    with np.load(path, allow_pickle=False) as npz:
        assert sorted(npz.files) == ["W0", "W1", "W2", "architecture", "b0", "b1", "b2", "meta"]
        assert npz["meta"].dtype == np.uint8


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "model.npz"
    MLP([2, 3, 2], seed=0).save(path, {"v": 1})

    def broken_savez(f, **arrays):
        f.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(mlp_module.np, "savez", broken_savez)
    with pytest.raises(UserError, match="^cannot write .*model.npz: disk full$"):
        MLP([2, 3, 2], seed=1).save(path, {"v": 2})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["model.npz"]
    assert MLP.load(path)[1] == {"v": 1}
    with pytest.raises(ValueError, match="^float model: meta is not JSON-serialisable"):
        MLP([2, 3, 2]).save(path, {"x": object()})
    assert os.listdir(tmp_path) == ["model.npz"]


def _load_error(path):
    with pytest.raises(UserError) as info:
        MLP.load(path)
    message = str(info.value)
    assert message.startswith("float model: %s: " % path), message
    assert "\n" not in message
    return message


def test_load_rejects_bad_files(tmp_path):
    good = tmp_path / "good.npz"
    MLP([3, 4, 2], seed=0).save(good, {})
    data = good.read_bytes()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(data[: len(data) // 2])
    _load_error(truncated)

    flipped = tmp_path / "flipped.npz"  # damage inside a stored array: zip CRC or header error
    pos = data.index(b"W0.npy") + 200
    flipped.write_bytes(
        data[:pos] + bytes(b ^ 0xFF for b in data[pos : pos + 16]) + data[pos + 16 :]
    )
    _load_error(flipped)

    text = tmp_path / "text.npz"
    text.write_text("label,x\n1,2\n")
    assert "not an .npz file, starts with b'labe'" in _load_error(text)

    npy = tmp_path / "array.npy"
    np.save(npy, np.zeros(3))
    assert "not an .npz file" in _load_error(npy)

    _load_error(tmp_path)  # a folder

    arrays = dict(np.load(good, allow_pickle=False))
    architecture = json.loads(arrays["architecture"].tobytes())

    def arch(**changes):
        return np.frombuffer(json.dumps(dict(architecture, **changes)).encode(), np.uint8)

    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, **dict(arrays, W0=np.array([{"a": 1}], dtype=object)))
    assert "pickle" in _load_error(pickled)

    cases = {
        "no_w1": ({k: v for k, v in arrays.items() if k != "W1"}, "missing 'W1'"),
        "no_arch": ({k: v for k, v in arrays.items() if k != "architecture"}, "'architecture'"),
        "shape": (dict(arrays, b0=np.zeros(5)), "b0 is float64 (5,), expected float64 (4,)"),
        "dtype": (dict(arrays, W0=arrays["W0"].astype(np.float32)), "expected float64"),
        "nan": (dict(arrays, W1=arrays["W1"] * np.nan), "NaN"),
        "json": (dict(arrays, meta=np.frombuffer(b"{oops", np.uint8)), "bad JSON"),
        "huge": (dict(arrays, architecture=arch(sizes=[10**9, 10**9])), "expected float64 (10"),
        "act": (dict(arrays, architecture=arch(hidden_activation="gelu")), "unknown activation"),
        "sizes": (dict(arrays, architecture=arch(sizes=3)), "bad sizes 3"),
    }
    for name, (content, expected) in cases.items():
        path = tmp_path / (name + ".npz")
        np.savez(path, **content)
        assert expected in _load_error(path), name

    with pytest.raises(UserError, match="missing.npz: no such file"):
        MLP.load(tmp_path / "missing.npz")


# --- argument errors ---

X4, Y4 = np.zeros((4, 2)), np.array([0, 1, 0, 1])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: MLP([3]), "mlp: sizes need at least 2 entries"),
        (lambda: MLP([3, 0, 2]), "mlp: sizes must be positive integers, found [3, 0, 2]"),
        (lambda: MLP([3, 2.5, 2]), "mlp: sizes must be positive integers"),
        (
            lambda: MLP([3, 2], hidden_activation="foo"),
            "mlp: unknown activation 'foo', expected one of relu, sigmoid, tanh",
        ),
        (
            lambda: MLP([3, 2], output="sigmoid"),
            "mlp: unknown output 'sigmoid', expected one of softmax, linear",
        ),
        (lambda: MLP([3, 1]), "mlp: a softmax output needs at least 2 units, found 1"),
        (
            lambda: train(MLP([2, 2]), X4, Y4, optimizer="rmsprop"),
            "mlp: unknown optimizer 'rmsprop', expected one of sgd, nesterov, adam",
        ),
        (lambda: train(MLP([2, 2]), X4, Y4[:3]), "mlp: X has 4 rows but its labels have 3"),
        (lambda: train(MLP([3, 2]), X4, Y4), "mlp: expected X of shape (n, 3), found (4, 2)"),
        (lambda: train(MLP([2, 2]), X4 * np.nan, Y4), "mlp: X has NaN or inf values"),
        (lambda: train(MLP([2, 2]), X4 + [np.inf, 0], Y4), "mlp: X has NaN or inf values"),
        (
            lambda: train(MLP([2, 2]), X4, [1, 1, 1, 1]),
            "mlp: need at least 2 classes in y, found 1",
        ),
        (lambda: train(MLP([2, 2]), X4, [0, 1, 2, 0]), "mlp: class indices must be in [0, 2)"),
        (lambda: train(MLP([2, 2]), X4, [0, 1, 0.5, 0]), "mlp: expected integer class indices"),
        (lambda: train(MLP([2, 2]), X4, Y4, lr=0), "mlp: lr must be > 0, found 0"),
        (lambda: train(MLP([2, 2]), X4, Y4, batch_size=0), "mlp: batch_size must be >= 1"),
        (
            lambda: train(MLP([2, 2]), X4, Y4, val_fraction=1.0),
            "mlp: val_fraction must be in [0, 1)",
        ),
        (lambda: train(MLP([2, 2]), X4, Y4, X_val=X4), "mlp: give both X_val and y_val"),
        (
            lambda: train(MLP([2, 2]), X4, Y4, class_weight="auto"),
            "mlp: unknown class_weight 'auto', expected 'balanced'",
        ),
        (
            lambda: train(MLP([2, 2]), X4, Y4, class_weight={5: 1.0}),
            "mlp: class_weight needs classes in [0, 2)",
        ),
        (
            lambda: train(MLP([2, 1], output="linear"), X4, Y4, class_weight="balanced"),
            "mlp: class_weight needs a softmax output, found 'linear'",
        ),
        (
            lambda: train(MLP([2, 1], output="linear"), X4, [0, 1, np.nan, 2]),
            "mlp: targets of X have NaN or inf values",
        ),
        (
            lambda: MLP([2, 2]).loss_and_grads(X4, np.zeros((4, 3))),
            "mlp: expected Y of shape (4, 2), found (4, 3)",
        ),
        (
            lambda: MLP([2, 2]).loss_and_grads(X4, np.zeros((4, 2)), sample_weight=[1, 2]),
            "mlp: expected sample_weight of 4 finite values >= 0",
        ),
    ],
)
def test_bad_arguments(call, message):
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_raises():
    X, y = xor_data(40, seed=0)
    with pytest.raises(ValueError, match="^mlp: training diverged at epoch"):
        train(MLP([2, 8, 2], output="softmax"), X * 1e6, y, optimizer="sgd", lr=1e6)
