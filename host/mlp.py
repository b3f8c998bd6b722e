"""Float multilayer perceptron: forward propagation, backpropagation, mini-batch training.

Runs on: host (NumPy only).

Each neuron j of a layer weighs its inputs, adds them up with a bias, and passes the sum
through an activation:

    z_j = sum_i w[j][i] * x_i + b_j,    a_j = act(z_j)

so a layer's weights are a (n_out, n_in) matrix, as in the board's dense layer. Function
signals flow forward layer by layer; error signals flow backward:

    delta_L = (a_L - y) * weight / sum(weights)            output layer (see below)
    delta_l = (delta_{l+1} @ W_{l+1}) * act'(a_l)           hidden layers
    dW_l = delta_l^T a_{l-1} + l2 * W_l,    db_l = sum over samples of delta_l

The output layer is either softmax with cross-entropy loss (classification) or linear with
mean squared error (regression); both pairs give the same simple output error `a - y` (divided by
the number of outputs for MSE). The loss of a batch is the weighted mean of the per-sample losses
plus `l2 / 2 * sum(W**2)` over the weights (not the biases).

`forward_pass` and `backward_pass` are the host's one float forward and one float backward:
the trainer here, quantization-aware fine-tuning (host/quantize.py, through the `fake_quant`
hook) and the float baseline of on-board learning (host/trainref.py) all run them.
"""

import json
import os
import time
import zipfile
import zlib

import numpy as np

from . import outputs
from .errors import UserError
from .optim import OPTIMIZERS

HIDDEN_ACTIVATIONS = ("relu", "sigmoid", "tanh")
OUTPUTS = ("softmax", "linear")
_EPS = np.finfo(np.float64).eps  # log(p) is clipped at log(eps)
_FORMAT = "microprop float mlp"
_VERSION = 1


# --- activations and their derivatives (written in terms of the output a = act(z)) ---


def relu(z):
    return np.maximum(z, 0.0)


def sigmoid(z):
    # Stable for any z: exp only ever sees -|z|.
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def tanh(z):
    return np.tanh(z)


def identity(z):
    return z


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))  # subtract the max: exp never overflows
    return e / e.sum(axis=-1, keepdims=True)


ACTIVATIONS = {
    "relu": relu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "linear": identity,
    "softmax": softmax,
}

DERIVATIVES = {
    "relu": lambda a: (a > 0).astype(a.dtype),
    "sigmoid": lambda a: a * (1.0 - a),
    "tanh": lambda a: 1.0 - a * a,
    "linear": np.ones_like,
}


# --- losses: per-sample loss of outputs `a` against targets `y`, shape (n,) ---


def cross_entropy(y, a):
    return -(y * np.log(np.clip(a, _EPS, 1.0))).sum(axis=1)


def squared_error(y, a):
    return 0.5 * ((a - y) ** 2).mean(axis=1)


LOSSES = {"cross_entropy": cross_entropy, "mse": squared_error}
OUTPUT_LOSS = {"softmax": "cross_entropy", "linear": "mse"}


def output_error(a, Y, loss, weight=1.0):
    """delta_L, the loss's gradient at the output layer's z, per sample: a - y for softmax with
    cross-entropy and for linear with MSE (which also divides by the number of outputs, as its
    loss is their mean), times each sample's `weight` in the loss ((n, 1) or a number)."""
    delta = (a - Y) * weight
    if loss == "mse":
        delta /= Y.shape[-1]
    return delta


# --- the float forward and backward pass ---
#
# Shapes: x and every a (n, n_in), W (n_out, n_in), b (n_out,). Leading axes, when present,
# stack copies of the network (host/trainref.py trains one copy per learning rate at once):
# x (c, n, n_in), W (c, n_out, n_in), b (c, 1, n_out). `_T` transposes the last two axes, so
# that for one network `x @ _T(W)` is `x @ W.T`.


def _T(m):
    return m.swapaxes(-1, -2)


def forward_pass(W, b, acts, x, fake_quant=None, logits=False):
    """Function signals of every layer, [x, a_1, ..., a_L]: a_k = act_k(a_{k-1} @ W_k.T + b_k).

    logits: stop before the output layer's activation (a_L is then its z: softmax logits).
    fake_quant: None, or quantization-aware training's hook (host/quantize.FakeQuant), with W
    and b its rounded weights: `pre_activation(k, z)` puts layer k's z on its int8 grid (and
    keeps the straight-through mask for `backward_pass`), `output(k, a)` its output.
    """
    a = [x]
    for k, act in enumerate(acts):
        z = a[k] @ _T(W[k]) + b[k]
        if fake_quant is not None:
            z = fake_quant.pre_activation(k, z)
        if logits and k == len(acts) - 1:
            a.append(z)
            break
        a_k = ACTIVATIONS[act](z)
        if fake_quant is not None:
            a_k = fake_quant.output(k, a_k)
        a.append(a_k)
    return a


def backward_pass(W, acts, a, delta, masks=None, lowest=0):
    """Backpropagation: from delta, the error signal at the output layer's z (n, n_out), and
    a = forward_pass(...), the gradients (dW, db) of every layer from `lowest` up, summed over
    the samples (None below `lowest`: the error signal stops there).

    Credit flows down through the weights and the derivative of the activation below, as the
    module docstring writes (here layers count from 0 and a[k] is layer k's input). masks: fake
    quantization's straight-through estimator (the rounding passes gradients as if it were not
    there, but a pre-activation clamped at -128 or 127 passes none): layer k's error signal is
    multiplied by masks[k].
    """
    n = len(W)
    dW, db = [None] * n, [None] * n
    for k in reversed(range(lowest, n)):
        if masks is not None:
            delta = delta * masks[k]
        dW[k] = _T(delta) @ a[k]
        db[k] = delta.sum(axis=-2)
        if k > lowest:
            delta = (delta @ W[k]) * DERIVATIVES[acts[k - 1]](a[k])
    return dW, db


def _one_of(kind, name, choices):
    if name not in choices:
        raise ValueError(
            "mlp: unknown %s %r, expected one of %s" % (kind, name, ", ".join(choices))
        )


class MLP:
    """A multilayer perceptron with float64 weights.

    sizes: [n_in, h1, ..., n_out]; hidden_activation: one of HIDDEN_ACTIVATIONS for every hidden
    layer; output: "softmax" (cross-entropy loss) or "linear" (mean squared error).
    Weights start Glorot-uniform for sigmoid, tanh and the output layer, He-normal for relu
    layers; biases start at 0; `seed` seeds the generator.
    """

    def __init__(self, sizes, hidden_activation="relu", output="softmax", seed=0):
        sizes = list(sizes)
        if len(sizes) < 2:
            raise ValueError(
                "mlp: sizes need at least 2 entries [n_in, ..., n_out], found %r" % (sizes,)
            )
        if not all(isinstance(n, (int, np.integer)) and n > 0 for n in sizes):
            raise ValueError("mlp: sizes must be positive integers, found %r" % (sizes,))
        _one_of("activation", hidden_activation, HIDDEN_ACTIVATIONS)
        _one_of("output", output, OUTPUTS)
        if output == "softmax" and sizes[-1] < 2:
            raise ValueError("mlp: a softmax output needs at least 2 units, found %d" % sizes[-1])
        self.sizes = [int(n) for n in sizes]
        self.hidden_activation, self.output = hidden_activation, output
        self.activations = [hidden_activation] * (len(sizes) - 2) + [output]
        self.loss = OUTPUT_LOSS[output]
        rng = np.random.default_rng(seed)
        self.W, self.b = [], []
        for nin, nout, act in zip(self.sizes[:-1], self.sizes[1:], self.activations, strict=True):
            if act == "relu":  # He: keeps the variance of z through ReLU layers
                w = rng.normal(0.0, np.sqrt(2.0 / nin), size=(nout, nin))
            else:  # Glorot
                limit = np.sqrt(6.0 / (nin + nout))
                w = rng.uniform(-limit, limit, size=(nout, nin))
            self.W.append(w)
            self.b.append(np.zeros(nout))

    def __repr__(self):
        return "MLP(%r, hidden_activation=%r, output=%r)" % (
            self.sizes,
            self.hidden_activation,
            self.output,
        )

    @classmethod
    def from_weights(cls, W, b, activations):
        """An MLP holding float64 copies of the weights W (n_out, n_in) and biases b (n_out,)
        of each layer; activations: one name per layer, the hidden layers' all the same."""
        acts = list(activations)
        if not acts or len(W) != len(acts) or len(b) != len(acts):
            raise ValueError(
                "mlp: expected one weight matrix, bias vector and activation per layer, found "
                "%d, %d and %d" % (len(W), len(b), len(acts))
            )
        if len(set(acts[:-1])) > 1:
            raise ValueError("mlp: hidden layers must share one activation, found %s" % acts)
        W = [np.array(w, dtype=np.float64) for w in W]
        b = [np.array(v, dtype=np.float64) for v in b]
        sizes = [W[0].shape[1]] + [w.shape[0] for w in W]
        for k, (w, v) in enumerate(zip(W, b, strict=True)):
            if w.shape != (sizes[k + 1], sizes[k]) or v.shape != (sizes[k + 1],):
                raise ValueError(
                    "mlp: layer %d has W %s and b %s, expected %s and %s"
                    % (k, w.shape, v.shape, (sizes[k + 1], sizes[k]), (sizes[k + 1],))
                )
        mlp = cls(sizes, acts[0] if len(acts) > 1 else HIDDEN_ACTIVATIONS[0], acts[-1])
        mlp.W, mlp.b = W, b
        return mlp

    # --- forward ---

    def check_X(self, X):
        """X as float64 (n, n_in), or ValueError saying the shape expected and found."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.sizes[0]:
            raise ValueError(
                "mlp: expected X of shape (n, %d), found %s" % (self.sizes[0], X.shape)
            )
        return X

    def logits(self, X):
        """Inputs (n, n_in) -> the output layer's z (n, n_out), before softmax."""
        return forward_pass(self.W, self.b, self.activations, self.check_X(X), logits=True)[-1]

    def forward(self, X):
        """Inputs (n, n_in) -> outputs (n, n_out): probabilities (softmax) or values (linear)."""
        return forward_pass(self.W, self.b, self.activations, self.check_X(X))[-1]

    def predict(self, X):
        """Class indices (n,) by argmax of the logits, ties to the lower index (softmax);
        the outputs for a linear model, shape (n,) when it has a single output."""
        if self.output == "linear":
            a = self.forward(X)
            return a[:, 0] if a.shape[1] == 1 else a
        return np.argmax(self.logits(X), axis=1)

    # --- loss and backpropagation ---

    def check_targets(self, Y, n):
        """Y as float64 (n, n_out) (a linear model with one output also takes (n,)), or
        ValueError saying the shape expected and found."""
        Y = np.asarray(Y, dtype=np.float64)
        if Y.ndim == 1 and self.sizes[-1] == 1:
            Y = Y[:, None]
        if Y.shape != (n, self.sizes[-1]):
            raise ValueError(
                "mlp: expected Y of shape (%d, %d), found %s" % (n, self.sizes[-1], Y.shape)
            )
        return Y

    def loss_value(self, X, Y, sample_weight=None, l2=0.0):
        """Weighted mean loss of outputs against Y (one-hot or targets), plus the L2 term."""
        X = self.check_X(X)
        Y = self.check_targets(Y, len(X))
        w = _check_sample_weight(sample_weight, len(X))
        return w @ LOSSES[self.loss](Y, self.forward(X)) + _penalty(self, l2)

    def loss_and_grads(self, X, Y, sample_weight=None, l2=0.0, fake_quant=None):
        """Loss and its gradients (dW list, db list) by backpropagation of error signals.

        Y: one-hot rows (softmax) or targets (linear, (n,) allowed for one output).
        fake_quant: quantization-aware training's hook (see forward_pass): the forward runs on
        the rounded weights and values, the gradients are the float weights' (straight-through).
        """
        X = self.check_X(X)
        Y = self.check_targets(Y, len(X))
        w = _check_sample_weight(sample_weight, len(X))
        return _loss_and_grads(self, X, Y, w, l2, fake_quant)

    # --- files ---

    def architecture(self):
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "sizes": self.sizes,
            "hidden_activation": self.hidden_activation,
            "output": self.output,
        }

    def save(self, path, meta=None):
        """Write an .npz file (W0, b0, W1, b1, ..., meta and architecture as JSON text in uint8
        arrays; no pickle). It goes to a temporary file first, then replaces `path` at once."""
        path = os.fspath(path)
        try:
            meta_text = json.dumps({} if meta is None else meta)
        except (TypeError, ValueError) as e:
            raise ValueError("float model: meta is not JSON-serialisable: %s" % e) from None
        arrays = {
            "architecture": _text_array(json.dumps(self.architecture())),
            "meta": _text_array(meta_text),
        }
        for k, (W, b) in enumerate(zip(self.W, self.b, strict=True)):
            arrays["W%d" % k], arrays["b%d" % k] = W, b
        with outputs.replacing(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)

    @classmethod
    def load(cls, path):
        """Read a file written by `save`; returns (mlp, meta).

        A missing, unreadable or malformed file raises UserError("float model: <path>: ...").
        """
        path = os.fspath(path)
        if not os.path.exists(path):
            raise UserError("float model: %s: no such file" % path)
        try:
            with open(path, "rb") as f:
                magic = f.read(4)
            if magic != b"PK\x03\x04":  # every .npz is a zip archive
                raise _LoadError(
                    "not an .npz file, starts with %r, expected b'PK\\x03\\x04'" % magic
                )
            with np.load(path, allow_pickle=False) as npz:
                return cls._from_npz(npz)
        except _LoadError as e:
            raise UserError("float model: %s: %s" % (path, e)) from None
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise UserError(
                "float model: %s: not a readable .npz file (%s)" % (path, reason)
            ) from None

    @classmethod
    def _from_npz(cls, npz):
        for key in ("architecture", "meta"):
            if key not in npz.files:
                raise _LoadError("missing %r" % key)
        arch, meta = _text_json(npz["architecture"]), _text_json(npz["meta"])
        if not isinstance(arch, dict) or arch.get("format") != _FORMAT:
            raise _LoadError("not a %s file" % _FORMAT)
        if arch.get("version") != _VERSION:
            raise _LoadError("version %r, expected %d" % (arch.get("version"), _VERSION))
        if not isinstance(meta, dict):
            raise _LoadError("meta is %s, expected a JSON object" % type(meta).__name__)
        sizes = arch.get("sizes")
        if not isinstance(sizes, list) or len(sizes) < 2 or not all(type(n) is int for n in sizes):
            raise _LoadError("bad sizes %r, expected a list of at least 2 integers" % (sizes,))
        # Read and check the arrays before building the model: no allocation sized by an
        # unchecked field (the arrays' own size is bounded by the file's).
        arrays = []
        for k, (nin, nout) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            for name, shape in (("W%d" % k, (nout, nin)), ("b%d" % k, (nout,))):
                if name not in npz.files:
                    raise _LoadError("missing %r" % name)
                x = npz[name]
                if x.shape != shape or x.dtype != np.float64:
                    raise _LoadError(
                        "%s is %s %s, expected float64 %s" % (name, x.dtype, x.shape, shape)
                    )
                if not np.all(np.isfinite(x)):
                    raise _LoadError("%s has NaN or inf values" % name)
                arrays.append(x)
        try:
            mlp = cls(sizes, arch.get("hidden_activation"), arch.get("output"))
        except ValueError as e:
            raise _LoadError("bad architecture (%s)" % e) from None
        mlp.W, mlp.b = arrays[0::2], arrays[1::2]
        return mlp, meta


def _check_sample_weight(sample_weight, n):
    """Per-sample weights normalised to sum to 1 (uniform when None); ValueError unless n
    finite values >= 0."""
    if sample_weight is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(
            "mlp: expected sample_weight of %d finite values >= 0, found shape %s" % (n, w.shape)
        )
    return _normalised(w)


def _normalised(w):
    total = w.sum()
    return w / total if total > 0 else w


def _penalty(mlp, l2):
    """The L2 term of the loss: l2 / 2 * sum(W**2) over the weights."""
    return 0.5 * l2 * sum((W * W).sum() for W in mlp.W)


def _loss_and_grads(mlp, X, Y, w, l2, fake_quant):
    """MLP.loss_and_grads on checked arrays, w: the sample weights normalised to sum to 1."""
    W, b, masks = mlp.W, mlp.b, None
    if fake_quant is not None:
        W, b = fake_quant.weights(mlp.W, mlp.b)
    a = forward_pass(W, b, mlp.activations, X, fake_quant)
    if fake_quant is not None:
        masks = fake_quant.masks
    loss = w @ LOSSES[mlp.loss](Y, a[-1]) + _penalty(mlp, l2)
    delta = output_error(a[-1], Y, mlp.loss, w[:, None])
    dW, db = backward_pass(W, mlp.activations, a, delta, masks)
    for k in range(len(dW)):
        dW[k] += l2 * mlp.W[k]  # the L2 term's gradient: weights only
    return loss, dW, db


class _LoadError(Exception):
    """A file that reads but is not a valid float model (turned into ValueError by `load`)."""


def _text_array(text):
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _text_json(x):
    if x.dtype != np.uint8 or x.ndim != 1:
        raise _LoadError("JSON field is %s %s, expected uint8 text" % (x.dtype, x.shape))
    try:
        return json.loads(x.tobytes().decode("utf-8"))
    except ValueError as e:  # includes UnicodeDecodeError and JSONDecodeError
        raise _LoadError("bad JSON text (%s)" % e) from None


# --- training ---


def _check_data(mlp, X, y, what="X"):
    """Validate inputs and labels; returns X float64 and y (int classes or float targets)."""
    X = mlp.check_X(X)
    if len(X) == 0:
        raise ValueError("mlp: %s has no rows" % what)
    if not np.all(np.isfinite(X)):
        raise ValueError("mlp: %s has NaN or inf values" % what)
    y = np.asarray(y)
    if len(y) != len(X):
        raise ValueError("mlp: %s has %d rows but its labels have %d" % (what, len(X), len(y)))
    if mlp.output == "linear":
        y = mlp.check_targets(y, len(X))
        if not np.all(np.isfinite(y)):
            raise ValueError("mlp: targets of %s have NaN or inf values" % what)
        return X, y
    n_out = mlp.sizes[-1]
    if y.ndim != 1 or y.dtype.kind not in "iuf" or np.any(y != np.floor(y)):
        raise ValueError(
            "mlp: expected integer class indices (n,), found %s %s" % (y.dtype, y.shape)
        )
    if len(y) and (y.min() < 0 or y.max() >= n_out):
        raise ValueError(
            "mlp: class indices must be in [0, %d), found %d..%d" % (n_out, y.min(), y.max())
        )
    return X, y.astype(np.int64)


def split_validation(y, val_fraction, rng, stratify=True):
    """Indices (train, val): `val_fraction` of the samples of each class (rounded to nearest,
    at least one left for training), drawn with `rng`; plain random when not `stratify`."""
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if stratify else [np.arange(len(y))]
    val = []
    for idx in groups:
        k = min(int(np.floor(val_fraction * len(idx) + 0.5)), len(idx) - 1)
        val.append(rng.permutation(idx)[:k])
    val = np.sort(np.concatenate(val)).astype(np.int64)
    return np.setdiff1d(np.arange(len(y)), val), val


def _class_weights(class_weight, y, n_classes):
    """Weight per class index: None -> 1, "balanced" -> n / (n_present_classes * count)."""
    if class_weight is None:
        return np.ones(n_classes)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ValueError("mlp: unknown class_weight %r, expected 'balanced'" % class_weight)
        count = np.bincount(y, minlength=n_classes).astype(np.float64)
        present = count > 0
        return np.where(present, len(y) / (present.sum() * np.maximum(count, 1)), 1.0)
    if not isinstance(class_weight, dict):
        raise ValueError(
            "mlp: class_weight must be None, 'balanced' or a dict, found %s"
            % type(class_weight).__name__
        )
    cw = np.ones(n_classes)
    for c, wc in class_weight.items():
        ok = isinstance(c, (int, np.integer)) and 0 <= c < n_classes
        if not ok or not isinstance(wc, (int, float, np.number)) or not wc >= 0 or wc == np.inf:
            raise ValueError(
                "mlp: class_weight needs classes in [0, %d) and weights >= 0, found %r: %r"
                % (n_classes, c, wc)
            )
        cw[int(c)] = wc
    return cw


def _check_train_args(
    mlp, optimizer, lr, momentum, batch_size, epochs, l2, val_fraction, patience, class_weight
):
    _one_of("optimizer", optimizer, tuple(OPTIMIZERS))
    checks = [
        ("lr", lr, lr > 0, "> 0"),
        ("momentum", momentum, 0 <= momentum < 1, "in [0, 1)"),
        ("batch_size", batch_size, batch_size >= 1, ">= 1"),
        ("epochs", epochs, epochs >= 1, ">= 1"),
        ("l2", l2, l2 >= 0, ">= 0"),
        ("val_fraction", val_fraction, 0 <= val_fraction < 1, "in [0, 1)"),
        ("patience", patience, patience >= 1, ">= 1"),
    ]
    for name, value, ok, expected in checks:
        if not ok:
            raise ValueError("mlp: %s must be %s, found %r" % (name, expected, value))
    if mlp.output == "linear" and class_weight is not None:
        raise ValueError("mlp: class_weight needs a softmax output, found 'linear'")


def train(
    mlp,
    X,
    y,
    *,
    optimizer="adam",
    lr=1e-3,
    momentum=0.9,
    batch_size=32,
    epochs=200,
    l2=1e-4,
    val_fraction=0.1,
    X_val=None,
    y_val=None,
    patience=20,
    class_weight=None,
    seed=0,
    progress=None,
    fake_quant=None,
):
    """Train `mlp` in place with shuffled mini-batches; returns the history.

    y: class indices (softmax) or float targets (linear). optimizer: "sgd" (momentum),
    "nesterov" or "adam" (`momentum` is for SGD only). l2 penalises weights, not biases.
    Early stopping watches the validation loss (without the L2 term): X_val/y_val if given,
    else a stratified `val_fraction` split of X drawn with `seed` (0 disables validation and
    early stopping). Training stops after `patience` epochs without a strictly lower validation
    loss and restores the best weights (ties keep the earlier). class_weight: None, "balanced"
    or {class_index: weight}, applied as per-sample weights in the training and validation loss.
    progress(epoch, epochs, train_loss, val_loss, val_acc, seconds_left) is called after each
    epoch, with `epoch` counted from 0 and val_loss, val_acc None without a validation set (val_acc
    NaN for a linear output). Same arguments and seed give bit-identical weights.
    fake_quant: quantization-aware training's hook (host/quantize.FakeQuant, see forward_pass)
    for the training batches; validation, if any, runs the float network.

    History: "loss", "val_loss", "val_acc" (float lists, one entry per epoch; NaN where there is
    no validation set or no accuracy), "best_epoch" (index into those lists, from 0; the last
    epoch without validation), "epochs_run", "seconds".
    """
    _check_train_args(
        mlp, optimizer, lr, momentum, batch_size, epochs, l2, val_fraction, patience, class_weight
    )
    X, y = _check_data(mlp, X, y)
    classify = mlp.output == "softmax"
    if classify and len(np.unique(y)) < 2:
        raise ValueError("mlp: need at least 2 classes in y, found %d" % len(np.unique(y)))
    rng = np.random.default_rng(seed)
    if (X_val is None) != (y_val is None):
        raise ValueError("mlp: give both X_val and y_val, or neither")
    if X_val is not None:
        X_val, y_val = _check_data(mlp, X_val, y_val, "X_val")
    elif val_fraction > 0:
        tr, va = split_validation(y if classify else np.zeros(len(X)), val_fraction, rng, classify)
        if len(va):
            X, y, X_val, y_val = X[tr], y[tr], X[va], y[va]

    n_out = mlp.sizes[-1]
    if classify:
        cw = _class_weights(class_weight, y, n_out)
        Y, sw = np.eye(n_out)[y], cw[y]
    else:
        Y, sw = y, None
    if X_val is not None:
        Y_val = np.eye(n_out)[y_val] if classify else y_val
        sw_val = cw[y_val] if classify else None

    params = mlp.W + mlp.b
    opt = OPTIMIZERS[optimizer](params, lr, momentum)
    history = {"loss": [], "val_loss": [], "val_acc": []}
    best_loss, best_epoch, best_params, wait = np.inf, 0, None, 0
    n, start = len(X), time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(n)
        total = 0.0
        for i in range(0, n, batch_size):
            idx = order[i : i + batch_size]
            w = np.full(len(idx), 1.0 / len(idx)) if sw is None else _normalised(sw[idx])
            loss, dW, db = _loss_and_grads(mlp, X[idx], Y[idx], w, l2, fake_quant)
            opt.step(dW + db)
            total += loss * len(idx)
        train_loss = total / n
        if not np.isfinite(train_loss):
            raise ValueError(
                "mlp: training diverged at epoch %d (loss %s), try a smaller lr"
                % (epoch + 1, train_loss)
            )

        val_loss = val_acc = np.nan
        if X_val is not None:
            val_loss = float(mlp.loss_value(X_val, Y_val, sw_val))
            if classify:
                val_acc = float(np.mean(mlp.predict(X_val) == y_val))
        history["loss"].append(float(train_loss))
        history["val_loss"].append(val_loss)
        history["val_acc"].append(val_acc)

        if X_val is None or val_loss < best_loss:
            best_loss, best_epoch, wait = val_loss, epoch, 0
            if X_val is not None:
                best_params = [p.copy() for p in params]
        else:
            wait += 1
        if progress is not None:
            seconds_left = (time.perf_counter() - start) / (epoch + 1) * (epochs - epoch - 1)
            if X_val is None:
                progress(epoch, epochs, float(train_loss), None, None, seconds_left)
            else:
                progress(epoch, epochs, float(train_loss), val_loss, val_acc, seconds_left)
        if wait >= patience:
            break

    if best_params is not None:
        for p, best in zip(params, best_params, strict=True):
            p[...] = best
    history.update(
        best_epoch=best_epoch, epochs_run=epoch + 1, seconds=time.perf_counter() - start
    )
    return history
